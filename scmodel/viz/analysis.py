"""Everything the figures and reports show about one model, measured once: the module tree, a
traced forward pass, FLOPs of a forward and backward pass, activation bytes, and how FLOPs and
activations scale with gene positions and batch."""

from __future__ import annotations

import inspect as pyinspect
from dataclasses import dataclass, field

import torch.nn as nn

from scmodel.models import count_parameters

from .compute import FlopCount, ScalingPoint, activation_bytes, count_flops, scaling, training_memory
from .inspect import (CONDITIONING_INPUTS, Call, Components, ModuleRow, bind_arguments, collapse, components, example_inputs,
                      find_value, model_config, module_rows, n_params, trace)


@dataclass
class Analysis:
    name: str
    model: nn.Module
    config: dict
    parameters: int
    rows: list[ModuleRow]
    parts: Components
    calls: list[Call]
    flops: FlopCount
    batch: int
    genes: int
    control_cells: int
    activations: dict[str, int]
    """Bytes saved for backward in the measured step, by setting (precision, attention kernel)."""
    memory: dict
    sweep_genes: list[ScalingPoint] = field(default_factory=list)
    sweep_batch: list[ScalingPoint] = field(default_factory=list)
    inputs: dict[str, tuple] = field(default_factory=dict)
    """Shapes of the model's inputs in the measured step, by argument name."""
    extra: dict = field(default_factory=dict)
    """Provenance for the reports (checkpoint, train config, store)."""

    @property
    def modules(self) -> dict[str, nn.Module]:
        return dict(self.model.named_modules())

    @property
    def conditioning(self) -> list[str]:
        accepted = pyinspect.signature(self.model.forward).parameters
        return [k for k in CONDITIONING_INPUTS if k in accepted]

    @property
    def n_genes(self) -> int:
        return find_value(self.config, "n_genes")

    @property
    def n_tokens(self) -> int:
        return find_value(self.config, "n_tokens")

    def collapsed(self, group_members: list[str]) -> list[tuple[str, list[str]]]:
        return collapse(group_members, self.modules)

    def first_call(self, name: str) -> Call | None:
        return next((c for c in self.calls if c.name == name), None)

    def component_flops(self, names: list[str]) -> tuple[int, int]:
        f = sum(self.flops.by_module.get(n, (0, 0))[0] for n in names)
        b = sum(self.flops.by_module.get(n, (0, 0))[1] for n in names)
        return f, b

    def component_params(self, names: list[str]) -> int:
        modules = self.modules
        return sum(n_params(modules[n]) for n in names)


def _sweep(values: list[int], limit: int) -> list[int]:
    return sorted({v for v in values if v <= limit} | {limit})


def analyze(name: str, model: nn.Module, factory, factory_kwargs: dict, batch: int = 1, genes: int | None = None,
            control_cells: int = 4, sweeps: bool = True) -> Analysis:
    """Measure ``model`` (real tensors) on ``batch`` cells x ``genes`` positions, and sweep FLOPs and
    activations over positions and batch on a meta-device copy built by ``factory(**factory_kwargs)``."""
    config = model_config(model)
    genes = genes or find_value(config, "n_genes")
    device = next(model.parameters()).device
    args, kwargs = example_inputs(model, batch, genes, control_cells=control_cells, device=device)
    was_training = model.training
    model.train()  # the training step is what is counted (dropout, if any, is part of it)
    calls = trace(model, args, kwargs)
    flops = count_flops(model, args, kwargs)
    acts = {f"{precision}, {kernel} attention": activation_bytes(model, args, kwargs, bf16=precision == "bf16",
                                                                 math=kernel == "math")
            for kernel in ("math", "fused") for precision in ("fp32", "bf16")}
    model.train(was_training)
    parameters = count_parameters(model)
    analysis = Analysis(name, model, config, parameters, module_rows(model), components(model), calls, flops, batch,
                        genes, control_cells, acts, training_memory(parameters, acts),
                        inputs={k: tuple(v.shape) for k, v in bind_arguments(model, args, kwargs).items() if hasattr(v, "shape")})
    if sweeps:
        n_genes = find_value(config, "n_genes")
        gene_points = _sweep([64, 128, 256, 512, 1024, 2048], n_genes)
        try:
            analysis.sweep_genes = scaling(factory, factory_kwargs, [(1, g) for g in gene_points])
            analysis.sweep_batch = scaling(factory, factory_kwargs, [(b, genes) for b in (1, 4, 16, 64)])
        except (RuntimeError, NotImplementedError) as err:  # e.g. routing that reads tensor values (MoE gates)
            analysis.extra["sweeps"] = f"skipped: the forward pass does not run on the meta device ({err})"
    return analysis


def flops_check(model: nn.Module, batch: int, genes: int, control_cells: int = 4) -> FlopCount:
    """The flop counter on the same input ``analyze`` builds (what the reports must equal)."""
    device = next(model.parameters()).device
    args, kwargs = example_inputs(model, batch, genes, control_cells=control_cells, device=device)
    return count_flops(model, args, kwargs)
