"""Model sizes as factories in a registry (the training CLI offers the names as choices)."""

from __future__ import annotations

from .conditional import ConditionalConfig, ConditionalDiffusionModel
from .mini import MiniConfig, MiniDiffusionModel
from .moe import MoEConfig, MoEDiffusionModel


def mini(n_genes: int = 2000, n_tokens: int = 64, **states):
    """``states``: the cell-state options of ``MiniConfig`` (``n_states``, ``depth_bins``,
    ``tokenizer_max``, ``state_prior``)."""
    return MiniDiffusionModel(MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=512, n_heads=8, n_layers=6, **states))


def mini_tiny(n_genes: int = 2000, n_tokens: int = 64, **states):
    """``states``: as ``mini``'s."""
    return MiniDiffusionModel(MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=128, n_heads=4, n_kv_heads=4, n_layers=3,
                                         mlp_ratio=2.0, **states))


def conditional(n_genes: int = 2000, n_tokens: int = 64):
    return ConditionalDiffusionModel(ConditionalConfig(
        backbone=MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=512, n_heads=8, n_kv_heads=1, n_layers=6)))


def conditional_tiny(n_genes: int = 2000, n_tokens: int = 64):
    return ConditionalDiffusionModel(ConditionalConfig(
        backbone=MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=64, n_heads=4, n_kv_heads=1, n_layers=2, mlp_ratio=2.0),
        gene_vocab=36_601, n_control_tokens=2, control_layers=1))


def moe17b(n_genes: int = 2000, n_tokens: int = 64, ep_size: int = 1):
    """24 dense + 12 MoE blocks (16 experts, top-2), width 3,072, 24 heads: ~17.7B parameters."""
    return MoEDiffusionModel(MoEConfig(n_genes=n_genes, n_tokens=n_tokens, ep_size=ep_size, checkpoint_activations=True))


def moe17b_tiny(n_genes: int = 2000, n_tokens: int = 64, ep_size: int = 1):
    """The same code at a few million parameters (4 dense + 2 MoE blocks of 4 experts) for CPU runs."""
    return MoEDiffusionModel(MoEConfig(n_genes=n_genes, n_tokens=n_tokens, ep_size=ep_size, dim=128, n_heads=4,
                                       n_kv_heads=4, n_layers=6, mlp_ratio=2.0, n_experts=4, lora_rank=4, cond_dim=32))


def conditional_seed(n_genes: int = 2000, n_tokens: int = 64):
    """Near the visualization seed's 24,752,265 parameters with our block design (adaLN + cross-attention):
    the 36,601-gene vocabulary kept, 384 wide, 3 layers, control set pooled without self-attention blocks."""
    return ConditionalDiffusionModel(ConditionalConfig(
        backbone=MiniConfig(n_genes=n_genes, n_tokens=n_tokens, dim=384, n_heads=8, n_kv_heads=1, n_layers=3), control_layers=0))


STATE_MODELS = ("mini", "mini-tiny")
"""The models that take ``n_states`` (cell-state conditioning, ``states.CellStates``)."""

MODELS = {"mini": mini, "mini-tiny": mini_tiny, "conditional": conditional, "conditional-tiny": conditional_tiny,
          "conditional-seed": conditional_seed, "moe17b": moe17b, "moe17b-tiny": moe17b_tiny}


def build_model(name: str, n_genes: int, n_tokens: int, n_states: int = 0, depth_bins: int = 1,
                tokenizer_max: float = 8.0, ep_size: int = 1, state_prior: bool = False):
    """``MODELS[name]`` with the options only some models take (cell states, expert parallelism)
    passed only when set, and a clear error when the model has no such option."""
    options: dict = {}
    if n_states:
        if name not in STATE_MODELS:
            raise ValueError(f"n_states={n_states}: {name} takes no cell states (only {', '.join(STATE_MODELS)})")
        options.update(n_states=n_states, depth_bins=depth_bins, tokenizer_max=tokenizer_max)
        if state_prior:
            options["state_prior"] = True
    elif state_prior:
        raise ValueError("state_prior needs cell states (n_states > 0)")
    if ep_size > 1:
        options["ep_size"] = ep_size
    return MODELS[name](n_genes=n_genes, n_tokens=n_tokens, **options)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "STATE_MODELS", "build_model", "ConditionalConfig", "ConditionalDiffusionModel", "MiniConfig", "MiniDiffusionModel",
           "MoEConfig", "MoEDiffusionModel",
           "count_parameters"]
