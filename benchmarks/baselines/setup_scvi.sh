#!/usr/bin/env bash
# Install scvi-tools 1.4.2 into its own virtual environment, benchmarks/.work/scvi-venv
# (git-ignored), as a benchmark peer for generation (benchmarks/baselines/scvi_peer.py drives it).
# Idempotent: re-running is a no-op once `scvi` imports with the pinned versions.
#
#   bash benchmarks/baselines/setup_scvi.sh          # a few minutes the first time
#   benchmarks/.work/scvi-venv/bin/python -c "import scvi; print(scvi.__version__)"
#
# Its own venv, not the main one: scvi-tools pins its own jax / lightning / anndata ranges, and the
# peer should run the versions scvi-tools is released against, not whatever our stack resolved.
# torch is installed FIRST and pinned to 2.13.0: the machine's pip config points find-links at
# a CPU wheel on disk (torch-2.13.0+cpu); a plain `torch` resolved by scvi-tools would pull the
# multi-GB CUDA build with its nvidia-* wheels. Nothing here downloads model weights or data.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${SCVI_VENV:-$ROOT/benchmarks/.work/scvi-venv}"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"
SCVI_VERSION="1.4.2"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup_scvi: $PY not found (scvi-tools $SCVI_VERSION needs Python >=3.11)" >&2
    exit 1
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$TORCH_VERSION" "$SCVI_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import torch  # noqa: F401
assert version("torch").split("+")[0] == sys.argv[1]
assert version("scvi-tools") == sys.argv[2]
import anndata, h5py, scipy, scvi  # noqa: F401,E401
EOF
then
    echo "setup_scvi: $VENV already has torch $TORCH_VERSION and scvi-tools $SCVI_VERSION"
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/peer_venv.sh"
peer_venv_install "$VENV" "$PY" "$TORCH_VERSION" "scvi-tools==${SCVI_VERSION}" anndata h5py scipy

"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
import torch
print("setup_scvi: torch", torch.__version__, "cuda:", torch.version.cuda,
      "| scvi-tools", version("scvi-tools"), "| lightning", version("lightning"),
      "| anndata", version("anndata"), "| numpy", version("numpy"))
EOF
echo "setup_scvi: done -> $VENV/bin/python"
