"""Model sizes as factories in a registry (the training CLI offers the names as choices)."""

from __future__ import annotations

from .conditional import ConditionalConfig, ConditionalDiffusionModel
from .mini import MiniConfig, MiniDiffusionModel


def mini(n_genes: int = 2000, n_tokens: int = 64):
    return MiniDiffusionModel(MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=512, n_heads=8, n_layers=6))


def mini_tiny(n_genes: int = 2000, n_tokens: int = 64):
    return MiniDiffusionModel(MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=128, n_heads=4, n_kv_heads=4, n_layers=3, mlp_ratio=2.0))


def conditional(n_genes: int = 2000, n_tokens: int = 64):
    return ConditionalDiffusionModel(ConditionalConfig(
        backbone=MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=512, n_heads=8, n_kv_heads=1, n_layers=6)))


def conditional_tiny(n_genes: int = 2000, n_tokens: int = 64):
    return ConditionalDiffusionModel(ConditionalConfig(
        backbone=MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=64, n_heads=4, n_kv_heads=1, n_layers=2, mlp_ratio=2.0),
        gene_vocab=36_601, n_control_tokens=2, control_layers=1))


def conditional_seed(n_genes: int = 2000, n_tokens: int = 64):
    """Near the visualization seed's 24,752,265 parameters with our block design (adaLN + cross-attention):
    the 36,601-gene vocabulary kept, 384 wide, 3 layers, control set pooled without self-attention blocks."""
    return ConditionalDiffusionModel(ConditionalConfig(
        backbone=MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=384, n_heads=8, n_kv_heads=1, n_layers=3), control_layers=0))


MODELS = {"mini": mini, "mini-tiny": mini_tiny, "conditional": conditional, "conditional-tiny": conditional_tiny}
MODELS["conditional-seed"] = conditional_seed


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "ConditionalConfig", "ConditionalDiffusionModel", "MiniConfig", "MiniDiffusionModel",
           "count_parameters"]
