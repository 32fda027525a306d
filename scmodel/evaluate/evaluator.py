"""The held-out evaluation of a training run, shared by the ``Trainer`` (every ``eval_every``
steps) and ``python -m scmodel.evaluate`` (a saved checkpoint): which cells it reads, once, and
which baselines it builds from the training cells, once."""

from __future__ import annotations

import dataclasses

import torch

from .heldout import SampleConfig, evaluate, gene_marginals


class HeldOutEvaluator:
    """Reads ``eval_batches`` held-out batches and a training-cell reference on first use, then
    evaluates any model on them (the same cells every time, so evaluations of one run compare)."""

    def __init__(self, config, train_data, val_data, tokenizer, device, max_train_cells: int = 65_536,
                 pca_cells: int = 2048):
        """``config``: the run's ``TrainConfig``; ``train_data`` / ``val_data``: the ``LoaderConfig``
        of its training and validation splits."""
        self.config, self.train_data, self.val_data = config, train_data, val_data
        self.tokenizer, self.device = tokenizer, device
        self.max_train_cells, self.pca_cells = max_train_cells, pca_cells
        self._held_out: list[torch.Tensor] | None = None
        self._marginals: torch.Tensor | None = None
        self._train_cells: torch.Tensor | None = None

    def _read(self, data, max_cells: int) -> list[torch.Tensor]:
        from ..data import StoreDataLoader, StoreDataset

        loader = StoreDataLoader(StoreDataset(dataclasses.replace(data, shuffle=True, drop_last=False)))
        loader.set_epoch(0)
        batches, n = [], 0
        for tokens, _ in loader:
            batches.append(tokens.long())
            n += len(tokens)
            if n >= max_cells:
                break
        return batches

    def held_out(self) -> list[torch.Tensor]:
        """``eval_batches`` batches of held-out cells, block-shuffled with the run's seed so that
        they span the held-out experiments."""
        if self._held_out is None:
            self._held_out = self._read(self.val_data, self.config.eval_batches * self.config.batch_size)
        return self._held_out

    def training_reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-gene token frequencies over up to ``max_train_cells`` shuffled training cells (the
        per-gene majority / marginal baselines), and ``pca_cells`` of those cells (the PCA space
        of the sample metrics)."""
        if self._marginals is None:
            seen = self._read(self.train_data, self.max_train_cells)
            self._marginals = gene_marginals(seen, seen[0].shape[1], self.config.n_tokens)
            self._train_cells = torch.cat(seen)[: self.pca_cells]
        return self._marginals, self._train_cells

    def share_from(self, src: int) -> None:
        """Read the cells on rank ``src`` and give every rank the same ones (a collective: every
        rank calls it), for models whose forward passes are collectives (expert parallelism)."""
        import torch.distributed as dist

        payload = [self.held_out(), *self.training_reference()] if dist.get_rank() == src else [None, None, None]
        dist.broadcast_object_list(payload, src=src)
        self._held_out, self._marginals, self._train_cells = payload

    def __call__(self, model, with_samples: bool = True, sampling: SampleConfig | None = None,
                 seed: int | None = None) -> dict:
        """Evaluate ``model``; ``sampling`` overrides the run's sampler settings, ``seed`` the run's
        seed for the sampler and the split of the held-out cells into reference and floor halves
        (the held-out cells themselves stay the run's)."""
        cfg = self.config
        val = self.held_out()
        marginals, train_cells = self.training_reference()
        genes = val[0].shape[1]
        gene_index = None
        if cfg.context_genes and cfg.context_genes < genes:  # a fixed subset of positions, the same every time
            gene_index = torch.randperm(genes, generator=torch.Generator().manual_seed(cfg.seed))[
                : cfg.context_genes].sort().values
            val = [v[:, gene_index] for v in val]
            marginals, train_cells = marginals[gene_index], train_cells[:, gene_index]
            gene_index = gene_index.to(self.device)
        if with_samples and sampling is None:
            sampling = SampleConfig(steps=cfg.sample_steps, order=cfg.sample_order, temperature=cfg.sample_temperature,
                                    top_p=cfg.sample_top_p)
        elif not with_samples:
            sampling = None
        return evaluate(model, val, marginals, cfg.diffusion, cfg.n_tokens, self.tokenizer,
                        seed=cfg.seed if seed is None else seed,
                        device=self.device, gene_index=gene_index, train_cells=train_cells, sampling=sampling)
