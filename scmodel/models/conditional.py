"""The conditional diffusion transformer of the model-visualization seed: the mini backbone with
multi-query self-attention plus cross-attention to conditioning tokens from

* a perturbation encoder: target gene (36,601-gene vocabulary + "none"), sign (-1 knockdown,
  0 control, +1 activation) and continuous log2 fold change -> three tokens;
* a control-set encoder: a set transformer over a set of control cells' expression (self-
  attention blocks, then pooling by attention into ``n_control_tokens`` tokens).

Each gene's token also receives a gene-by-perturbation term (the gene's embedding gated by a
projection of the perturbation's code, zero at initialization), a direct path for "perturbation
p moves gene g" that attention to a handful of context tokens learns only slowly. The
perturbation's tokens, summed, also join the timestep embedding that modulates every block
(adaLN, as DiT conditions on a class), so every gene position sees the perturbation directly.
When the target is one of the modelled genes (``target_column``: its column among them), its
token also carries a learned "perturbed" embedding for the sign, scaled with the log2 fold change,
like scGPT's perturbation flags: the model need not discover through cross-attention alone which
of its positions a target gene is.

Without conditioning inputs the model uses learned "none" tokens, so it also runs unconditionally.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .layers import Attention, Block, BlockConfig
from .mini import Backbone, MiniConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class ConditionalConfig:
    backbone: MiniConfig = MiniConfig(n_kv_heads=1)
    gene_vocab: int = 36_601
    n_control_tokens: int = 4
    control_layers: int = 2
    response_rank: int = 32
    """Rank of the gene x perturbation term and of the perturbation's adaLN projection."""

    @property
    def mask_id(self) -> int:
        return self.backbone.mask_id


class PerturbationEncoder(nn.Module):
    def __init__(self, gene_vocab: int, dim: int):
        super().__init__()
        self.gene = nn.Embedding(gene_vocab + 1, dim)  # last index: no target (control / unconditional)
        self.sign = nn.Embedding(3, dim)
        self.magnitude = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.none_index = gene_vocab

    def forward(self, target_gene: torch.Tensor, sign: torch.Tensor, log2fc: torch.Tensor) -> torch.Tensor:
        gene = torch.where(target_gene < 0, torch.full_like(target_gene, self.none_index), target_gene)
        tokens = [self.gene(gene), self.sign(sign.long() + 1), self.magnitude(log2fc.float().unsqueeze(-1))]
        return torch.stack(tokens, dim=1)  # (B, 3, D)


class ControlSetEncoder(nn.Module):
    """Permutation-invariant encoding of a set of control cells (set transformer, SAB + PMA)."""

    def __init__(self, n_genes: int, dim: int, n_heads: int, n_tokens: int, n_layers: int):
        super().__init__()
        cfg = BlockConfig(dim=dim, n_heads=n_heads, n_kv_heads=n_heads)
        self.embed = nn.Linear(n_genes, dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(n_layers))
        self.seeds = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        self.pool = Attention(cfg)
        self.none = nn.Parameter(torch.zeros(1, n_tokens, dim))

    def forward(self, control: torch.Tensor | None, batch: int) -> torch.Tensor:
        if control is None:
            return self.none.expand(batch, -1, -1)
        x = self.embed(control.float())  # (B, S, D)
        zero_t = torch.zeros(x.shape[0], x.shape[-1], device=x.device)
        for block in self.blocks:
            x = block(x, zero_t)
        return self.pool(self.seeds.expand(x.shape[0], -1, -1), context=x)  # (B, k, D)


class ConditionalDiffusionModel(nn.Module):
    conditioning_prefixes = ("perturbation.", "control.", "condition.", "response_gene.", "response_in.", "response_out.", "target_flag.",
                             "target_scale")
    """Parameters of the conditioning path (the rest is the backbone a pretraining run trains)."""

    def __init__(self, cfg: ConditionalConfig):
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        self.backbone = Backbone(b, cross_attention=True)
        self.perturbation = PerturbationEncoder(cfg.gene_vocab, b.dim)
        self.control = ControlSetEncoder(b.n_genes, b.dim, b.n_heads, cfg.n_control_tokens, cfg.control_layers)
        r = cfg.response_rank
        self.condition = nn.Sequential(nn.Linear(b.dim, r), nn.SiLU(), nn.Linear(r, b.dim))
        nn.init.zeros_(self.condition[-1].weight)  # starts as the unconditional model
        nn.init.zeros_(self.condition[-1].bias)
        # gene x perturbation interaction (rank r): each gene's embedding, gated by the perturbation's code
        self.response_gene = nn.Linear(b.dim, r, bias=False)
        self.response_in = nn.Linear(b.dim, r)
        self.response_out = nn.Linear(r, b.dim)
        nn.init.zeros_(self.response_out.weight)  # starts as the unconditional model
        nn.init.zeros_(self.response_out.bias)
        self.target_flag = nn.Embedding(3, b.dim)  # by sign + 1
        self.target_scale = nn.Parameter(torch.zeros(b.dim))
        nn.init.normal_(self.target_flag.weight, std=0.02)

    def context(self, batch: int, device, target_gene=None, sign=None, log2fc=None, control=None) -> torch.Tensor:
        if target_gene is None:
            target_gene = torch.full((batch,), -1, dtype=torch.long, device=device)
        sign = torch.zeros(batch, dtype=torch.long, device=device) if sign is None else sign
        log2fc = torch.zeros(batch, device=device) if log2fc is None else log2fc
        return torch.cat([self.perturbation(target_gene, sign, log2fc), self.control(control, batch)], dim=1)

    def freeze_base(self) -> None:
        """Train only the conditioning path (the backbone keeps its pretrained weights)."""
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith(self.conditioning_prefixes))

    def target_bias(self, tokens, gene_index, target_column, sign, log2fc) -> torch.Tensor | None:
        """(B, L, D): the flag on the target's own token, zero elsewhere (None: no target modelled)."""
        if target_column is None or not bool((target_column >= 0).any()):
            return None
        positions = self.backbone.positions(tokens, gene_index)
        hit = (positions.unsqueeze(0) == target_column.unsqueeze(1)).to(self.target_scale.dtype)  # (B, L)
        sign = torch.zeros_like(target_column) if sign is None else sign.long()
        fc = torch.zeros(tokens.shape[0], device=tokens.device) if log2fc is None else log2fc.float()
        flag = self.target_flag(sign + 1) + fc.unsqueeze(1) * self.target_scale  # (B, D)
        return hit.unsqueeze(-1) * flag.unsqueeze(1)

    def forward(self, tokens: torch.Tensor, t: torch.Tensor, target_gene=None, sign=None, log2fc=None,
                control=None, gene_index: torch.Tensor | None = None, target_column=None) -> torch.Tensor:
        context = self.context(tokens.shape[0], tokens.device, target_gene, sign, log2fc, control)
        bias = self.target_bias(tokens, gene_index, target_column, sign, log2fc)
        code = context[:, :3].sum(dim=1)  # the perturbation's three tokens
        genes = self.backbone.gene_emb(self.backbone.positions(tokens, gene_index))  # (L, D)
        response = self.response_out(self.response_gene(genes).unsqueeze(0) * self.response_in(code).unsqueeze(1))
        bias = response if bias is None else bias + response
        condition = self.condition(code)
        return self.backbone(tokens, t, context, gene_index=gene_index, position_bias=bias, condition=condition)
