"""Moved to ``scmodel.evaluate.metrics``; this old path keeps importing its names for now."""

from __future__ import annotations

import warnings

from .evaluate.metrics import (
    PCASpace,
    classifier_auc,
    fit_pca,
    gene_shuffled,
    marginal_agreement,
    mmd_permutation_pvalue,
    mmd_unbiased,
)

__all__ = ["PCASpace", "classifier_auc", "fit_pca", "gene_shuffled", "marginal_agreement", "mmd_permutation_pvalue",
           "mmd_unbiased"]

warnings.warn("scmodel.metrics moved to scmodel.evaluate.metrics; import it from there", FutureWarning, stacklevel=2)
