"""Training throughput: cells/s and tokens/s of the mini models and the tiny MoE model (DeepSpeed
engine, ZeRO-2, one process), and how much of each step is spent waiting for data (loader stall),
on this machine's CPU; then the CPU speed-up table: the gen-cpu recipe eager and under
``torch.compile``, fp32 and bf16 autocast, at two batch sizes and one thread, with achieved GFLOP/s
against the cores' matrix-product peak measured in the same run. GPU bf16 throughput and MFU need
a GPU machine.

    python benchmarks/bench_train.py                      # bench_generation's store by default
    python benchmarks/bench_train.py --only mini-tiny,moe17b-tiny   # re-measure some rows, keep the rest
    python benchmarks/bench_train.py --speedup-only       # the speed-up table only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import RESULTS, WORK, md_table, write_results  # noqa: E402


def flops_per_cell(n_params_blocks: int, positions: int, dim: int, layers: int) -> float:
    """Forward+backward FLOPs per cell: 6 x parameters x tokens plus attention (12 x L x T^2 x d)."""
    return 6 * n_params_blocks * positions + 12 * layers * positions * positions * dim


def measure(name: str, overrides: dict, store: str, steps: int, skip: int) -> dict:
    """Train ``name`` for ``steps`` steps (no evaluation) and average the logged rates after the
    first ``skip`` steps (start-up, and compilation when ``compile`` is on)."""
    import torch

    from scmodel.models import count_parameters
    from scmodel.train import CONFIGS, Trainer

    out = tempfile.mkdtemp(prefix="bench-train-")
    from dataclasses import replace

    cfg = replace(CONFIGS[name], store=store, out=out, max_steps=steps, log_every=1, eval_every=10**9,
                  save_every=10**9, programs_cells=0, **overrides)  # the atlas programs' fit is not training
    trainer = Trainer(cfg, echo=lambda *_: None)
    trainer.evaluate = lambda **_: {"_step": trainer.step, "eval_loss": 0, "baseline_loss": 0, "masked_accuracy": 0,
                                    "baseline_accuracy": 0, "pearson": 0, "mmd_pca_samples": 0, "mmd_pca_gene_shuffled": 0,
                                    "by_mask_ratio": {}}  # throughput only: evaluation is timed elsewhere
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    logs = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"eval"' not in line][skip:]
    positions = cfg.context_genes or trainer.train_loader.dataset.n_features
    m = trainer.model.cfg if hasattr(trainer.model, "cfg") else None
    backbone = getattr(m, "backbone", m)
    cells_s = sum(r["cells_per_s"] for r in logs) / len(logs)
    if hasattr(trainer.model, "backbone"):
        block_params = sum(p.numel() for p in trainer.model.backbone.blocks.parameters())
        flops = flops_per_cell(block_params, positions, backbone.dim, backbone.n_layers) * cells_s
    else:  # MoE: forward+backward FLOPs per cell counted by torch.utils.flop_counter (top-2 routed)
        from scmodel.plan import count_cost

        flops = count_cost(name, positions, cfg.n_tokens)["train_flops"] * cells_s
    trainer.close() if hasattr(trainer, "close") else None
    return {"model": name, "parameters": count_parameters(trainer.model), "positions": positions,
            "batch_size": cfg.batch_size, "cells_per_s": cells_s, "tokens_per_s": cells_s * positions,
            "data_wait_fraction": sum(r["data_wait_fraction"] for r in logs) / len(logs),
            "achieved_gflops": flops / 1e9, "device": "cpu", "threads": torch.get_num_threads(),
            "bf16": cfg.bf16 == "on", "compile": cfg.compile, "wall_s": wall, "steps": steps,
            "loadavg": os.getloadavg(), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}


def matmul_peak(dtype_name: str, n: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of one large square matrix product at this process's threads: what the cores reach
    on the most favourable kernel (oneDNN/MKL; AMX tiles for bf16 where the CPU has them)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


SPEEDUP_VARIANTS = [
    ("eager, fp32 (default)", {}),
    ("eager, bf16 autocast", {"bf16": "on"}),
    ("torch.compile, fp32", {"compile": True}),
    ("torch.compile, bf16 autocast", {"compile": True, "bf16": "on"}),
]


def speedup(store: str, steps: int, batches: list[int]) -> tuple[list[dict], dict]:
    """The gen-cpu recipe (mini-tiny's network, 256 positions, 16 bins) under each variant and batch
    size, one thread and two; and the cores' matrix-product peaks, in the same run."""
    import torch

    rows = []
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        for label, overrides in (SPEEDUP_VARIANTS if threads > 1 else SPEEDUP_VARIANTS[:1]):
            for batch in (batches if threads > 1 else batches[:1]):
                skip = 8 if overrides.get("compile") else 3
                row = measure("gen-cpu", {**overrides, "batch_size": batch}, store, steps + skip, skip)
                rows.append({**row, "variant": label})
                print({k: row[k] for k in ("cells_per_s", "achieved_gflops", "threads", "batch_size")}, label, flush=True)
    torch.set_num_threads(rows[0]["threads"])
    peaks = {f"{d}_{t}_threads": None for d in ("float32", "bfloat16") for t in (rows[0]["threads"],)}
    for d in ("float32", "bfloat16"):
        peaks[f"{d}_{rows[0]['threads']}_threads"] = matmul_peak(d)
    return rows, peaks


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", default=os.path.join(WORK, "generation", "store.zarr"),
                   help="a store with >= 2,000 materialized HVGs (bench_generation's, by default)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--only", help="comma-separated models to measure; the other rows are kept from the results file")
    p.add_argument("--speedup-only", action="store_true", help="measure the CPU speed-up table only; keep the model rows")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 128], help="batch sizes of the speed-up table")
    a = p.parse_args()

    all_runs = runs = [("mini-tiny", {"batch_size": 32}, "top 256 HVGs"),
                       ("mini", {"context_genes": 256, "batch_size": 16}, "256 of 2,000 HVGs"),
                       ("mini", {"context_genes": None, "batch_size": 4}, "all 2,000 HVGs"),
                       ("moe17b-tiny", {"batch_size": 32}, "top 256 HVGs; DeepSpeed ZeRO-2, 1 process")]
    if a.only:
        runs = [r for r in runs if r[0] in a.only.split(",")]
    path = os.path.join(RESULTS, "bench_train.json")
    previous = json.load(open(path)) if os.path.exists(path) else {}
    rows = []
    if not a.speedup_only:
        for name, overrides, note in runs:
            rows.append({**measure(name, overrides, a.store, a.steps, 3), "note": note})
            print(rows[-1], flush=True)
    if a.only or a.speedup_only:  # keep the rows not re-measured, in the script's order
        fresh = {(x["model"], x["note"]) for x in rows}
        old = previous.get("results", [])
        order = [(n, note) for n, _, note in all_runs]
        rows = sorted([r for r in old if (r["model"], r["note"]) not in fresh] + rows,
                      key=lambda r: order.index((r["model"], r["note"])) if (r["model"], r["note"]) in order else 99)
    table = "### Training throughput (CPU, this machine)\n\n" + md_table(
        ["model", "parameters", "positions", "batch", "cells/s", "tokens/s", "loader stall", "GFLOP/s", "note", "measured",
         "load avg"],
        [[r["model"], f"{r['parameters']:,}", r["positions"], r["batch_size"], f"{r['cells_per_s']:.1f}",
          f"{r['tokens_per_s']:,.0f}", f"{r['data_wait_fraction']:.1%}", f"{r['achieved_gflops']:.1f}", r["note"],
          r.get("measured", "2026-11-22"), f"{r['loadavg'][0]:.1f}" if "loadavg" in r else "n/a"] for r in rows])
    table += ("\n\nRows measured at different times are not comparable in absolute terms on this shared machine "
              "(load average per row in the JSON); rows measured in one run are. bf16 throughput and MFU on a GPU "
              "were not measured: no GPU machine was available to this run.")
    if a.only and previous.get("speedup"):  # model rows re-measured: the speed-up table is kept
        speed_rows, peaks = previous["speedup"], previous["matmul_peak_gflops"]
    else:
        speed_rows, peaks = speedup(a.store, a.steps, a.batches)
    base = speed_rows[0]["cells_per_s"]
    peak32, peak16 = peaks[f"float32_{speed_rows[0]['threads']}_threads"], peaks[f"bfloat16_{speed_rows[0]['threads']}_threads"]
    table += ("\n\n### CPU speed-up: the gen-cpu recipe (mini-tiny's network, 256 positions, 16 bins)\n\n" + md_table(
        ["variant", "threads", "batch", "cells/s", "speed-up", "GFLOP/s", "of the matrix-product peak", "loader stall"],
        [[r["variant"], r["threads"], r["batch_size"], f"{r['cells_per_s']:.1f}", f"{r['cells_per_s'] / base:.2f}x",
          f"{r['achieved_gflops']:.1f}", f"{r['achieved_gflops'] / (peak16 if r['bf16'] else peak32):.1%}",
          f"{r['data_wait_fraction']:.1%}"] for r in speed_rows]))
    table += (f"\n\nThe matrix-product peak is measured in the same run: one 2048 x 2048 product at "
              f"{speed_rows[0]['threads']} threads reaches {peak32:.0f} GFLOP/s in fp32 and {peak16:.0f} GFLOP/s in bf16 "
              "(AMX tiles); each row is set against its own precision's peak. GFLOP/s count the transformer blocks' "
              "forward and backward (6 x parameters x positions + attention), not the embedding or the output layer. "
              f"Rows average the steps after start-up ({a.steps} steps each; compiled rows skip their compilation steps).")
    write_results("bench_train", {"results": rows, "speedup": speed_rows, "matmul_peak_gflops": peaks}, table)


if __name__ == "__main__":
    main()
