"""Transfer to unseen perturbations: what atlas pretraining buys when fine-tuning never saw the target.

One gene-regulatory model (``scdata.source.regulation``) draws both a synthetic atlas (the demo
bucket: 8 cell types, tissues, technologies, depths) and a CRISPRi screen of one of its cell types
(``scdata vcc demo``: regulators and non-regulators knocked down, 4 batches). A knockdown's effect
is therefore written in the atlas's co-expression, and nowhere else for the perturbations held out
of fine-tuning. Everything runs through the command lines a user runs (the held-out check runs the
same): ``scdata ingest``, ``scdata hvg --n-hvgs 1000 --materialize``, ``scdata vcc import
--genes-from``, ``python -m scmodel.train --config conditional-tiny`` (pretraining) then
``--config finetune-tiny`` with and without ``--init-from``, ``python -m scmodel.predict
--pert-counts --genes``, ``python -m scmodel.evaluate --prediction``.

Rows, all scored by cell-eval (VCC profile against its cell-mean baseline) plus the Pearson of
deltas, on the same real held-out cells, every prediction made from the same real control cells:
the model pretrained and fine-tuned (default settings); the same fine-tune from random weights;
ablations (no calibration, the pretrained model read instead of the fine-tuned one, the conditional
model's untrained embedding for unseen targets as before, the target alone); the mean of the
training perturbations; a co-expression regression on the atlas; Ahlmann-Eltze et al.'s PCA + ridge
linear model (atlas and training-cell embeddings); State (Arc's model, shrunk to 2 cores, with atlas
gene features for unseen targets) when its venv exists (``benchmarks/baselines/setup_state.sh``).

    python benchmarks/bench_transfer.py                 # ~1.5 hours on 2 cores
    python benchmarks/bench_transfer.py --quick         # smaller and shorter, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.baselines import perturbation as baselines  # noqa: E402
from benchmarks.baselines import state_peer  # noqa: E402
from benchmarks.common import WORK, md_table, run_checked, write_results  # noqa: E402

PY = sys.executable
CONTROL = "non-targeting"


def _step(name: str, done: str, cmd: list[str], seconds: dict, fresh: bool) -> None:
    """Run ``cmd`` unless ``done`` exists (a resumed benchmark skips finished steps)."""
    if os.path.exists(done) and not fresh:
        print(f"[{name}] done before: {done}", flush=True)
        return
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    seconds[name] = round(run_checked(cmd).seconds, 1)


def _score(prediction: str, real: str, training: str, out: str, fresh: bool = False) -> dict:
    summary = os.path.join(out, "cell_eval_summary.json")
    if os.path.exists(summary) and not fresh and os.path.getmtime(summary) > os.path.getmtime(prediction):
        with open(summary) as f:
            return json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    run_checked([PY, "-m", "scmodel.evaluate", "--prediction", prediction, "--real", real, "--training", training,
                 "--out", out])
    with open(summary) as f:
        return json.load(f)


def _write_prediction(template, ratios: dict[str, np.ndarray], counts: pd.DataFrame, path: str, seed: int) -> None:
    """A prediction file like ``scmodel.predict``'s: ``template``'s real controls, then each target's
    cells drawn from them and scaled by its ratios (``scmodel.delta_cells``)."""
    import anndata as ad
    import scipy.sparse as sp

    from scmodel.delta_cells import cp10k_mean, delta_cells

    labels = template.obs["target_gene"].astype(str).to_numpy()
    controls = template[labels == CONTROL]
    x = controls.X.toarray() if sp.issparse(controls.X) else np.asarray(controls.X)
    totals = x.sum(axis=1)
    reference = cp10k_mean(x, totals)
    rng = np.random.default_rng([seed, 23])
    blocks, names = [x], [CONTROL] * len(x)
    for target, n in zip(counts["target_gene"], counts["n_cells"]):
        basal = rng.choice(len(x), size=n, replace=n > len(x))
        blocks.append(delta_cells(x[basal], totals[basal], ratios[target], rng, reference))
        names += [target] * n
    obs = pd.DataFrame({"target_gene": pd.Categorical(names)}, index=[f"pred_{i:07d}" for i in range(len(names))])
    adata = ad.AnnData(X=sp.csr_matrix(np.vstack(blocks).astype(np.float32)), obs=obs, var=template.var.copy())
    adata.write_h5ad(path)


def _against_truth(prediction: str, truth: dict) -> dict:
    """The prediction's pseudobulk effects against the simulation's noise-free ones (``truth.json``):
    per regulator, the Pearson of log ratios over the genes other than the target; per
    non-regulator (true effect: its target alone), the RMS of its predicted log ratios elsewhere."""
    import anndata as ad

    adata = ad.read_h5ad(prediction)
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    x = x / np.maximum(x.sum(axis=1, keepdims=True), 1.0) * 1e4
    labels = adata.obs["target_gene"].astype(str).to_numpy()
    genes = list(adata.var_names)
    symbol = {g: i for i, g in enumerate(truth["genes"])}
    columns = np.array([symbol[g] for g in genes])
    base = x[labels == CONTROL].mean(axis=0)
    regulators, others = [], []
    for target in np.unique(labels[labels != CONTROL]):
        predicted = np.log((x[labels == target].mean(axis=0) + 1e-2) / (base + 1e-2))
        true = np.asarray(truth["population_log2fc"][target])[columns] * np.log(2)
        keep = np.array(genes) != target
        if target in truth["regulators"]:
            regulators.append(float(np.corrcoef(predicted[keep], true[keep])[0, 1]))
        else:
            others.append(float(np.sqrt(np.mean(predicted[keep] ** 2))))
    return {"regulator_pearson": float(np.nanmean(regulators)) if regulators else float("nan"),
            "non_regulator_rms": float(np.mean(others)) if others else float("nan")}


def _against_training(ratios: dict[str, np.ndarray], effects: pd.DataFrame, genes: list[str]) -> dict:
    """A peer's predictions for the perturbations it was trained on, against their measured training
    effects: the mean predicted and measured log ratio of the target itself, and the mean Pearson of
    the other genes' log ratios. A peer that has learned its training data scores high here."""
    own, measured, pearson = [], [], []
    for target, ratio in ratios.items():
        j = genes.index(target)
        predicted, observed = np.log(ratio), effects.loc[target].to_numpy()
        keep = np.arange(len(genes)) != j
        own.append(float(predicted[j]))
        measured.append(float(observed[j]))
        pearson.append(float(np.corrcoef(predicted[keep], observed[keep])[0, 1]))
    return {"target_log_ratio_predicted": float(np.mean(own)), "target_log_ratio_measured": float(np.mean(measured)),
            "off_target_pearson": float(np.nanmean(pearson)), "n_perturbations": len(ratios)}


def _atlas_log1p(store: str, genes: list[str], max_cells: int, seed: int) -> np.ndarray:
    """log1p(counts per 10k of each cell's total) of the atlas's cells at ``genes`` (by symbol)."""
    from scdata.store.layout import open_root, read_strings
    from scdata.store.manifest import open_committed

    root, manifest = open_committed(store)
    symbols = read_strings(root["var/gene_symbol"])
    position = {str(s): i for i, s in enumerate(symbols)}
    columns = np.array([position[g] for g in genes])
    n = manifest.n_committed
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_cells), replace=False))
    x = np.asarray(open_root(store)["X"].get_orthogonal_selection((rows, columns)), dtype=np.float64)
    totals = np.asarray(root["obs/total_counts"][:], dtype=np.float64)[rows] if "total_counts" in root["obs"] \
        else np.asarray(root["obs/umi_count"][:], dtype=np.float64)[rows]
    return np.log1p(x * (1e4 / np.maximum(totals, 1.0))[:, None])


def _controls_log1p(template) -> np.ndarray:
    import scipy.sparse as sp

    x = template[template.obs["target_gene"].astype(str) == CONTROL].X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return np.log1p(baselines.cp10k(x.astype(np.float64)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", default=os.path.join(WORK, "transfer"))
    p.add_argument("--quick", action="store_true", help="a smaller atlas and shorter training: a smoke run")
    p.add_argument("--fresh", action="store_true", help="redo every step (default: resume finished ones)")
    p.add_argument("--seed", type=int, default=11, help="seed of the atlas and the screen")
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--finetune-steps", type=int, default=None, help="default: finetune-tiny's own")
    p.add_argument("--n-hvgs", type=int, default=1000)
    p.add_argument("--skip-state", action="store_true")
    p.add_argument("--seeds", type=int, default=3, help="prediction seeds of the two headline rows (their spread)")
    p.add_argument("--state-steps", type=int, default=800, help="State's training steps (~0.6 s each on 2 cores)")
    p.add_argument("--state-lrs", type=float, nargs="+", default=[1e-4, 1e-3], help="State's learning rates (a row each)")
    args = p.parse_args()
    work = args.work
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    seconds: dict[str, float] = {}
    experiments = "6" if args.quick else "16"
    pretrain_steps = str(60 if args.quick else args.pretrain_steps)
    finetune = ["--max-steps", str(100 if args.quick else args.finetune_steps)] if (args.quick or args.finetune_steps) else []
    hvgs = f"n_hvgs={args.n_hvgs}"
    bucket, atlas = os.path.join(work, "bucket"), os.path.join(work, "atlas.zarr")
    files, screen = os.path.join(work, "screen_files"), os.path.join(work, "screen.zarr")
    release = os.path.join(bucket, "scbasecount", "2026-01-12")
    fresh = False  # --fresh already removed the work folder; every step below resumes
    _step("atlas bucket", os.path.join(release, "metadata"),
          [PY, "-m", "scdata", "demo-bucket", bucket, "--experiments", experiments, "--seed", str(args.seed)], seconds, fresh)
    _step("ingest", os.path.join(atlas, "zarr.json"),
          [PY, "-m", "scdata", "ingest", "--source", release, "--store", atlas, "--cell-count", "10000000",
           "--workers", "2", "--no-progress"], seconds, fresh)
    _step("hvg", os.path.join(work, "hvg_info.json"),
          [PY, "-m", "scdata", "hvg", "--store", atlas, "--n-hvgs", str(args.n_hvgs), "--materialize", "--workers", "2"],
          seconds, fresh)
    _step("screen files", os.path.join(files, "truth.json"),
          [PY, "-m", "scdata", "vcc", "demo", files, "--seed", str(args.seed), "--axis-seed", str(args.seed),
           "--perturbations", "12" if args.quick else "40", "--validation-perturbations", "8" if args.quick else "24"],
          seconds, fresh)
    _step("vcc import", os.path.join(screen, "zarr.json"),
          [PY, "-m", "scdata", "vcc", "import", "--input", os.path.join(files, "adata_Training.h5ad"), "--store", screen,
           "--genes-from", atlas, "--workers", "2"], seconds, fresh)
    pretrain = os.path.join(work, "pretrain")
    _step("pretrain", os.path.join(pretrain, "checkpoint.pt"),
          [PY, "-m", "scmodel.train", "--config", "conditional-tiny", "--set", hvgs, "--store", atlas, "--out", pretrain,
           "--max-steps", pretrain_steps, "--eval-every", pretrain_steps], seconds, fresh)
    # the ablation of the programs' gene set: the same pretraining, its programs over the model's genes only
    pretrain_hvg = os.path.join(work, "pretrain-hvg-programs")
    _step("pretrain (programs over the model's genes)", os.path.join(pretrain_hvg, "checkpoint.pt"),
          [PY, "-m", "scmodel.train", "--config", "conditional-tiny", "--set", hvgs, "--set", "programs_genes=0",
           "--store", atlas, "--out", pretrain_hvg, "--max-steps", pretrain_steps, "--eval-every", pretrain_steps],
          seconds, fresh)
    runs = {"pretrained": ["--init-from", os.path.join(pretrain, "checkpoint.pt")], "scratch": [],
            "hvg-programs": ["--init-from", os.path.join(pretrain_hvg, "checkpoint.pt")]}
    for name, init in runs.items():
        out = os.path.join(work, f"finetune-{name}")
        _step(f"finetune {name}", os.path.join(out, "checkpoint.pt"),
              [PY, "-m", "scmodel.train", "--config", "finetune-tiny", "--set", hvgs, *init, "--store", screen, "--out", out,
               *finetune], seconds, fresh)
    pert_counts, gene_names = os.path.join(files, "pert_counts_Validation.csv"), os.path.join(files, "gene_names.csv")
    truth_file = os.path.join(files, "adata_Validation_truth.h5ad")
    predictions = {
        "sczarr, pretrained + fine-tuned (default)": ("pretrained", []),
        "sczarr, fine-tuned from scratch": ("scratch", []),
        "ablation: no attenuation correction": ("pretrained", ["--no-attenuation-correction"]),
        "ablation: no calibration on the seen perturbations (scale 1)": ("pretrained", ["--calibrate", "none"]),
        "ablation: calibrated by least squares (before)": ("pretrained", ["--calibrate", "least-squares"]),
        "ablation: controls' raw co-variation (no atlas programs)": ("pretrained", ["--no-programs"]),
        "ablation: atlas programs over the model's HVGs only (programs_genes=0)": ("hvg-programs", []),
        "ablation: in-silico read from the network (fine-tuned)": ("pretrained", ["--unseen", "in-silico-network"]),
        "ablation: in-silico read from the network (pretrained)": ("pretrained", [
            "--unseen", "in-silico-network", "--insilico-checkpoint", os.path.join(pretrain, "checkpoint.pt")]),
        "ablation: conditional embedding for unseen (before)": ("pretrained", ["--unseen", "conditional", "--generate", "32"]),
        "ablation: the target alone": ("pretrained", ["--unseen", "target-only"]),
    }
    with open(os.path.join(files, "truth.json")) as f:
        truth = json.load(f)
    rows = []
    for label, (run, options) in predictions.items():
        seeds = range(args.seeds if label.startswith("sczarr") else 1)  # the two headline rows: their spread over seeds
        repeats = []
        for seed in seeds:
            out = os.path.join(work, "predict", label.split(":")[0].replace(",", "").replace(" ", "_") + str(len(rows))
                               + (f"_seed{seed}" if seed else ""))
            start = time.perf_counter()
            _step(f"predict {label} (seed {seed})", os.path.join(out, "prediction.h5ad"),
                  [PY, "-m", "scmodel.predict", "--checkpoint", os.path.join(work, f"finetune-{run}", "checkpoint.pt"),
                   "--pert-counts", pert_counts, "--genes", gene_names, "--out", out, "--seed", str(seed), *options],
                  seconds, fresh)
            summary = _score(os.path.join(out, "prediction.h5ad"), truth_file, os.path.join(out, "training_sample.h5ad"),
                             os.path.join(out, "cell_eval"))
            with open(os.path.join(out, "prediction.json")) as f:
                meta = json.load(f)
            repeats.append({**summary, **_against_truth(os.path.join(out, "prediction.h5ad"), truth),
                            "seconds": round(time.perf_counter() - start, 1),
                            "in_silico_scale": meta.get("in_silico_scale"), "methods": meta.get("methods")})
        rows.append({"method": label, **repeats[0], "seed_scores": [r["avg_score"] for r in repeats],
                     "seed_regulator_pearson": [r["regulator_pearson"] for r in repeats]})
    # baselines, from the default prediction's own control cells and training sample
    import anndata as ad

    default_dir = os.path.join(work, "predict", "sczarr_pretrained_+_fine-tuned_(default)0")
    template = ad.read_h5ad(os.path.join(default_dir, "prediction.h5ad"))
    training = os.path.join(default_dir, "training_sample.h5ad")
    counts = pd.read_csv(pert_counts)
    targets = counts["target_gene"].astype(str).tolist()
    genes = list(template.var_names)
    effects, fold = baselines.training_effects(ad.read_h5ad(os.path.join(files, "adata_Training.h5ad"))[:, genes], CONTROL)
    atlas_values = _atlas_log1p(atlas, genes, 20_000, args.seed)
    train_file = ad.read_h5ad(os.path.join(files, "adata_Training.h5ad"))[:, genes]
    train_values = np.log1p(baselines.cp10k(train_file.X.toarray().astype(np.float64)))
    if not args.skip_state and not state_peer.available():
        print("State's venv is missing (benchmarks/baselines/setup_state.sh): no State row", flush=True)
    symbol = {g: i for i, g in enumerate(truth["genes"])}
    baseline_ratios = {
        "ceiling: the true population effects": {
            t: np.array([2.0 ** truth["population_log2fc"][t][symbol[g]] for g in genes]) for t in targets},
        "mean of training perturbations": baselines.mean_of_training(effects, targets, fold),
        "linear: co-expression regression on the atlas": baselines.coexpression(atlas_values, _controls_log1p(template),
                                                                                genes, targets, fold),
        "linear: PCA (atlas) + ridge, Ahlmann-Eltze et al.": baselines.pca_ridge(baselines.gene_embedding(atlas_values), effects,
                                                                                 genes, targets, fold),
        "linear: PCA (training cells) + ridge, Ahlmann-Eltze et al.": baselines.pca_ridge(
            baselines.gene_embedding(train_values), effects, genes, targets, fold),
    }
    train_adata = ad.read_h5ad(os.path.join(files, "adata_Training.h5ad"))[:, genes]
    state_checks = {}
    if state_peer.available() and not args.skip_state:
        embedding = baselines.gene_embedding(atlas_values, 32)
        seen = sorted(set(train_adata.obs["target_gene"].astype(str)) - {CONTROL})
        features = {t: embedding[genes.index(t)] for t in sorted(set(seen) | set(targets))}
        controls = template[template.obs["target_gene"].astype(str) == CONTROL]
        batches = sorted(set(train_adata.obs["batch"].astype(str)))
        steps = 60 if args.quick else args.state_steps
        for lr in args.state_lrs:  # State's default learning rate (1e-4) and a larger one
            start = time.perf_counter()
            run_dir = state_peer.train_state(os.path.join(work, f"state_lr{lr:g}"), train_adata, features, CONTROL, steps,
                                             args.seed, (f"training.lr={lr:g}",))
            label = f"State (arc-state 0.11.1, shrunk, {steps} steps, lr {lr:g}, atlas PCA features)"
            baseline_ratios[label] = state_peer.predict_state(run_dir, controls, batches, targets, CONTROL, "unseen",
                                                              args.seed)
            # a set-up check: what State predicts for the perturbations it was trained on
            on_seen = state_peer.predict_state(run_dir, controls, batches, seen, CONTROL, "seen", args.seed)
            state_checks[f"lr {lr:g}"] = _against_training(on_seen, effects, genes)
            seconds[f"State lr {lr:g} train + infer"] = round(time.perf_counter() - start, 1)
    for label, ratios in baseline_ratios.items():
        out = os.path.join(work, "baselines", label.split(":")[0].replace(" ", "_") + str(len(rows)))
        os.makedirs(out, exist_ok=True)
        start = time.perf_counter()
        _write_prediction(template, ratios, counts, os.path.join(out, "prediction.h5ad"), args.seed)
        summary = _score(os.path.join(out, "prediction.h5ad"), truth_file, training, os.path.join(out, "cell_eval"))
        rows.append({"method": label, **summary, **_against_truth(os.path.join(out, "prediction.h5ad"), truth),
                     "seconds": round(time.perf_counter() - start, 1)})
    render(rows, seconds, args, state_checks)


def _with_spread(values: list[float], first: float) -> str:
    if len(values) < 2:
        return f"{first:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} ({len(values)} seeds)"


def render(rows: list[dict], seconds: dict, args, state_checks: dict | None = None) -> None:
    table_rows = []
    for r in rows:
        metrics = {m["metric"]: m for m in r["metrics"]}
        table_rows.append([r["method"], _with_spread(r.get("seed_scores", []), r["avg_score"]),
                           f"{metrics['overlap_at_N']['model']:.3f}", f"{metrics['discrimination_score_l1']['model']:.3f}",
                           f"{metrics['mae']['model']:.4f}", f"{r['pearson_delta']:.3f}",
                           _with_spread(r.get("seed_regulator_pearson", []), r["regulator_pearson"]),
                           f"{r['non_regulator_rms']:.3f}"])
    base = {m["metric"]: m for m in rows[0]["metrics"]}
    table_rows.append(["cell-eval's cell-mean baseline", "0 (reference)", f"{base['overlap_at_N']['cell_mean_baseline']:.3f}",
                       f"{base['discrimination_score_l1']['cell_mean_baseline']:.3f}",
                       f"{base['mae']['cell_mean_baseline']:.4f}", "", "", ""])
    table = md_table(["method", "cell-eval score vs cell-mean baseline", "DE overlap at N", "discrimination (L1)", "MAE",
                      "Pearson delta", "regulators: Pearson with the true effect", "non-regulators: off-target RMS"],
                     table_rows)
    note = (f"\nUnseen perturbations only: the screen's validation targets, none of whose cells entered fine-tuning, "
            f"scored against their real cells (their own file, its own controls). Atlas: the demo bucket (seed {args.seed}), "
            f"{args.n_hvgs} HVGs. The last two columns score each prediction's pseudobulk against the simulation's "
            f"noise-free effects (`truth.json`); the predicted cells' own sampling noise keeps the off-target RMS above 0 "
            f"even for the true effects (the ceiling row). Seconds per step: "
            + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ".\n")
    scales = {r["method"]: r["in_silico_scale"]["in-silico"] for r in rows if (r.get("in_silico_scale") or {}).get("in-silico")}
    if scales:
        note += ("\nCalibration scales (unseen in-silico log ratios multiplied by s, fitted on the seen perturbations' "
                 "measured effects): " + "; ".join(f"{k}: s = {v:.2f}" for k, v in scales.items()) + ".\n")
    if state_checks:
        note += ("\nState's set-up check, on the perturbations it was trained on (log ratio of the target itself, "
                 "predicted vs measured; Pearson of the other genes' log ratios with the measured ones): "
                 + "; ".join(f"{k}: {c['target_log_ratio_predicted']:.2f} vs {c['target_log_ratio_measured']:.2f}, "
                             f"Pearson {c['off_target_pearson']:.3f}" for k, c in state_checks.items()) + ".\n")
    write_results("bench_transfer" + ("_quick" if args.quick else ""), {
        "rows": rows, "steps_seconds": seconds, "args": vars(args), "state_checks": state_checks or {}},
        table + "\n" + note)


if __name__ == "__main__":
    main()
