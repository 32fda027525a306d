#!/usr/bin/env bash
# Install Arc Institute's State (arc-state 0.11.1) into its own virtual environment,
# benchmarks/.work/state-venv (git-ignored), as a benchmark peer. Idempotent: re-running
# is a no-op once `state` imports with the pinned versions.
#
#   bash benchmarks/baselines/setup_state.sh          # ~3-6 min first time, ~2.5 GB
#   benchmarks/.work/state-venv/bin/state --help
#
# torch is installed FIRST and pinned to 2.13.0: the machine's pip config points find-links at
# a CPU wheel on disk (torch-2.13.0+cpu); a plain `torch` resolved by arc-state would pull the
# multi-GB CUDA build with its nvidia-* wheels. Nothing here downloads model weights or data.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${STATE_VENV:-$ROOT/benchmarks/.work/state-venv}"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"
STATE_VERSION="0.11.1"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup_state: $PY not found (State needs Python >=3.11,<3.13)" >&2
    exit 1
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$TORCH_VERSION" "$STATE_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import torch  # noqa: F401
assert version("torch").split("+")[0] == sys.argv[1]
assert version("arc-state") == sys.argv[2]
import state  # noqa: F401
EOF
then
    echo "setup_state: $VENV already has torch $TORCH_VERSION and arc-state $STATE_VERSION"
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/peer_venv.sh"
peer_venv_install "$VENV" "$PY" "$TORCH_VERSION" "arc-state==${STATE_VERSION}"

"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
import torch
print("setup_state: torch", torch.__version__, "cuda:", torch.version.cuda,
      "| arc-state", version("arc-state"), "| cell-load", version("cell-load"))
EOF
echo "setup_state: done -> $VENV/bin/state"
