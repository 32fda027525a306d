"""Model visualizations from the live model (``python -m scmodel.viz``): configuration, architecture,
attention, conditioning, diffusion process, parameters and compute, for any model in
``scmodel.models.MODELS``. Every number is read from the module tree, measured with
``torch.utils.flop_counter``, or read from a store; see ``FILES`` for what is written."""

from __future__ import annotations

import inspect as pyinspect
import os
from dataclasses import dataclass, field

import torch

FILES = ("model_config.json", "model_config.txt", "architecture_overview.png", "layer_breakdown.png",
         "forward_pass_flow.png", "attention_mechanism.png", "conditioning_pipeline.png", "diffusion_process.png",
         "parameter_breakdown.png", "parameter_breakdown.txt", "computational_analysis.png", "computational_analysis.txt")
TRAINED_FILES = ("attention_maps.png",)
ROUTED_FILES = ("expert_load.png",)
"""With a checkpoint of a model that routes tokens to experts."""


@dataclass
class Loaded:
    name: str
    model: torch.nn.Module
    factory_kwargs: dict
    train_config: dict = field(default_factory=dict)
    checkpoint: str | None = None


def _n_genes_from_state(factory, state: dict, n_tokens: int) -> int | None:
    """The gene positions a checkpoint was trained on: build the model at two sizes on the meta
    device, find a tensor whose shape follows ``n_genes``, read it from the checkpoint."""
    from .compute import meta_model

    a = meta_model(factory, n_genes=1000, n_tokens=n_tokens).state_dict()
    b = meta_model(factory, n_genes=1001, n_tokens=n_tokens).state_dict()
    for key, ta in a.items():
        tb = b[key]
        for dim, (sa, sb) in enumerate(zip(ta.shape, tb.shape)):
            if sb - sa == 1 and key in state:
                return int(state[key].shape[dim]) - sa + 1000
    return None  # no parameter's shape follows n_genes: the factory's default (or the train config's) holds


MAX_BYTES = 8 * 2**30
"""Largest model (fp32 weights) built for real here; the measurements run real passes."""


def _check_size(name: str, factory, **kwargs) -> None:
    from scmodel.models import count_parameters

    from .compute import meta_model

    n = count_parameters(meta_model(factory, **kwargs))
    if 4 * n > MAX_BYTES:
        raise SystemExit(f"{name}: {n:,} parameters ({4 * n / 2**30:.1f} GiB in fp32) is too large to build and run on "
                         f"this machine; draw its tiny variant, or count its cost on the meta device (scmodel.plan)")


def load_model(config: str | None, checkpoint: str | None = None) -> Loaded:
    """A model by registry name (its factory's defaults), or a trained one from ``checkpoint.pt``."""
    from scmodel.models import MODELS

    if checkpoint is None:
        if config not in MODELS:
            raise SystemExit(f"--config {config!r} is not one of {', '.join(MODELS)}")
        _check_size(config, MODELS[config])
        torch.manual_seed(0)
        return Loaded(config, MODELS[config](), {})
    from scmodel.engines.state import safe_load

    state = safe_load(checkpoint, map_location="cpu")  # weights-only: a checkpoint runs no code
    train = state.get("config", {})
    name = train.get("model", config)
    if config and name != config:
        raise SystemExit(f"--config {config} but {checkpoint} holds a {name} model: drop --config or pick {name}")
    if name not in MODELS:
        raise SystemExit(f"{checkpoint}: model {name!r} is not in scmodel.models.MODELS")
    n_tokens = train.get("n_tokens", 64)
    kwargs = {"n_tokens": n_tokens}
    n_genes = _n_genes_from_state(MODELS[name], state["model"], n_tokens) or train.get("n_hvgs")
    if n_genes:
        kwargs["n_genes"] = n_genes
    if train.get("n_states"):  # a model with cell states: its codebook comes back with the weights
        kwargs.update(n_states=train["n_states"], depth_bins=train.get("state_depth_bins", 1),
                      tokenizer_max=train.get("tokenizer_max", 8.0), state_prior=train.get("state_prior", False))
    _check_size(name, MODELS[name], **kwargs)
    model = MODELS[name](**kwargs)
    model.load_state_dict(state["model"])
    summary = {k: v for k, v in train.items() if not isinstance(v, (list, dict)) or k == "diffusion"}
    summary["step"] = state.get("step")
    return Loaded(name, model, kwargs, summary, checkpoint)


def visualize(config: str | None, out: str, checkpoint: str | None = None, store: str | None = None, batch: int = 1,
              genes: int | None = None, sample_cells: int = 4, sample_genes: int = 256, sweeps: bool = True,
              echo=print) -> list[str]:
    """Write ``FILES`` (and ``TRAINED_FILES`` with a checkpoint) into ``out``; returns the paths."""
    from scmodel.diffusion import DiffusionConfig
    from scmodel.models import MODELS
    from scmodel.tokenize import BinnedTokenizer

    from .analysis import analyze
    from .analysis_plots import computational_analysis, parameter_breakdown
    from .diagrams import write_diagrams
    from .process import diffusion_process, store_cells
    from .report import write_text_files

    os.makedirs(out, exist_ok=True)
    loaded = load_model(config, checkpoint)
    model, name = loaded.model, loaded.name
    echo(f"{name}: measuring on {batch} cell(s) x {genes or 'all'} gene positions")
    a = analyze(name, model, MODELS[name], loaded.factory_kwargs, batch=batch, genes=genes, sweeps=sweeps)
    if loaded.checkpoint:
        a.extra["checkpoint"] = {"path": loaded.checkpoint, **{k: v for k, v in loaded.train_config.items() if k != "diffusion"}}
    train = loaded.train_config
    diffusion = DiffusionConfig(**train["diffusion"]) if isinstance(train.get("diffusion"), dict) else DiffusionConfig()
    a.extra["diffusion"] = {"schedule": diffusion.schedule, "timesteps": diffusion.timesteps, "max_mask": diffusion.max_mask,
                            "elbo_weighting": diffusion.elbo_weighting}
    tokenizer = BinnedTokenizer(n_tokens=a.n_tokens, max_value=train.get("tokenizer_max", 8.0))
    cells = ids = None
    if store:
        split = {"split": "val", "val_fraction": train.get("val_fraction", 0.15), "seed": train.get("seed", 0),
                 "split_by": train.get("split_by", "experiment")} if checkpoint else {}
        cells, ids = store_cells(store, min(a.n_genes, sample_genes), a.n_tokens, sample_cells,
                                 tokenizer_max=tokenizer.max_value, **split)
        a.extra["store"] = {"path": store, "cells_shown": ids, "gene_positions": int(cells.shape[1])}
    paths = write_text_files(a, out)
    paths += write_diagrams(a, out)
    paths.append(parameter_breakdown(a, os.path.join(out, "parameter_breakdown.png")))
    paths.append(computational_analysis(a, os.path.join(out, "computational_analysis.png")))
    paths.append(diffusion_process(model, diffusion, find_mask_id(a), tokenizer.detokenize,
                                   os.path.join(out, "diffusion_process.png"), cells=cells, cell_ids=ids,
                                   n_cells=sample_cells, sample_genes=min(a.n_genes, sample_genes), source=store or ""))
    if checkpoint:
        from .process import run_sampler
        from .trained import attention_maps, expert_load

        cell = cells[0] if cells is not None else run_sampler(model, 1, min(a.n_genes, sample_genes), 10, find_mask_id(a)).states[-1][0]
        accepts = "gene_index" in pyinspect.signature(model.forward).parameters
        gene_index = torch.arange(len(cell)) if len(cell) < a.n_genes and accepts else None
        paths.append(attention_maps(model, cell, find_mask_id(a), os.path.join(out, "attention_maps.png"),
                                    cell_id=ids[0] if ids else "(sampled)", gene_index=gene_index))
        routed = expert_load(model, cells if cells is not None else cell[None], find_mask_id(a),
                             os.path.join(out, "expert_load.png"), gene_index=gene_index)
        paths += [routed] if routed else []
    for p in paths:
        echo(f"  wrote {p}")
    return paths


def find_mask_id(a) -> int:
    from .inspect import find_value

    return int(find_value(a.config, "mask_id", a.n_tokens))


__all__ = ["FILES", "ROUTED_FILES", "TRAINED_FILES", "load_model", "visualize"]
