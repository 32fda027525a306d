"""The 17B MoE model's parameter count, FLOPs and per-GPU memory plan, as a results file.

    python benchmarks/plan_moe17b.py

Runs ``python -m scmodel.plan --config moe17b --gpus 8,16,64`` (meta device, no GPU) and writes
its report to ``benchmarks/results/plan_moe17b.{md,json}``, so that the figures the MoE page
quotes come from a file this script regenerates. A plan, not a measurement: no GPU run has
checked its memory figures yet (``benchmarks/bench_gpu.sh`` is where one would).
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import write_results  # noqa: E402

COMMAND = ["-m", "scmodel.plan", "--config", "moe17b", "--gpus", "8,16,64"]


def main() -> None:
    done = subprocess.run([sys.executable, *COMMAND], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    report = done.stdout.strip()
    write_results("plan_moe17b", {"command": "python " + " ".join(COMMAND), "report": report.splitlines()},
                  f"`python {' '.join(COMMAND)}`\n\n" + report)


if __name__ == "__main__":
    main()
