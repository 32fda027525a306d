"""Perturbation prediction benchmark: the fine-tuned conditional model against cell-eval's
cell-mean baseline and a no-model reference, all scored by cell-eval on the same held-out cells.

The synthetic challenge-layout files (``scdata vcc demo``: a CRISPRi screen of one of the demo
atlas's cell types drawn from the same gene-regulatory model, 16 perturbations with training cells
and 8 without, regulators and genes that regulate nothing, 4 batches) are imported onto the
pretraining store's axis; ``conditional-tiny`` is pretrained on that store (512 HVGs) and
fine-tuned (``finetune-tiny``) on the perturbation store. Then, on the held-out 20% of every
seen perturbation's cells:

* the model, delta mode, effect from the model's expected expression (the default);
* the model, delta mode, effect from the means of 128 generated cells per condition;
* the model, direct mode (generated cells as the prediction);
* the training-mean reference: the same delta construction with each perturbation's training
  mean instead of the model (what memorizing every seen perturbation gives; no model);
* cell-eval's cell-mean baseline (every score is against it).

And the challenge's own task, perturbations the store has no cells of (the files' validation
perturbations), scored against their true cells.

    python benchmarks/bench_perturbation.py --store data/demo/store.zarr    # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import WORK, md_table, run_checked, write_results  # noqa: E402

PY = sys.executable
PRETRAIN_STEPS = 200


def _score(directory: str, prediction: str, real: str, training: str) -> dict:
    out = os.path.join(directory, "cell_eval")
    shutil.rmtree(out, ignore_errors=True)
    m = run_checked([PY, "-m", "scmodel.evaluate", "--prediction", prediction, "--real", real, "--training", training,
                     "--out", out])
    summary = json.load(open(os.path.join(out, "cell_eval_summary.json")))
    summary["seconds"] = m.seconds
    return summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", default="data/demo/store.zarr", help="a pretraining store with HVGs (make demo)")
    p.add_argument("--finetune-steps", type=int, default=1500)
    args = p.parse_args()
    if not os.path.exists(args.store):
        raise SystemExit(f"{args.store} does not exist: run `make demo` first")
    work = os.path.join(WORK, "perturbation")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    files = os.path.join(work, "vcc_data")
    info_dir = os.path.join(work, "hvg")  # a copy of the store's hvg_info.json, which the import extends
    os.makedirs(info_dir)
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(args.store)), "hvg_info.json"), info_dir)
    store = os.path.join(work, "vcc.zarr")
    steps = {}
    steps["files"] = run_checked([PY, "-m", "scdata", "vcc", "demo", files, "--cells", "250", "350", "--controls", "1500"]).seconds
    steps["import"] = run_checked([PY, "-m", "scdata", "vcc", "import", "--input", os.path.join(files, "adata_Training.h5ad"),
                                   "--store", store, "--genes-from", args.store, "--workers", "2", "--output-dir",
                                   info_dir]).seconds
    pre, tuned = os.path.join(work, "pretrain"), os.path.join(work, "finetune")
    steps["pretrain"] = run_checked([PY, "-m", "scmodel.train", "--config", "conditional-tiny", "--set", "n_hvgs=512",
                                     "--store", args.store, "--out", pre, "--max-steps", str(PRETRAIN_STEPS),
                                     "--eval-every", str(PRETRAIN_STEPS)]).seconds
    steps["finetune"] = run_checked([PY, "-m", "scmodel.train", "--config", "finetune-tiny", "--init-from",
                                     os.path.join(pre, "checkpoint.pt"), "--store", store, "--out", tuned,
                                     "--max-steps", str(args.finetune_steps)]).seconds
    checkpoint = os.path.join(tuned, "checkpoint.pt")
    variants = [("model: delta, expected expression (default)", []),
                ("model: delta, 128 generated cells per condition", ["--effect", "sampled", "--generate", "128"]),
                ("model: direct, generated cells", ["--mode", "direct"]),
                ("training-mean reference (no model)", ["--effect", "training-mean"])]
    rows = []
    for name, options in variants:
        out = os.path.join(work, "predict-" + str(len(rows)))
        m = run_checked([PY, "-m", "scmodel.predict", "--checkpoint", checkpoint, "--out", out, *options])
        summary = _score(out, *(os.path.join(out, f) for f in ("prediction.h5ad", "real.h5ad", "training_sample.h5ad")))
        rows.append({**summary, "prediction_file": summary["prediction"], "prediction": name,
                     "task": "held-out cells of seen perturbations", "predict_seconds": m.seconds})
    out = os.path.join(work, "predict-unseen")
    m = run_checked([PY, "-m", "scmodel.predict", "--checkpoint", checkpoint, "--out", out, "--pert-counts",
                     os.path.join(files, "pert_counts_Validation.csv"), "--genes", os.path.join(files, "gene_names.csv")])
    summary = _score(out, os.path.join(out, "prediction.h5ad"), os.path.join(files, "adata_Validation_truth.h5ad"),
                     os.path.join(files, "adata_Training.h5ad"))
    rows.append({**summary, "prediction_file": summary["prediction"], "prediction": "model: delta, expected expression (default)",
                 "task": "perturbations without training cells", "predict_seconds": m.seconds})
    render(rows, steps, args.store, args.finetune_steps)


def render(rows: list[dict], steps: dict, store: str, finetune_steps: int) -> None:
    table_rows = []
    for r in rows:
        metrics = {m["metric"]: m for m in r["metrics"]}
        cells = []
        for key in ("overlap_at_N", "discrimination_score_l1", "mae"):
            m = metrics[key]
            cells.append(f"{m['model']:.3f} ({m['cell_mean_baseline']:.3f})")
        table_rows.append([r["task"], r["prediction"], *cells, f"{r['avg_score']:.3f}"])
    table = md_table(["task", "prediction", "DE overlap at N (baseline)", "discrimination L1 (baseline)",
                      "MAE (baseline)", "cell-eval score vs cell-mean baseline"], table_rows)
    note = (f"\nSynthetic challenge-layout data (`scdata vcc demo`: one cell type of the demo atlas, drawn from its "
            f"gene-regulatory model; 16 perturbations with training cells, 8 without; 250-350 cells per perturbation, "
            f"1,500 controls, 4 batches, 2,000 genes). `conditional-tiny` "
            f"pretrained {PRETRAIN_STEPS} steps on {store} (512 HVGs), fine-tuned {finetune_steps} steps "
            "(`finetune-tiny`). Held-out: 20% of every perturbation's cells and of the controls. Scores are "
            "cell-eval's `score_agg_metrics` (0 = the cell-mean baseline, clipped at 0 per metric, averaged); "
            "baseline values in parentheses. Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items()) + ".\n")
    write_results("bench_perturbation", {"rows": rows, "steps_seconds": steps, "store": store,
                                         "finetune_steps": finetune_steps}, table + "\n" + note)


if __name__ == "__main__":
    main()
