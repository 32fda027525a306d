"""The mini discrete diffusion transformer: one token per gene position (HVGs), gene identity +
value token + timestep, predicting the original value token at masked positions; optionally
conditioned on a cell state (``n_states``: ``states.CellStates``), drawn before the genes when it
generates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .layers import Block, BlockConfig, timestep_embedding
from .states import CellStates


@dataclass(frozen=True, kw_only=True, slots=True)
class MiniConfig:
    n_genes: int = 2000
    """Sequence length: the gene positions (the HVGs) each cell is a sequence of."""
    n_tokens: int = 64
    """Value vocabulary; the mask token is ``n_tokens``."""
    dim: int = 512
    n_heads: int = 8
    n_kv_heads: int = 8
    n_layers: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    n_states: int = 0
    """Cell-state clusters the model is conditioned on (0: none, an unconditional model)."""
    depth_bins: int = 1
    """Depth bins (genes detected) crossed with the clusters: ``n_states * depth_bins`` states."""
    state_dropout: float = 0.1
    """Share of training cells shown without their state, so that the model also learns the
    unconditional distribution (its "no state" embedding) for calls that pass none."""
    state_prior: bool = False
    """Add the drawn state's token log-frequencies of each gene (``CellStates.log_prior``) to the
    logits: the network starts from the mixture of independent genes within states and learns the
    rest (a state model only)."""
    tokenizer_max: float = 8.0
    """The fixed log1p bins' top (``BinnedTokenizer.max_value``), for the states' bin centres."""

    @property
    def mask_id(self) -> int:
        return self.n_tokens

    def block(self, cross_attention: bool = False) -> BlockConfig:
        return BlockConfig(dim=self.dim, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, mlp_ratio=self.mlp_ratio,
                           dropout=self.dropout, cross_attention=cross_attention)


class Backbone(nn.Module):
    """Embeddings, blocks and the output head shared by the mini and conditional models."""

    def __init__(self, cfg: MiniConfig, cross_attention: bool = False):
        super().__init__()
        self.cfg = cfg
        self.token_emb = nn.Embedding(cfg.n_tokens + 1, cfg.dim)  # + mask token
        self.gene_emb = nn.Embedding(cfg.n_genes, cfg.dim)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg.block(cross_attention)) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.n_tokens)
        nn.init.normal_(self.token_emb.weight, std=0.02)
        nn.init.normal_(self.gene_emb.weight, std=0.02)

    def positions(self, tokens: torch.Tensor, gene_index: torch.Tensor | None) -> torch.Tensor:
        return torch.arange(tokens.shape[1], device=tokens.device) if gene_index is None else gene_index

    def forward(self, tokens: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                gene_index: torch.Tensor | None = None, position_bias: torch.Tensor | None = None,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """``gene_index`` (L,): which gene positions the L tokens are (a random subset when
        training on subsampled context); default: all ``n_genes`` in order. ``position_bias``
        (B, L, D) is added to the token embeddings (e.g. a flag on a perturbed gene); ``condition``
        (B, D) to the timestep embedding that modulates every block (DiT's class conditioning)."""
        positions = self.positions(tokens, gene_index)
        x = self.token_emb(tokens) + self.gene_emb(positions).unsqueeze(0)  # (B, L, D)
        if position_bias is not None:
            x = x + position_bias
        t_emb = self.time_mlp(timestep_embedding(t, self.cfg.dim))  # (B, D)
        if condition is not None:
            t_emb = t_emb + condition
        for block in self.blocks:
            x = block(x, t_emb, context)
        return self.head(self.norm(x))  # (B, G, n_tokens)


class MiniDiffusionModel(nn.Module):
    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        if cfg.n_states:
            self.cell_states = CellStates(cfg.n_states, cfg.n_genes, cfg.n_tokens, cfg.tokenizer_max,
                                          depth_bins=cfg.depth_bins, prior=cfg.state_prior)
            # a state's cluster and depth bin have an embedding each (summed), the last of each: no state
            self.cluster_emb = nn.Embedding(cfg.n_states + 1, cfg.dim)
            self.depth_emb = nn.Embedding(cfg.depth_bins + 1, cfg.dim)
            nn.init.normal_(self.cluster_emb.weight, std=0.02)
            nn.init.normal_(self.depth_emb.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, t: torch.Tensor, gene_index: torch.Tensor | None = None,
                state: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        """``state`` (B,): each cell's state (``cell_states.assign`` of its clean tokens when training,
        ``cell_states.draw`` when generating); None on a state model: the "no state" embedding. In
        training mode a ``state_dropout`` share of the given states is replaced by "no state"."""
        condition = None
        if self.cfg.n_states:
            none = torch.full((tokens.shape[0],), self.cell_states.n_states, dtype=torch.long, device=tokens.device)
            if state is None:
                state = none
            elif self.training and self.cfg.state_dropout > 0:
                drop = torch.rand(state.shape, device=state.device) < self.cfg.state_dropout
                state = torch.where(drop, none, state)
            state = state.to(tokens.device)
            cluster = torch.where(state == none, self.cfg.n_states, state // self.cfg.depth_bins)
            depth = torch.where(state == none, self.cfg.depth_bins, state % self.cfg.depth_bins)
            condition = self.cluster_emb(cluster) + self.depth_emb(depth)
        elif state is not None:
            raise ValueError("this model has no cell states (n_states=0); it takes no state")
        logits = self.backbone(tokens, t, gene_index=gene_index, condition=condition)
        if self.cfg.state_prior and self.cfg.n_states:
            logits = logits + self.cell_states.log_prior(state, gene_index).to(logits.dtype)
        return logits
