"""What a model is, read from the live module tree: configuration, parameters per module, the
components a diagram draws, and a traced forward pass (call order, tensor shapes, data flow).

Nothing here knows the names of a particular model's submodules: components are found by walking
the tree (single-child wrappers are descended, ``ModuleList``/``ModuleDict`` are transparent), and
data flow is followed through every torch function, so a new model (e.g. a mixture of experts)
is described the same way.
"""

from __future__ import annotations

import dataclasses
import inspect as pyinspect
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

CONDITIONING_INPUTS = ("target_gene", "sign", "log2fc", "control")


# ---- configuration -------------------------------------------------------------------------------

def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name, attr in vars(type(value)).items():  # derived values (mask_id...) are part of the config too
            if isinstance(attr, property) and name not in out:
                out[name] = _jsonable(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def model_config(model: nn.Module) -> dict:
    """The model's config dataclass (``model.cfg``, or the first submodule's) as plain data."""
    for module in model.modules():
        cfg = getattr(module, "cfg", None)
        if dataclasses.is_dataclass(cfg):
            return {"class": type(cfg).__name__, **_jsonable(cfg)}
    raise ValueError(f"{type(model).__name__} has no config dataclass in a `cfg` attribute: give it one")


def find_value(config: dict, key: str, default=None):
    """The first ``key`` in a nested config dict (``n_genes`` sits in ``backbone`` for the conditional model)."""
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, dict):
            found = find_value(value, key)
            if found is not None:
                return found
    return default


# ---- parameters ----------------------------------------------------------------------------------

def n_params(module: nn.Module, recurse: bool = True) -> int:
    return sum(p.numel() for p in module.parameters(recurse=recurse))


@dataclass(frozen=True)
class ModuleRow:
    name: str
    kind: str
    depth: int
    params: int
    """All parameters under this module."""
    own: int
    """Parameters held directly (not by a child module)."""


def module_rows(model: nn.Module, max_depth: int | None = None) -> list[ModuleRow]:
    """Every module in tree order with its parameter counts (the root is the empty name)."""
    rows = []
    for name, module in model.named_modules():
        depth = 0 if not name else name.count(".") + 1
        if max_depth is None or depth <= max_depth:
            rows.append(ModuleRow(name, type(module).__name__, depth, n_params(module), n_params(module, recurse=False)))
    return rows


# ---- components: the units a diagram draws ------------------------------------------------------

_TRANSPARENT = (nn.ModuleList, nn.ModuleDict)


def _children(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module, bool]]:
    """Named children with lists/dicts flattened; the flag says whether the child came from a list."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, _TRANSPARENT):  # never called itself: its items are (nested lists too)
            out.extend((n, c, True) for n, c, _ in _children(child, full))
        else:
            out.append((full, child, False))
    return out


@dataclass
class Components:
    root: str
    """Path of the module the groups hang from (single-child wrappers above it are skipped)."""
    groups: list[tuple[str, list[str]]]
    """(group path, component paths in tree order)."""
    own: dict[str, int] = field(default_factory=dict)
    """Parameters a group holds directly (learned seeds, "none" tokens), by group path."""

    @property
    def names(self) -> list[str]:
        return [c for _, members in self.groups for c in members]


def components(model: nn.Module) -> Components:
    root_name, root = "", model
    while len(list(root.children())) == 1 and n_params(root, recurse=False) == 0:
        root_name, root = next(iter(_children(root, root_name)))[:2]
    groups, own = [], {}
    top = _children(root, root_name)
    root_group = root_name or type(model).__name__
    loose: list[str] = []  # the root's own layers (embeddings, a list of blocks, the head...): one group
    for name, child, listed in top:
        members = [n for n, _, _ in _children(child, name)]
        if members and not listed and not isinstance(child, nn.Sequential):
            groups.append((name, members))
            if n_params(child, recurse=False):
                own[name] = n_params(child, recurse=False)
        else:
            if not loose:
                groups.append((root_group, loose))
            loose.append(name)
    if n_params(root, recurse=False):
        own[root_group] = n_params(root, recurse=False)
        if not loose:
            groups.append((root_group, loose))
    return Components(root_name, groups, own)


_INDEXED = re.compile(r"^(.*)\.(\d+)$")


def collapse(names: list[str], modules: dict[str, nn.Module]) -> list[tuple[str, list[str]]]:
    """Runs of list items of the same class and size (``blocks.0`` .. ``blocks.5``) become one
    entry labelled ``blocks.0-5``; returns (label, member paths)."""
    out: list[tuple[str, list[str]]] = []
    for name in names:
        m = _INDEXED.match(name)
        if out and m:
            last_label, members = out[-1]
            prev = _INDEXED.match(members[-1])
            same = prev and prev.group(1) == m.group(1) and int(prev.group(2)) + 1 == int(m.group(2))
            if same and type(modules[members[-1]]) is type(modules[name]) and \
                    n_params(modules[members[-1]]) == n_params(modules[name]):
                members.append(name)
                first = _INDEXED.match(members[0]).group(2)
                out[-1] = (f"{m.group(1)}.{first}-{m.group(2)}", members)
                continue
        out.append((name, [name]))
    return out


# ---- a traced forward pass -----------------------------------------------------------------------

def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else None


@dataclass
class Call:
    name: str
    kind: str
    inputs: dict[str, tuple]
    """Tensor inputs by argument name (positional ones as ``arg0``...) -> shape."""
    output: tuple | None
    sources: frozenset = frozenset()
    """Components and model inputs (``input:NAME``) whose values reach this call (components only)."""
    arg_sources: dict[str, frozenset] = field(default_factory=dict)
    """The same per tensor argument."""


class _Provenance(TorchFunctionMode):
    """Follows which components' outputs every tensor is computed from, through any torch op."""

    def __init__(self):
        super().__init__()
        self.origin: dict[int, tuple[torch.Tensor, frozenset]] = {}  # id -> (tensor kept alive, sources)

    def of(self, tensors) -> frozenset:
        found = [self.origin[id(t)][1] for t in tensors if isinstance(t, torch.Tensor) and id(t) in self.origin]
        return frozenset().union(*found) if found else frozenset()

    def mark(self, value, sources: frozenset) -> None:
        for t in tree_flatten(value)[0]:
            if isinstance(t, torch.Tensor):
                self.origin[id(t)] = (t, sources)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        sources = self.of(tree_flatten((args, kwargs))[0])
        if sources:
            self.mark(out, sources)
        return out


def bind_arguments(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    try:
        bound = pyinspect.signature(module.forward).bind(*args, **kwargs)
        named = dict(bound.arguments)
        for key, value in list(named.items()):  # **kwargs of the forward, flattened
            if pyinspect.signature(module.forward).parameters[key].kind is pyinspect.Parameter.VAR_KEYWORD:
                named.pop(key)
                named.update(value)
        return named
    except TypeError:
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}


def trace(model: nn.Module, args: tuple, kwargs: dict, parts: list[str] | None = None) -> list[Call]:
    """Run one forward pass (no grad) and return every module call in order; for the modules in
    ``parts`` (default: the components) also where their inputs come from."""
    parts = set(components(model).names if parts is None else parts)
    calls: list[Call] = []
    pending: list[Call] = []
    mode = _Provenance()
    handles = []

    def pre(name):
        def hook(module, a, kw):
            named = bind_arguments(module, a, kw)
            shapes = {k: _shape(v) for k, v in named.items() if isinstance(v, torch.Tensor)}
            sources, per_arg = frozenset(), {}
            if name in parts:
                sources = mode.of(tree_flatten((a, kw))[0])
                per_arg = {k: mode.of(tree_flatten(v)[0]) for k, v in named.items()}
            call = Call(name, type(module).__name__, shapes, None, sources, {k: v for k, v in per_arg.items() if v})
            calls.append(call)
            pending.append(call)
        return hook

    def post(name):
        def hook(module, a, kw, out):
            call = pending.pop()
            tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            call.output = _shape(tensors[0]) if tensors else None
            if name in parts:
                mode.mark(out, frozenset([name]))
        return hook

    for name, module in model.named_modules():
        if name and not isinstance(module, _TRANSPARENT):
            handles.append(module.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(post(name), with_kwargs=True))
    try:
        with torch.no_grad(), mode:
            for key, value in bind_arguments(model, args, kwargs).items():
                mode.mark(value, frozenset([f"input:{key}"]))
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return calls


# ---- inputs --------------------------------------------------------------------------------------

def example_inputs(model: nn.Module, batch: int, genes: int, control_cells: int = 4, device=None,
                   generator: torch.Generator | None = None, conditioned: bool = True) -> tuple[tuple, dict]:
    """A batch the model's forward accepts: ``batch`` cells of ``genes`` value tokens at the first
    gene positions, a time per cell and, when the forward takes them and ``conditioned``, every
    conditioning input (a perturbation per cell and a set of ``control_cells`` control cells)."""
    config = model_config(model)
    n_genes, n_tokens = find_value(config, "n_genes"), find_value(config, "n_tokens")
    if n_genes is None or n_tokens is None:
        raise ValueError(f"{config['class']} has no n_genes / n_tokens: cannot build an input batch")
    if genes > n_genes:
        raise ValueError(f"{genes} gene positions asked for, the model has {n_genes}")
    gen = generator or torch.Generator().manual_seed(0)
    tokens = torch.randint(0, n_tokens, (batch, genes), generator=gen)
    t = torch.rand(batch, generator=gen)
    kwargs: dict = {}
    accepted = pyinspect.signature(model.forward).parameters
    if "gene_index" in accepted:
        kwargs["gene_index"] = torch.arange(genes)
    if conditioned:
        vocab = find_value(config, "gene_vocab", n_genes)
        values = {"target_gene": lambda: torch.randint(0, vocab, (batch,), generator=gen),
                  "sign": lambda: torch.randint(-1, 2, (batch,), generator=gen),
                  "log2fc": lambda: torch.randn(batch, generator=gen),
                  "control": lambda: torch.rand(batch, control_cells, n_genes, generator=gen) * 4}
        kwargs.update({k: f() for k, f in values.items() if k in accepted})
    move = (lambda x: x.to(device)) if device is not None else (lambda x: x)
    return (move(tokens), move(t)), {k: move(v) for k, v in kwargs.items()}
