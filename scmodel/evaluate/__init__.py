"""Evaluation of trained models: held-out metrics (``heldout``), the ``HeldOutEvaluator``
(``evaluator``), distribution metrics (``metrics``), ``samples.png`` (``sample_plots``), cell-eval
scoring of perturbation predictions (``perturbation``) and ``python -m scmodel.evaluate`` (``cli``,
run by ``__main__``).

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
)

__all__ = ["MASK_RATIOS", "SAMPLE_SETS", "HeldOutEvaluator", "SampleConfig", "evaluate", "gene_marginals",
           "sample_marginals", "sample_quality"]
