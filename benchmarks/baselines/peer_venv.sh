# Shared by the peers' set-up scripts (sourced, not run): a virtual environment with torch pinned
# to the project's CPU build, then the peer's packages resolved around that torch.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/peer_venv.sh"
#   peer_venv_install "$VENV" "$PY" "$TORCH_VERSION" "arc-state==0.11.1" ...
#
# torch is installed FIRST: the machine's pip config points find-links at a CPU wheel on disk
# (torch-2.13.0+cpu); a plain `torch` resolved by a peer would pull the multi-GB CUDA build with
# its nvidia-* wheels. The constraint file then keeps torch where it is while the peer resolves.

peer_venv_install() {
    local venv="$1" py="$2" torch_version="$3"
    shift 3
    mkdir -p "$(dirname "$venv")"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    "${pip[@]}" install -q --upgrade pip

    # Prefer the CPU wheel on disk when it is there; otherwise pip resolves torch from the
    # configured find-links / indexes.
    local wheel
    wheel="$(ls /opt/wheels/torch-${torch_version}+cpu-cp311-*.whl 2>/dev/null | head -n1 || true)"
    if [ -n "$wheel" ]; then
        "${pip[@]}" install "$wheel"
    else
        "${pip[@]}" install "torch==${torch_version}"
    fi

    local constraints
    constraints="$(mktemp)"
    "$venv/bin/python" -c "from importlib.metadata import version; print('torch==' + version('torch'))" >"$constraints"
    "${pip[@]}" install -c "$constraints" "$@"
    local rc=$?
    rm -f "$constraints"
    return $rc
}
