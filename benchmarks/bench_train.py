"""Training throughput: cells/s and tokens/s of the mini models and the tiny MoE model (DeepSpeed
engine, ZeRO-2, one process), and how much of each step is spent waiting for data (loader stall),
on this machine's CPU; bf16 and MFU need a GPU machine.

    python benchmarks/bench_train.py --store benchmarks/.work/loader-100000.zarr
    python benchmarks/bench_train.py --store ... --only mini-tiny,moe17b-tiny   # re-measure some rows, keep the rest
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", default=os.path.join(WORK, "loader-100000.zarr"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--only", help="comma-separated models to measure; the other rows are kept from the results file")
    a = p.parse_args()
    import torch

    from scmodel.models import count_parameters
    from scmodel.train import CONFIGS, Trainer

    all_runs = runs = [("mini-tiny", {"batch_size": 32}, "top 256 HVGs"),
                       ("mini", {"context_genes": 256, "batch_size": 16}, "256 of 2,000 HVGs"),
                       ("mini", {"context_genes": None, "batch_size": 4}, "all 2,000 HVGs"),
                       ("moe17b-tiny", {"batch_size": 32}, "top 256 HVGs; DeepSpeed ZeRO-2, 1 process")]
    if a.only:
        runs = [r for r in runs if r[0] in a.only.split(",")]
    rows = []
    for name, overrides, note in runs:
        out = tempfile.mkdtemp(prefix="bench-train-")
        from dataclasses import replace

        cfg = replace(CONFIGS[name], store=a.store, out=out, max_steps=a.steps, log_every=1, eval_every=10**9,
                      save_every=10**9, **overrides)
        trainer = Trainer(cfg, echo=lambda *_: None)
        trainer.evaluate = lambda **_: {"_step": trainer.step, "eval_loss": 0, "baseline_loss": 0, "masked_accuracy": 0,
                                    "baseline_accuracy": 0, "pearson": 0, "mmd_pca_samples": 0, "mmd_pca_gene_shuffled": 0,
                                    "by_mask_ratio": {}}  # throughput only: evaluation is timed elsewhere
        trainer.fit()
        logs = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"eval"' not in line][3:]
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
        rows.append({"model": name, "parameters": count_parameters(trainer.model), "positions": positions,
                     "batch_size": cfg.batch_size, "cells_per_s": cells_s, "tokens_per_s": cells_s * positions,
                     "data_wait_fraction": sum(r["data_wait_fraction"] for r in logs) / len(logs),
                     "achieved_gflops": flops / 1e9, "device": "cpu", "threads": torch.get_num_threads(), "note": note,
                     "loadavg": os.getloadavg(), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(rows[-1], flush=True)
    if a.only:  # keep the rows not re-measured, in the script's order
        path = os.path.join(RESULTS, "bench_train.json")
        fresh = {(x["model"], x["note"]) for x in rows}
        old = json.load(open(path))["results"] if os.path.exists(path) else []
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
    write_results("bench_train", {"results": rows}, table)


if __name__ == "__main__":
    main()
