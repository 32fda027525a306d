"""FLOPs and memory measured on real passes: ``torch.utils.flop_counter.FlopCounterMode`` around a
forward and a backward pass, and the bytes autograd saves for backward (the activations).

Attention is counted with PyTorch's math kernel: the fused CPU kernel
(``_scaled_dot_product_flash_attention_for_cpu``) is not in the flop counter's registry, so with
the default kernel the ``QK^T`` and ``AV`` products would silently count as zero on a CPU. The math
kernel runs the same products as ``bmm`` calls, which the counter does count (and which the meta
device, used for the scaling sweeps, gives identically).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scmodel.diffusion import DiffusionConfig, corrupt, diffusion_loss

from .inspect import example_inputs, find_value, model_config

ADAMW_STATE_BYTES = 8
"""AdamW keeps two fp32 moments per parameter (``exp_avg``, ``exp_avg_sq``)."""


@dataclass
class FlopCount:
    forward: int
    backward: int
    by_module: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Module path -> (forward, backward) FLOPs, the root as ``""``; a module's count includes its children's."""
    by_op: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.forward + self.backward


def _loss(model: nn.Module, logits: torch.Tensor, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The training objective (masked-token cross-entropy) on the batch, so backward is a real step's."""
    config = model_config(model)
    mask_id = find_value(config, "mask_id", find_value(config, "n_tokens"))
    cfg = DiffusionConfig()
    if tokens.is_meta:  # no values on the meta device; which positions are masked does not change the FLOPs
        mask = torch.ones_like(tokens, dtype=torch.bool)
    else:
        _, mask = corrupt(tokens.cpu(), t.cpu(), cfg, mask_id, torch.Generator().manual_seed(0))
    return diffusion_loss(logits, tokens, mask.to(tokens.device), t, cfg)


def _module_counts(counter: FlopCounterMode, root: str) -> dict[str, int]:
    out = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        path = "" if name == root else name[len(root) + 1:] if name.startswith(root + ".") else None
        if path is not None:
            out[path] = sum(ops.values())
    return out


def count_flops(model: nn.Module, args: tuple, kwargs: dict, backward: bool = True) -> FlopCount:
    """FLOPs of one forward (and backward through the training loss) on these inputs."""
    root = type(model).__name__
    fwd_counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), fwd_counter:
        logits = model(*args, **kwargs)
    forward = fwd_counter.get_total_flops()
    fwd_modules = _module_counts(fwd_counter, root)
    fwd_ops = {str(op): n for op, n in fwd_counter.get_flop_counts()["Global"].items()}
    by_module = {k: (v, 0) for k, v in fwd_modules.items()}
    by_op = {k: (v, 0) for k, v in fwd_ops.items()}
    backward_total = 0
    if backward:
        both = FlopCounterMode(display=False)
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(SDPBackend.MATH), both:
            logits = model(*args, **kwargs)
            _loss(model, logits, args[0], args[1]).backward()
        model.zero_grad(set_to_none=True)
        backward_total = both.get_total_flops() - forward
        by_module = {k: (fwd_modules.get(k, 0), v - fwd_modules.get(k, 0)) for k, v in _module_counts(both, root).items()}
        by_op = {str(op): (fwd_ops.get(str(op), 0), n - fwd_ops.get(str(op), 0))
                 for op, n in both.get_flop_counts()["Global"].items()}
    return FlopCount(forward, backward_total, by_module, by_op)


def activation_bytes(model: nn.Module, args: tuple, kwargs: dict, bf16: bool = False, math: bool = True) -> int:
    """Bytes of the distinct tensors autograd saves for backward in one forward, parameters excluded:
    what a training step holds between forward and backward. ``bf16``: under bf16 autocast, as
    train.py runs on GPUs (autocast does not apply on the meta device: measure bf16 on real tensors).
    ``math``: attention through the math kernel, which keeps the (L x L) probabilities of every head;
    otherwise the device's fused kernel (no L x L tensor kept; real tensors only)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}
    kept = []

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        kept.append(t)  # keep it alive so its storage address is not reused during the pass
        return t

    device = args[0].device.type
    kernel = sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext()
    with kernel, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast(device if device in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(*args, **kwargs)
    del logits
    kept.clear()  # the saved tensors can go now
    return sum(seen.values())


def meta_model(factory, **kwargs) -> nn.Module:
    """The model built on the meta device: shapes and dtypes only, no memory, no initialisation cost."""
    with torch.device("meta"):
        return factory(**kwargs)


@dataclass
class ScalingPoint:
    batch: int
    genes: int
    flops_forward: int
    flops_backward: int
    activation_bytes: int


def scaling(factory, factory_kwargs: dict, points: list[tuple[int, int]]) -> list[ScalingPoint]:
    """FLOPs and fp32 activation bytes at each (batch, gene positions), on a meta-device model."""
    model = meta_model(factory, **factory_kwargs)
    out = []
    for batch, genes in points:
        args, kwargs = example_inputs(model, batch, genes, device="meta")
        flops = count_flops(model, args, kwargs)
        out.append(ScalingPoint(batch, genes, flops.forward, flops.backward, activation_bytes(model, args, kwargs)))
    return out


def training_memory(n_parameters: int, activations: dict[str, int]) -> dict[str, dict[str, int]]:
    """Bytes one training step holds, per setting of ``activations`` (name -> measured bytes): weights,
    gradients and AdamW moments in fp32 (train.py's bf16 mode is autocast: fp32 master weights and
    optimizer state) plus the activations."""
    weights = grads = 4 * n_parameters
    state = ADAMW_STATE_BYTES * n_parameters
    return {name: {"weights": weights, "gradients": grads, "adamw_state": state, "activations": acts,
                   "total": weights + grads + state + acts} for name, acts in activations.items()}
