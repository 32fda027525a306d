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


def check_pair(pred, real, control: str, pert_col: str) -> None:
    """cell-eval's requirements, with errors that name what differs."""
    for name, adata in (("prediction", pred), ("real", real)):
        if pert_col not in adata.obs.columns:
            raise ValueError(f"{name}: obs has no {pert_col!r} column (columns: {list(adata.obs.columns)})")
        if control not in set(adata.obs[pert_col].astype(str)):
            raise ValueError(f"{name}: no control cells labelled {control!r} in obs[{pert_col!r}]")
    if list(pred.var_names) != list(real.var_names):
        diff = next(i for i, (a, b) in enumerate(zip(pred.var_names, real.var_names)) if a != b) \
            if pred.n_vars == real.n_vars else min(pred.n_vars, real.n_vars)
        raise ValueError(f"prediction and real cells have different genes ({pred.n_vars} vs {real.n_vars}; first "
                         f"difference at position {diff}); both must follow gene_names.csv")
    missing = set(real.obs[pert_col].astype(str)) - set(pred.obs[pert_col].astype(str))
    if missing:
        raise ValueError(f"the prediction lacks perturbations of the real cells: {sorted(missing)[:5]}")


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
    check_pair(pred, real, config.control_label, config.pert_col)
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
    with open(os.path.join(config.out, "cell_eval_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    table.to_csv(os.path.join(config.out, "cell_eval_summary.csv"), index=False)
    echo(format_table(table, summary["avg_score"]))
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
