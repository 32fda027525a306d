"""Scoring a perturbation prediction with cell-eval, against held-out real cells and against
cell-eval's cell-mean baseline (every perturbation predicted as the mean of the training
perturbations' cells, with the prediction's own real controls).

Every metric is cell-eval's: the VCC profile (differential-expression overlap, perturbation
discrimination, MAE) scored against the baseline with ``score_agg_metrics``, and with
``full=True`` the full profile's tables too. Both AnnData are checked first (same genes in the
same order, the same perturbation labels, the control label present) so a mismatch is reported
by name rather than deep inside cell-eval.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, kw_only=True)
class CellEvalConfig:
    prediction: str
    real: str
    training: str
    """Cells whose perturbation means make the cell-mean baseline (controls in it are ignored)."""
    out: str
    control_label: str = "non-targeting"
    pert_col: str = "target_gene"
    num_threads: int = 2
    full: bool = False


def check_pair(pred, real, control: str, pert_col: str, names: tuple[str, str] = ("prediction", "real")) -> None:
    """cell-eval's requirements, with errors that name the file and what differs."""
    for name, adata in zip(names, (pred, real)):
        if pert_col not in adata.obs.columns:
            raise ValueError(f"{name}: obs has no {pert_col!r} column (columns: {list(adata.obs.columns)})")
        if control not in set(adata.obs[pert_col].astype(str)):
            raise ValueError(f"{name}: no control cells labelled {control!r} in obs[{pert_col!r}]: cell-eval measures "
                             f"each perturbation against its own file's controls")
    if list(pred.var_names) != list(real.var_names):
        only_real = [g for g in real.var_names if g not in set(pred.var_names)]
        only_pred = [g for g in pred.var_names if g not in set(real.var_names)]
        if only_real or only_pred:
            what = (f"{names[1]} has genes the prediction lacks ({only_real[:3]}...)" if only_real
                    else f"the prediction has genes {names[1]} lacks ({only_pred[:3]}...)")
            raise ValueError(f"{names[0]} and {names[1]} have different genes ({pred.n_vars} vs {real.n_vars}): {what}; "
                             f"both must follow gene_names.csv")
        diff = next(i for i, (a, b) in enumerate(zip(pred.var_names, real.var_names)) if a != b)
        raise ValueError(f"{names[0]} and {names[1]} order their genes differently (first difference at position {diff}: "
                         f"{pred.var_names[diff]!r} vs {real.var_names[diff]!r}); both must follow gene_names.csv")
    missing = set(real.obs[pert_col].astype(str)) - set(pred.obs[pert_col].astype(str))
    if missing:
        raise ValueError(f"{names[0]} lacks perturbations of the real cells in {names[1]}: {sorted(missing)[:5]}")


def log1p_means(adata, pert_col: str) -> pd.DataFrame:
    """(perturbation x gene) mean of log1p(counts per 10k) per perturbation label."""
    import scipy.sparse as sp

    x = adata.X
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = 1e4 / np.maximum(totals, 1.0)
    x = (sp.diags(scale) @ x).tocsr() if sp.issparse(x) else x * scale[:, None]
    x = x.log1p() if sp.issparse(x) else np.log1p(x)
    labels = adata.obs[pert_col].astype(str).to_numpy()
    rows = {}
    for label in np.unique(labels):
        block = x[labels == label]
        rows[label] = np.asarray(block.mean(axis=0)).ravel()
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(adata.var_names))


def pearson_delta(pred, real, control: str, pert_col: str) -> dict[str, float]:
    """Per perturbation: Pearson correlation, over genes, of the predicted and the real change of
    mean log1p expression against each file's own controls (the "Pearson delta" of the perturbation
    literature; NaN where either change is constant)."""
    p, r = log1p_means(pred, pert_col), log1p_means(real, pert_col)
    out = {}
    for label in r.index:
        if label == control or label not in p.index:
            continue
        dp, dr = p.loc[label] - p.loc[control], r.loc[label] - r.loc[control]
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant change has no correlation: NaN
            out[label] = float(np.corrcoef(dp, dr)[0, 1])
    return out


def _baseline(training, pred, control: str, pert_col: str, num_threads: int):
    """cell-eval's cell-mean baseline built on the training cells' perturbations, with the
    prediction's (real) controls, for the prediction's perturbations and cell counts."""
    import anndata as ad
    import polars as pl
    from cell_eval import build_base_mean_adata

    perturbed = training[training.obs[pert_col].astype(str) != control]
    if not perturbed.n_obs:
        raise ValueError("the training cells have no perturbed cells for the cell-mean baseline")
    controls = pred[pred.obs[pert_col].astype(str) == control]
    combined = ad.concat([perturbed, controls], join="inner", index_unique="-")
    combined.obs[pert_col] = combined.obs[pert_col].astype(str)
    counts = (pred.obs[pred.obs[pert_col].astype(str) != control][pert_col].astype(str).value_counts()
              .rename_axis(pert_col).rename("n_cells").reset_index())
    base = build_base_mean_adata(combined.copy(), counts_df=pl.from_pandas(counts), pert_col=pert_col,
                                 control_pert=control, num_threads=num_threads)
    base.obs[pert_col] = base.obs[pert_col].astype(str)
    return base


def _evaluate(pred, real, config: CellEvalConfig, name: str, profile: str):
    from cell_eval import MetricsEvaluator

    evaluator = MetricsEvaluator(adata_pred=pred.copy(), adata_real=real.copy(), control_pert=config.control_label,
                                 pert_col=config.pert_col, num_threads=config.num_threads,
                                 outdir=os.path.join(config.out, name))
    return evaluator.compute(profile=profile, basename=f"{profile}_results.csv")


def run_cell_eval(config: CellEvalConfig, echo=print) -> dict:
    """VCC-profile scores of the prediction and the baseline, and the prediction's score against it."""
    import anndata as ad
    from cell_eval import score_agg_metrics

    pred, real, training = (ad.read_h5ad(p) for p in (config.prediction, config.real, config.training))
    for adata in (pred, real, training):
        adata.obs[config.pert_col] = adata.obs[config.pert_col].astype(str)
    if list(pred.var_names) != list(real.var_names) and set(pred.var_names) == set(real.var_names) \
            and pred.var_names.is_unique and real.var_names.is_unique:
        real = real[:, list(pred.var_names)].copy()  # the same genes in another order: follow the prediction's
        echo(f"{config.real}: genes reordered to the prediction's order")
    check_pair(pred, real, config.control_label, config.pert_col, (config.prediction, config.real))
    os.makedirs(config.out, exist_ok=True)
    base = _baseline(training, pred, config.control_label, config.pert_col, config.num_threads)
    _, agg_model = _evaluate(pred, real, config, "model", "vcc")
    _, agg_base = _evaluate(base, real, config, "baseline", "vcc")
    scores = score_agg_metrics(agg_model, agg_base, output=os.path.join(config.out, "score.csv"))
    table = _table(agg_model, agg_base, scores)
    if config.full:
        _evaluate(pred, real, config, "model_full", "full")
        _evaluate(base, real, config, "baseline_full", "full")
    summary = {"prediction": config.prediction, "real": config.real, "n_perturbations": int(
        real.obs[config.pert_col].nunique() - 1), "metrics": table.to_dict(orient="records"),
        "avg_score": float(scores.filter(scores["metric"] == "avg_score")["from_baseline"][0])}
    deltas = pearson_delta(pred, real, config.control_label, config.pert_col)
    summary["pearson_delta"] = float(np.nanmean(list(deltas.values()))) if deltas else float("nan")
    summary["pearson_delta_by_perturbation"] = deltas
    with open(os.path.join(config.out, "cell_eval_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    table.to_csv(os.path.join(config.out, "cell_eval_summary.csv"), index=False)
    echo(format_table(table, summary["avg_score"]))
    echo(f"Pearson delta (change of mean log1p expression against controls, mean over perturbations): "
         f"{summary['pearson_delta']:.3f}")
    return summary


def _table(agg_model, agg_base, scores) -> pd.DataFrame:
    """metric | model (mean over perturbations) | cell-mean baseline | score vs baseline."""
    def means(agg):
        frame = agg.to_pandas().set_index("statistic")
        return frame.loc["mean"].astype(float)

    model, base = means(agg_model), means(agg_base)
    score = dict(zip(scores["metric"].to_list(), scores["from_baseline"].to_list()))
    return pd.DataFrame({"metric": model.index, "model": model.to_numpy(), "cell_mean_baseline": base.reindex(model.index).to_numpy(),
                         "score_vs_baseline": [score.get(m, np.nan) for m in model.index]})


def format_table(table: pd.DataFrame, avg_score: float) -> str:
    lines = ["| metric | model | cell-mean baseline | score vs baseline |", "|---|---|---|---|"]
    for row in table.itertuples():
        score = "" if pd.isna(row.score_vs_baseline) else f"{row.score_vs_baseline:.3f}"
        lines.append(f"| {row.metric} | {row.model:.4f} | {row.cell_mean_baseline:.4f} | {score} |")
    lines.append(f"\ncell-eval score against the cell-mean baseline (avg_score, 0 = baseline): {avg_score:.3f}")
    return "\n".join(lines)


def compare_table(results: dict[str, dict]) -> str:
    """Markdown: one row per named ``cell_eval_summary.json``, and cell-eval's cell-mean baseline
    (the first result's; every result against the same real cells has the same baseline)."""
    lines = ["| prediction | cell-eval score vs cell-mean baseline | DE overlap at N | discrimination (L1) | MAE | "
             "Pearson delta |", "|---|---|---|---|---|---|"]
    base = None
    for name, summary in results.items():
        metrics = {m["metric"]: m for m in summary["metrics"]}
        base = base or metrics
        lines.append(f"| {name} | {summary['avg_score']:.3f} | {metrics['overlap_at_N']['model']:.3f} | "
                     f"{metrics['discrimination_score_l1']['model']:.3f} | {metrics['mae']['model']:.4f} | "
                     f"{summary.get('pearson_delta', float('nan')):.3f} |")
    if base:
        lines.append(f"| cell-eval's cell-mean baseline | 0 | {base['overlap_at_N']['cell_mean_baseline']:.3f} | "
                     f"{base['discrimination_score_l1']['cell_mean_baseline']:.3f} | {base['mae']['cell_mean_baseline']:.4f} | |")
    return "\n".join(lines)
