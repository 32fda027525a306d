"""Figures of a trained model (``--checkpoint``): attention maps of one cell, every layer."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from scmodel.diffusion import DiffusionConfig, corrupt

from .drawing import plt, save

MAP_POSITIONS = 128
"""Gene positions drawn per map (the first ones)."""


def _is_attention(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("q", "kv", "n_heads", "head_dim")) and isinstance(module.q, nn.Linear)


@torch.no_grad()
def attention_weights(model: nn.Module, tokens: torch.Tensor, t: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    """Head-averaged attention probabilities (queries x keys) of every attention module in one forward,
    recomputed from each module's own projections and inputs (the fused kernel does not return them)."""
    captured: dict[str, tuple] = {}
    handles = []
    for name, module in model.named_modules():
        if _is_attention(module):
            def hook(mod, args, kw, out, name=name):
                x = args[0]
                context = kw.get("context", args[1] if len(args) > 1 else None)
                captured[name] = (mod, x, x if context is None else context)
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        model(tokens, t, **kwargs)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, (mod, x, source) in captured.items():
        b, n, _ = x.shape
        kv_heads = getattr(mod, "n_kv", getattr(mod, "n_kv_heads", mod.n_heads))
        q = mod.q(x).view(b, n, mod.n_heads, mod.head_dim).transpose(1, 2)  # (B, h, N, hd)
        k = mod.kv(source).view(b, source.shape[1], 2, kv_heads, mod.head_dim)[:, :, 0].transpose(1, 2)
        k = k.repeat_interleave(mod.n_heads // kv_heads, dim=1)  # (B, h, S, hd)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(mod.head_dim), dim=-1)
        out[name] = probs[0].mean(dim=0)  # (N, S), first cell
    return out


def attention_maps(model: nn.Module, cell: torch.Tensor, mask_id: int, path: str, cell_id: str = "", t_value: float = 0.3,
                   gene_index: torch.Tensor | None = None) -> str:
    """One cell at t = ``t_value`` (partly masked, as in training): head-averaged maps of every
    attention module over the first ``MAP_POSITIONS`` positions."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([t_value])
    noisy, _ = corrupt(cell[None], t, DiffusionConfig(schedule="linear"), mask_id, gen)
    kwargs = {"gene_index": gene_index} if gene_index is not None else {}
    maps = attention_weights(model, noisy, t, **kwargs)
    model.train(was)
    names = list(maps)
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.3 * rows + 0.6), squeeze=False)
    for ax, name in zip(axes.flat, names):
        m = maps[name][:MAP_POSITIONS, :MAP_POSITIONS].numpy()
        im = ax.imshow(m, aspect="auto", cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"key ({'context token' if m.shape[1] < 32 else 'gene position'})", fontsize=8)
        ax.set_ylabel("query gene position", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    masked = int((noisy == mask_id).sum())
    fig.suptitle(f"Attention of one cell {cell_id} at t={t_value:g} ({masked} of {cell.numel()} positions masked; "
                 f"mean over heads; first {min(MAP_POSITIONS, cell.numel())} positions)", fontsize=12, weight="bold")
    fig.tight_layout()
    return save(fig, path)


def _expert_counts(name: str, module: nn.Module, out) -> torch.Tensor | None:
    """Tokens per expert from a routing module's output: a router's logits (a module named
    ``*router*``: top-1 of the last dimension) or the expert counts a MoE layer returns (DeepSpeed's
    ``MoE``/``TopKGate`` return them as a 1-D integer tensor)."""
    kind = type(module).__name__.lower()
    if "router" in name.rsplit(".", 1)[-1].lower() and isinstance(out, torch.Tensor) and out.shape[-1] >= 2:
        return torch.bincount(out.argmax(-1).flatten(), minlength=out.shape[-1])
    if ("moe" in kind or "gate" in kind) and isinstance(out, tuple):
        counts = [o for o in out if isinstance(o, torch.Tensor) and o.dim() == 1 and not o.is_floating_point() and len(o) >= 2]
        if counts:
            return counts[-1]
    return None


@torch.no_grad()
def expert_load(model: nn.Module, cells: torch.Tensor, mask_id: int, path: str, t_value: float = 0.3,
                gene_index: torch.Tensor | None = None) -> str | None:
    """Share of tokens each expert receives in every routing layer, for ``cells`` at t = ``t_value``;
    None (nothing written) when the model routes nothing."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(mod, args, out, name=name):
            counts = _expert_counts(name, mod, out)
            if counts is not None:
                found[name] = found.get(name, 0) + counts.detach().cpu().double()
        handles.append(module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        t = torch.full((len(cells),), t_value)
        noisy, _ = corrupt(cells, t, DiffusionConfig(schedule="linear"), mask_id, torch.Generator().manual_seed(0))
        model(noisy, t, **({"gene_index": gene_index} if gene_index is not None else {}))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    names = [n for n in found if not any(n.startswith(other + ".") for other in found)]  # a MoE layer, not its gate too
    if not names:
        return None
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows + 0.8), squeeze=False)
    for ax, name in zip(axes.flat, names):
        share = (found[name] / found[name].sum().clamp_min(1)).numpy()
        ax.bar(range(len(share)), share, color="#6aa84f")
        ax.axhline(1 / len(share), color="black", ls="--", lw=1, label="uniform")
        ax.set(title=name, xlabel="expert", ylabel="share of routed tokens")
        ax.set_xticks(range(len(share)))
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"Expert load: {len(cells)} cell(s) x {cells.shape[1]} positions at t={t_value:g} (top-1 / routed counts)",
                 fontsize=12, weight="bold")
    fig.tight_layout()
    return save(fig, path)
