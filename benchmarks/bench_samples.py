"""Generated-cell quality: what the sampler, the noise schedule and the loss weighting change.

Trains ``mini-tiny`` once per training variant on the same store, cells and seed, then samples
every trained model with every sampler variant, and compares the generated cells with real
held-out cells beside the baselines (the real-vs-real floor, gene-shuffled real cells, the
per-gene marginal sampler): unbiased MMD in PCA space, a kNN classifier's AUC, per-gene mean and
variance correlations, fraction of zeros, and the gene-gene correlation error.

    python benchmarks/bench_samples.py --store data/demo/store.zarr --steps 800
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import WORK, md_table, write_results  # noqa: E402

TRAINING = {  # name -> TrainConfig overrides
    "cosine (default)": {},
    "seed schedule (10 steps, mask <= 0.3)": {"diffusion": {"schedule": "seed", "timesteps": 10, "max_mask": 0.3}},
    "linear + ELBO weighting": {"diffusion": {"schedule": "linear", "elbo_weighting": True}},
}
SAMPLERS = {  # name -> SampleConfig fields
    "random order, 64 steps (default)": {"steps": 64, "order": "random"},
    "random order, 10 steps": {"steps": 10, "order": "random"},
    "most confident first, 10 steps (old default)": {"steps": 10, "order": "confidence"},
    "random order, 64 steps, temperature 0.8": {"steps": 64, "order": "random", "temperature": 0.8},
}
KEYS = ("mmd", "auc", "zero_fraction", "mean_corr", "var_corr", "gene_corr_error")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", default="data/demo/store.zarr")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--training", nargs="*", default=list(TRAINING), help="training variants to run")
    p.add_argument("--samplers", nargs="*", default=list(SAMPLERS), help="sampler variants to evaluate")
    p.add_argument("--results", default="bench_samples", help="name of the results files")
    a = p.parse_args()
    import torch

    from scmodel.diffusion import DiffusionConfig
    from scmodel.evaluate import SampleConfig
    from scmodel.train import CONFIGS, Trainer

    rows = []
    for train_name in a.training:
        overrides = dict(TRAINING[train_name])
        if "diffusion" in overrides:
            overrides["diffusion"] = DiffusionConfig(**overrides["diffusion"])
        out = os.path.join(WORK, a.results, train_name.split(" ")[0])
        cfg = dataclasses.replace(CONFIGS["mini-tiny"], store=a.store, out=out, max_steps=a.steps,
                                  eval_every=10**9, save_every=10**9, sample_steps=2, **overrides)
        trainer = Trainer(cfg, echo=lambda *_: None)
        start = time.perf_counter()
        trainer.fit()  # its final evaluation samples with the run's default sampler
        train_s = time.perf_counter() - start
        for sampler_name in a.samplers:
            fields = SAMPLERS[sampler_name]
            start = time.perf_counter()
            result = trainer.evaluate(sampling=SampleConfig(**fields))
            result.pop("_cells", None)
            row = {"training": train_name, "sampler": sampler_name, "train_steps": a.steps, "train_s": train_s,
                   "eval_s": time.perf_counter() - start, "sample": dataclasses.asdict(SampleConfig(**fields)),
                   **{k: v for k, v in result.items() if not k.startswith("_") and k != "by_mask_ratio"}}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("training", "sampler", "mmd_samples", "mmd_gene_shuffled", "mmd_real",
                                                  "auc_samples", "auc_gene_shuffled")}), flush=True)
        write(rows, a, torch.get_num_threads())  # after each variant, so a long run leaves results as it goes


def write(rows: list[dict], a, threads: int) -> None:
    first = rows[0]
    table = (f"### Generated cells vs real held-out cells (mini-tiny, {a.steps} steps, {first['n_sample_cells']} cells "
             f"per set, store `{a.store}`)\n\n")
    table += "Baselines (the same cells in every row): " + ", ".join(
        f"{name} MMD {first[f'mmd_{name}']:.4f} / AUC {first[f'auc_{name}']:.3f}"
        for name in ("real", "gene_shuffled", "marginal")) + f"; real zero fraction {first['zero_fraction_reference']:.3f}.\n\n"
    table += md_table(
        ["training", "sampler", "MMD", "MMD / gene-shuffled", "AUC", "zeros", "mean corr", "var corr", "gene-corr error",
         "masked acc."],
        [[r["training"], r["sampler"], f"{r['mmd_samples']:.4f}", f"{r['mmd_samples'] / r['mmd_gene_shuffled']:.2f}",
          f"{r['auc_samples']:.3f}", f"{r['zero_fraction_samples']:.3f}", f"{r['mean_corr_samples']:.3f}",
          f"{r['var_corr_samples']:.3f}", f"{r['gene_corr_error_samples']:.3f}", f"{r['masked_accuracy']:.3f}"]
         for r in rows])
    write_results(a.results, {"results": rows, "load_average": os.getloadavg(), "threads": threads}, table)


if __name__ == "__main__":
    main()
