"""Evaluation of trained models, as one package that training imports and that never imports it.

* ``heldout``: masked-token metrics by mask ratio and the quality of sampled cells, against their
  baselines (``evaluate``, ``sample_quality``, ``SampleConfig``), and the one-line ``summary_line``;
* ``evaluator``: ``HeldOutEvaluator``, a run's held-out cells and training reference, read once;
* ``metrics``: the distribution metrics (MMD, classifier AUC, per-gene agreement) in PCA space;
* ``distribution``: the generative-model field's protocol (30 PCs; 1-NN accuracy, W1/W2, RBF MMD, PRDC);
* ``sample_plots``: ``samples.png``;
* ``perturbation``: a perturbation prediction scored with cell-eval against its cell-mean baseline;
* ``cli`` (run by ``__main__``): ``python -m scmodel.evaluate``.

The names of the former ``scmodel.evaluate`` module import from here as before.
"""

from __future__ import annotations

from .evaluator import HeldOutEvaluator
from .heldout import (
    MASK_RATIOS,
    SAMPLE_SETS,
    SampleConfig,
    evaluate,
    gene_marginals,
    sample_marginals,
    sample_quality,
    summary_line,
)

__all__ = ["MASK_RATIOS", "SAMPLE_SETS", "HeldOutEvaluator", "SampleConfig", "evaluate", "gene_marginals",
           "sample_marginals", "sample_quality", "summary_line"]
