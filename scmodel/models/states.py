"""Cell states: a k-means codebook of the training cells, the discrete latent a state-conditioned
diffusion model generates from.

Why: on 2 CPU cores a small masked-diffusion model learns each gene's distribution given the
others, but sampling from a fully masked cell it commits to a cell type only gene by gene, and
its cells come out as blends of types (more genes expressed than in any real cell, too little
spread between cells). Generation as ``p(x) = sum_s p(s) p(x | s)`` takes that decision first:
a state ``s`` is drawn from the training cells' state frequencies, and the model, given the
state's embedding, generates the cell's genes. The states are k-means clusters of the training
cells on their principal components (what the field calls cell types, found without labels);
a cell's state is a function of its own clean tokens, so training needs no labels either.

The codebook lives in the model as buffers (saved with the weights): the bin centre of every
token, the PCA mean and components, the centroids and the training cells per state; with
``prior``, also each state's token frequencies per gene (``token_log_prior``), which a model with
``MiniConfig.state_prior`` adds to its logits, so that the network learns only what a state's
independent per-gene distributions miss (co-expression within the state).
``assign`` maps clean token cells to states (training), ``draw`` samples states for generation.
The model also learns a "no state" embedding (``MiniConfig.state_dropout`` of training cells): a call
without states (a figure, a held-out loss) is the unconditional model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


PRIOR_PSEUDOCELLS = 5.0
"""Smoothing of a state's token frequencies towards all cells' (in cells' worth of weight): a state
of few cells does not get probability 0 for a token its cells happen not to show."""


def fit_states(values: np.ndarray, n_states: int, n_components: int = 30, seed: int = 0,
               depth_bins: int = 1, tokens: np.ndarray | None = None, n_tokens: int = 0) -> dict[str, np.ndarray]:
    """The codebook of ``values`` (cells, genes; the bin centres of the cells' tokens): PCA
    (``n_components``) then k-means (``n_states`` clusters, at least 10 cells per cluster), and the
    ``depth_bins`` quantile bins of the cells' detected genes. Returns the arrays
    ``CellStates.load_codebook`` takes: ``mean`` (genes,), ``components`` (n_components, genes),
    ``centroids`` (n_states, n_components), ``depth_edges`` (depth_bins - 1,) and ``counts``
    (n_states * depth_bins,), the cells of each (cluster, depth bin). Given the cells' ``tokens``
    (< ``n_tokens``), also ``token_log_prior`` (n_states * depth_bins + 1, genes, n_tokens): the log
    frequency of each token of each gene among the state's cells, smoothed towards all cells'
    (``PRIOR_PSEUDOCELLS``); the last row, all cells' (the "no state" prior)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    values = np.asarray(values, dtype=np.float64)
    n, genes = values.shape
    if n < n_states * 10:
        raise ValueError(f"{n_states} cell states need at least {n_states * 10} training cells (10 per state); "
                         f"got {n}: lower n_states")
    pca = PCA(n_components=min(n_components, n, genes), random_state=seed).fit(values)
    scores = pca.transform(values)
    kmeans = KMeans(n_clusters=n_states, n_init=3, random_state=seed).fit(scores)
    pad = n_components - pca.n_components_  # fewer genes or cells than components: zero directions
    detected = (values > 0).sum(axis=1)
    depth_edges = np.quantile(detected, np.arange(1, depth_bins) / depth_bins)
    depth = np.searchsorted(depth_edges, detected, side="right")
    labels = kmeans.labels_ * depth_bins + depth
    codebook = {"mean": pca.mean_, "components": np.pad(pca.components_, ((0, pad), (0, 0))),
                "centroids": np.pad(kmeans.cluster_centers_, ((0, 0), (0, pad))), "depth_edges": depth_edges,
                "counts": np.bincount(labels, minlength=n_states * depth_bins).astype(np.float64)}
    if tokens is not None:
        codebook["token_log_prior"] = token_log_prior(np.asarray(tokens), labels, n_states * depth_bins, n_tokens)
    return codebook


def token_log_prior(tokens: np.ndarray, labels: np.ndarray, n_states: int, n_tokens: int,
                    pseudocells: float = PRIOR_PSEUDOCELLS) -> np.ndarray:
    """(n_states + 1, genes, n_tokens) log frequencies of each gene's tokens among each state's
    cells, ``(count + pseudocells * overall) / (cells + pseudocells)``; the last row is the overall
    frequency (every cell)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n, genes = tokens.shape
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n_tokens):
        raise ValueError(f"token_log_prior: tokens must lie in [0, {n_tokens}), got {tokens.min()}..{tokens.max()}")
    # one bincount over (state, gene, token) triples
    flat = (labels[:, None] * genes + np.arange(genes)[None, :]) * n_tokens + tokens
    counts = np.bincount(flat.ravel(), minlength=n_states * genes * n_tokens).reshape(n_states, genes, n_tokens)
    overall = counts.sum(axis=0) / max(n, 1)  # (genes, n_tokens)
    cells = counts.sum(axis=2, keepdims=True)  # (n_states, genes, 1): the state's cells
    per_state = (counts + pseudocells * overall) / (cells + pseudocells)
    return np.log(np.concatenate([per_state, overall[None]], axis=0).clip(1e-8)).astype(np.float32)


class CellStates(nn.Module):
    """The codebook as buffers, with ``assign`` (token cells -> states) and ``draw`` (states for
    generated cells, in proportion to the training cells of each).

    A state is a (cluster, depth bin) pair, numbered ``cluster * depth_bins + bin``: with
    ``depth_bins`` > 1 the cell's depth, as the number of genes it expresses, is part of what is
    drawn first. Why: a model that infers the depth from the genes it has sampled so far drifts
    (each expressed gene makes the next more likely) and ends with cells that express more genes
    than real ones; given the depth, it need not infer it."""

    def __init__(self, n_states: int, n_genes: int, n_tokens: int, max_value: float, n_components: int = 30,
                 depth_bins: int = 1, prior: bool = False):
        super().__init__()
        if n_states < 2 or depth_bins < 1:
            raise ValueError(f"n_states must be at least 2 and depth_bins at least 1, got {n_states}, {depth_bins}")
        self.n_clusters, self.depth_bins = n_states, depth_bins
        self.n_states = n_states * depth_bins
        # bin centres of the fixed log1p bins, as ``BinnedTokenizer.detokenize`` gives them (the networks
        # sit beside the tokenizer, not above it, so it is not imported); the mask token last, never assigned
        bounds = torch.linspace(0, max_value, n_tokens)
        centres = torch.cat([torch.zeros(1), (bounds[:-1] + bounds[1:]) / 2, torch.zeros(1)])
        self.register_buffer("centres", centres)
        self.register_buffer("mean", torch.zeros(n_genes))
        self.register_buffer("components", torch.zeros(n_components, n_genes))
        self.register_buffer("centroids", torch.zeros(n_states, n_components))
        self.register_buffer("depth_edges", torch.zeros(depth_bins - 1))
        self.register_buffer("counts", torch.zeros(n_states * depth_bins))
        self.prior = prior
        self._fitted = False  # kept on the host: a check per training step must not wait on the device
        if prior:  # (states + "no state", genes, value tokens): each state's token log-frequencies
            self.register_buffer("token_log_prior", torch.zeros(self.n_states + 1, n_genes, n_tokens))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "depth_edges"  # a codebook saved before depth bins existed had none (one bin)
        if key not in state_dict and self.depth_bins == 1:
            state_dict[key] = torch.zeros(0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._fitted = bool(self.counts.sum() > 0)

    @property
    def fitted(self) -> bool:
        return self._fitted

    def load_codebook(self, codebook: dict[str, np.ndarray]) -> None:
        """Fill the buffers from ``fit_states``'s arrays (their shapes must match this model's)."""
        names = ("mean", "components", "centroids", "depth_edges", "counts") + (("token_log_prior",) if self.prior else ())
        for name in names:
            if name not in codebook:
                raise ValueError(f"cell-state codebook: no {name} (a state prior needs the cells' tokens)")
            buffer = getattr(self, name)
            value = torch.as_tensor(np.asarray(codebook[name]), dtype=buffer.dtype)
            if value.shape != buffer.shape:
                raise ValueError(f"cell-state codebook: {name} has shape {tuple(value.shape)}, the model expects "
                                 f"{tuple(buffer.shape)}")
            buffer.copy_(value.to(buffer.device))
        self._fitted = bool(self.counts.sum() > 0)

    @torch.no_grad()
    def assign(self, tokens: torch.Tensor) -> torch.Tensor:
        """(cells,) the nearest state of each clean token cell (cells, genes), in float32."""
        if not self.fitted:
            raise RuntimeError("the cell-state codebook is empty: fit it (scmodel.run.states) before training")
        tokens = tokens.long()
        values = self.centres[tokens].float()
        scores = (values - self.mean) @ self.components.T
        cluster = torch.cdist(scores, self.centroids).argmin(dim=1)
        detected = (tokens > 0).sum(dim=1).to(self.depth_edges.dtype)
        return cluster * self.depth_bins + torch.bucketize(detected, self.depth_edges, right=True)

    def log_prior(self, state: torch.Tensor, gene_index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, n_tokens) the states' token log-frequencies (``state`` = ``n_states``: no state),
        at the ``gene_index`` positions (default: every gene)."""
        prior = self.token_log_prior[state]
        return prior if gene_index is None else prior[:, gene_index]

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) states drawn with the training cells' state frequencies (on the CPU, like the
        sampler's other draws, so a seed gives the same cells on any device)."""
        if not self.fitted:
            raise RuntimeError("the cell-state codebook is empty: this model was never fitted to training cells")
        return torch.multinomial(self.counts.float().cpu(), n, replacement=True, generator=generator)
