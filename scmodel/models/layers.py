"""Shared transformer pieces: timestep embedding, multi-query self-attention, cross-attention,
MLP and the block that combines them. Every module takes one config dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockConfig:
    dim: int = 512
    n_heads: int = 8
    n_kv_heads: int = 8
    """1 gives multi-query attention (one shared key/value head), as in the conditional model."""
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    cross_attention: bool = False

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"dim {self.dim} / heads {self.n_heads} / kv heads {self.n_kv_heads} do not divide")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled to 1000 steps as in DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000).unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Attention(nn.Module):
    """Self- or cross-attention with ``n_kv_heads`` key/value heads (grouped / multi-query)."""

    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.dim // cfg.n_heads
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.kv = nn.Linear(cfg.dim, 2 * self.n_kv * self.head_dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        source = x if context is None else context
        q = self.q(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)  # (B, h, N, hd)
        k, v = self.kv(source).view(b, source.shape[1], 2, self.n_kv, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.n_kv != self.n_heads:  # share each key/value head across a group of query heads
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, cfg: BlockConfig):
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.up = nn.Linear(cfg.dim, hidden)
        self.down = nn.Linear(hidden, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm block; the timestep modulates each sub-layer (adaLN, as in DiT)."""

    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.attn = Attention(cfg)
        self.cross = Attention(cfg) if cfg.cross_attention else None
        self.norm_c = nn.LayerNorm(cfg.dim) if cfg.cross_attention else None
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.mlp = MLP(cfg)
        self.modulation = nn.Linear(cfg.dim, 6 * cfg.dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(t_emb).unsqueeze(1).chunk(6, dim=-1)
        x = x + (1 + gate1) * self.attn(self.norm1(x) * (1 + scale1) + shift1)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm_c(x), context)
        return x + (1 + gate2) * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
