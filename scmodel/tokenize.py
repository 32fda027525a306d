"""Gene-value tokenizers: expression values -> integer tokens, and back for evaluation.

Token 0 always means "not expressed" (a zero count), so the models' masked-diffusion vocabulary
is ``[0, n_tokens)`` plus a mask token they add themselves.

* ``DirectTokenizer``: the raw count, clipped to ``n_tokens - 1`` (input: counts).
* ``LogScaleTokenizer``: ``round(log2(1 + count))`` clipped (input: counts); detokenize returns
  the bucket's centre count ``2**t - 1``.
* ``BinnedTokenizer``: normalized log1p values in ``n_tokens - 1`` bins (input: log1p data).
  ``edges="fixed"``: equal-width bins on ``[0, max_value]`` in log1p space, the same for every
  cell (absolute levels survive, so detokenize gives bin centres). ``edges="quantile"``: scGPT's
  per-cell binning, each cell's non-zero values split by their own quantiles (robust to depth
  and batch, but only ranks within a cell survive; detokenize needs the per-cell edges it
  returns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class DirectTokenizer:
    n_tokens: int = 64
    input: str = "counts"

    def tokenize(self, counts: torch.Tensor) -> torch.Tensor:
        return counts.round().clamp(0, self.n_tokens - 1).to(torch.long)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.to(torch.float32)


@dataclass(frozen=True, slots=True)
class LogScaleTokenizer:
    n_tokens: int = 16
    input: str = "counts"

    def tokenize(self, counts: torch.Tensor) -> torch.Tensor:
        return torch.log2(1 + counts.to(torch.float32).clamp_min(0)).round().clamp(0, self.n_tokens - 1).to(torch.long)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.exp2(tokens.to(torch.float32)) - 1


@dataclass(frozen=True, slots=True)
class BinnedTokenizer:
    n_tokens: int = 64
    edges: str = "fixed"
    max_value: float = 8.0
    """``fixed``: the top of the log1p range (log1p(1e4 * 0.3) ~ 8: a gene at 30% of a cell)."""
    input: str = "log1p"

    @property
    def elementwise(self) -> bool:
        """Fixed bins map each value on its own; quantile bins need the whole cell."""
        return self.edges == "fixed"

    def __post_init__(self) -> None:
        if self.edges not in ("fixed", "quantile"):
            raise ValueError(f"edges must be 'fixed' or 'quantile', got {self.edges!r}")
        if self.n_tokens < 3:
            raise ValueError("BinnedTokenizer needs at least 3 tokens")

    @property
    def n_bins(self) -> int:
        return self.n_tokens - 1

    def fixed_edges(self) -> torch.Tensor:
        return torch.linspace(0, self.max_value, self.n_bins + 1)[1:-1]

    def tokenize(self, values: torch.Tensor) -> torch.Tensor:
        values = values.to(torch.float32)
        if self.edges == "fixed":  # equal widths: arithmetic instead of a search (this runs per cell)
            width = self.max_value / self.n_bins
            tokens = torch.clamp((values / width).floor_(), 0, self.n_bins - 1).to(torch.long) + 1
        else:
            tokens = torch.zeros_like(values, dtype=torch.long)
            edges = self.cell_edges(values)
            for i in range(values.shape[0]):
                tokens[i] = torch.bucketize(values[i], edges[i, 1:-1], right=True) + 1
        return torch.where(values > 0, tokens, torch.zeros_like(tokens))

    def tokenize_positive(self, values: np.ndarray, dtype=np.uint8) -> np.ndarray:
        """``tokenize`` for an array of positive float32 values (a block's non-zeros), in numpy and
        in place: the loader's hot path. Same arithmetic as the torch version, so the same tokens."""
        if self.edges != "fixed":
            raise ValueError("per-cell quantile bins need whole cells, not a list of values")
        np.divide(values, np.float32(self.max_value / self.n_bins), out=values)
        np.floor(values, out=values)
        np.minimum(values, self.n_bins - 1, out=values)
        tokens = values.astype(dtype)
        tokens += 1
        return tokens

    def cell_edges(self, values: torch.Tensor) -> torch.Tensor:
        """Per-cell quantile edges of the non-zero values, shape (cells, n_bins + 1)."""
        q = torch.linspace(0, 1, self.n_bins + 1)
        out = torch.zeros(values.shape[0], self.n_bins + 1)
        for i, row in enumerate(values):
            nz = row[row > 0]
            if nz.numel():
                out[i] = torch.quantile(nz, q)
        return out

    def detokenize(self, tokens: torch.Tensor, edges: torch.Tensor | None = None) -> torch.Tensor:
        """Bin centres in log1p space (``edges`` from ``cell_edges`` for the quantile mode)."""
        if self.edges == "fixed":
            bounds = torch.linspace(0, self.max_value, self.n_bins + 1)
            centres = torch.cat([torch.zeros(1), (bounds[:-1] + bounds[1:]) / 2])
            return centres[tokens]
        if edges is None:
            raise ValueError("quantile tokens need the per-cell edges to detokenize")
        centres = torch.cat([torch.zeros(edges.shape[0], 1), (edges[:, :-1] + edges[:, 1:]) / 2], dim=1)
        return torch.gather(centres, 1, tokens)


TOKENIZERS = {"direct": DirectTokenizer, "logscale": LogScaleTokenizer, "binned": BinnedTokenizer}


def make_tokenizer(name: str, **kwargs):
    if name not in TOKENIZERS:
        raise ValueError(f"tokenizer {name!r} is not one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name](**kwargs)
