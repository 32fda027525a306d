"""``python -m scmodel.evaluate`` (run by ``__main__``): the held-out evaluation of a saved checkpoint.

    python -m scmodel.evaluate --checkpoint runs/demo/checkpoint.pt --store data/demo/store.zarr
    python -m scmodel.evaluate --checkpoint ... --store ... --sample-steps 128 --out runs/demo/eval

Uses the run's own configuration (tokenizer, genes, split, seed) from the checkpoint, so the
held-out cells are the run's; ``--store`` may name another store with the same HVGs. Prints
the masked-token and sample-quality metrics beside their baselines and writes them to
``OUT/evaluation.json`` with ``OUT/samples.png``.

A perturbation prediction (``python -m scmodel.predict``) is scored with cell-eval instead:

    python -m scmodel.evaluate --prediction P/prediction.h5ad --real P/real.h5ad \
        --training P/training_sample.h5ad --out P/cell_eval [--full]

printing the VCC profile of the prediction and of cell-eval's cell-mean baseline, and the
prediction's score against the baseline (``scmodel.evaluate.perturbation``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

from ..run.network import build_run_model
from ..run.checkpoint import load_run
from ..run.loaders import build_loaders
from ..tokenize import BinnedTokenizer
from .evaluator import HeldOutEvaluator
from .heldout import summary_line
from .sample_plots import plot_samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scmodel.evaluate", description="evaluate a trained checkpoint on held-out cells")
    p.add_argument("--checkpoint", help="checkpoint.pt written by python -m scmodel.train")
    p.add_argument("--prediction", help="a perturbation prediction (h5ad): score it with cell-eval")
    p.add_argument("--real", help="with --prediction: the held-out real cells (h5ad)")
    p.add_argument("--training", help="with --prediction: training cells for the cell-mean baseline (h5ad)")
    p.add_argument("--control-label", default="non-targeting")
    p.add_argument("--threads", type=int, default=2, help="with --prediction: cell-eval's threads")
    p.add_argument("--full", action="store_true", help="with --prediction: also cell-eval's full profile tables")
    p.add_argument("--compare", nargs="+", metavar="NAME=DIR",
                   help="print one table of several cell-eval results (each DIR an --out of --prediction)")
    p.add_argument("--store", help="store to read (default: the run's)")
    p.add_argument("--out", help="directory for evaluation.json and samples.png (default: beside the checkpoint)")
    p.add_argument("--sample-steps", type=int, help="reverse-process steps (default: the run's)")
    p.add_argument("--sample-order", choices=("random", "confidence"), help="reveal order (default: the run's)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the run's)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (default: the run's)")
    p.add_argument("--eval-batches", type=int, help="held-out batches to read (default: the run's)")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="sampling seeds: metrics are their mean, evaluation.json adds the spread (default: the run's "
                        "seed and the next two)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.compare:
        return _compare(args.compare)
    if args.prediction:
        return _cell_eval(args)
    if not args.checkpoint:
        p.error("--checkpoint (a model to evaluate) or --prediction (a perturbation prediction) is required")
    if not os.path.exists(args.checkpoint):
        raise SystemExit(f"--checkpoint {args.checkpoint}: no such file")
    config, state = load_run(args.checkpoint, args.store, args.device)
    overrides = {k: v for k, v in (("sample_steps", args.sample_steps), ("sample_order", args.sample_order),
                                   ("sample_temperature", args.temperature), ("sample_top_p", args.top_p),
                                   ("eval_batches", args.eval_batches))
                 if v is not None}
    config = dataclasses.replace(config, **overrides)
    tokenizer = BinnedTokenizer(n_tokens=config.n_tokens, max_value=config.tokenizer_max)
    train, val = build_loaders(config, tokenizer)
    model = build_run_model(config, train.dataset.n_features).to(args.device)
    model.load_state_dict(state["model"])
    evaluator = HeldOutEvaluator(config, train.dataset.config, val.dataset.config, tokenizer, torch.device(args.device))
    seeds = args.seeds or [config.seed, config.seed + 1, config.seed + 2]
    runs = [evaluator(model, seed=seed) for seed in seeds]
    cells, pca = runs[0].pop("_cells")
    for run in runs[1:]:
        run.pop("_cells")
    result = mean_over_seeds(runs, seeds)
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump({"checkpoint": os.path.abspath(args.checkpoint), "store": config.store, "step": state.get("step"),
                   **result}, f, indent=1)
    plot_samples(cells, pca, os.path.join(out, "samples.png"))
    print(summary_line(state.get("step", 0), result))
    print(f"Wrote {os.path.join(out, 'evaluation.json')} and {os.path.join(out, 'samples.png')}")
    return 0


def mean_over_seeds(runs: list[dict], seeds: list[int]) -> dict:
    """One result from evaluations at several sampling seeds: every number is the mean over the
    seeds; ``spread`` holds their standard deviations (ddof=1), ``by_seed`` each seed's result."""
    import numpy as np

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    result = dict(runs[0])
    numeric = [k for k, v in runs[0].items() if is_number(v) and all(is_number(r.get(k)) for r in runs)]
    for key in numeric:
        if len({r[key] for r in runs}) > 1:  # settings (steps, cell counts) stay as they are
            result[key] = float(np.mean([r[key] for r in runs]))
    result["seeds"] = list(seeds)
    if len(runs) > 1:
        result["spread"] = {k: float(np.std([r[k] for r in runs], ddof=1)) for k in numeric}
        result["by_seed"] = runs
    return result


def _compare(pairs: list[str]) -> int:
    from .perturbation import compare_table

    results = {}
    for pair in pairs:
        name, sep, directory = pair.partition("=")
        path = os.path.join(directory, "cell_eval_summary.json")
        if not sep or not os.path.exists(path):
            print(f"python -m scmodel.evaluate: --compare {pair}: expected NAME=DIR with DIR/cell_eval_summary.json "
                  f"(the --out of python -m scmodel.evaluate --prediction)", file=sys.stderr)
            return 1
        with open(path) as f:
            results[name] = json.load(f)
    print(compare_table(results))
    return 0


def _cell_eval(args) -> int:
    from .perturbation import CellEvalConfig, run_cell_eval

    if not (args.real and args.training):
        raise SystemExit("--prediction needs --real (held-out real cells) and --training (cells for the baseline)")
    for path in (args.prediction, args.real, args.training):
        if not os.path.exists(path):
            raise SystemExit(f"{path}: no such file")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.prediction)), "cell_eval")
    try:
        run_cell_eval(CellEvalConfig(prediction=args.prediction, real=args.real, training=args.training, out=out,
                                     control_label=args.control_label, num_threads=args.threads, full=args.full))
    except ValueError as exc:
        print(f"python -m scmodel.evaluate: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {out}/cell_eval_summary.json, score.csv and cell-eval's tables")
    return 0
