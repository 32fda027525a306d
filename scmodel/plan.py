"""``python -m scmodel.plan --config moe17b --gpus 8,16,64``: what a model costs, counted on ``meta``.

The model is built on the ``meta`` device (no memory). Printed:

* parameters: the exact total, the experts' share, and the parameters active per token with top-k
  routing (the analytic ``parameter_formula`` of the config is checked against the build);
* FLOPs per cell at ``--positions`` gene positions, counted by ``torch.utils.flop_counter`` on a
  forward and backward pass of the module. DeepSpeed's router sizes its dispatch buffers from the
  token counts of real data, so for counting each MoE layer is replaced by a module with the same
  gate and expert weights that runs the gate on every token and one expert on ``top_k x tokens``
  (what top-k routing computes; DeepSpeed pads every expert to its capacity, ``capacity_factor``
  more);
* activation bytes per cell, from the tensors autograd saves (``saved_tensors_hooks``) in that
  pass in bf16, per block; attention matrices (L x L) are not kept by flash attention, which saves
  its log-sum-exp instead, and are counted that way. With activation checkpointing (the moe17b
  setting) a cell keeps every block's input plus one block's saved tensors during recomputation;
* a memory plan per GPU under expert parallelism (``ep_size`` = gcd(experts, GPUs)) + ZeRO-2 in
  bf16: bf16 weights (shared weights on every GPU, ``experts / ep_size`` experts of each MoE layer),
  bf16 gradients and fp32 optimizer state (master weights, Adam moments, the fp32 gradient of the
  partition at the step) partitioned over data-parallel ranks (experts over the expert-data-parallel
  group, which partitions them over ``GPUs`` in all), ZeRO's gradient buckets, activations; with
  and without optimizer offload to CPU; and the largest micro-batch per GPU that fits in
  ``1 - reserve`` of 80 GB and 141 GB GPUs (the reserve covers the CUDA context, allocator
  fragmentation and communication buffers).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace

import torch
import torch.nn as nn

GB = 1e9
BF16, FP32 = 2, 4


class RoutedCost(nn.Module):
    """Stands in for a DeepSpeed MoE layer when counting: the same gate and expert modules, the
    gate on every token and one expert on ``ceil(top_k x capacity x tokens)`` token slots."""

    def __init__(self, moe: nn.Module, top_k: int, capacity: float):
        super().__init__()
        self.gate = moe.deepspeed_moe.gate.wg
        self.expert = moe.deepspeed_moe.experts.deepspeed_experts[0]
        self.slots = top_k * capacity

    def forward(self, h: torch.Tensor):
        self.gate(h.float())
        b, n, d = h.shape
        dispatched = h.new_zeros(b, math.ceil(self.slots * n), d)  # (B, k * cf * N, D)
        out = self.expert(dispatched)[:, :n]
        return out, h.new_zeros(()), None


def build_meta(name: str, n_genes: int, n_tokens: int = 64, ep_size: int = 1):
    from .models import MODELS

    with torch.device("meta"):
        return MODELS[name](n_genes=n_genes, n_tokens=n_tokens, ep_size=ep_size)


def count_cost(name: str, positions: int, n_tokens: int = 64, capacity: float = 1.0) -> dict:
    """FLOPs (forward, forward+backward) and saved-activation bytes per block, for one cell."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models.moe import MoEDiffusionModel

    base = build_meta(name, positions, n_tokens).cfg
    with torch.device("meta"):
        model = MoEDiffusionModel(replace(base, checkpoint_activations=False)).to(torch.bfloat16)
    for block in model.blocks:
        if block.moe is not None:
            block.moe = RoutedCost(block.moe, base.top_k, capacity)
    current = ["stem"]
    saved: dict[str, int] = {}

    def pack(tensor: torch.Tensor):
        if tensor.dim() >= 2 and tensor.shape[-1] == tensor.shape[-2] == positions:  # an attention matrix
            nbytes = tensor[..., 0].numel() * FP32  # flash attention keeps a log-sum-exp per row instead
        else:
            nbytes = tensor.numel() * tensor.element_size()
        saved[current[0]] = saved.get(current[0], 0) + nbytes
        return tensor

    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda *_, i=i: current.__setitem__(0, f"block{i}"))
        block.register_forward_hook(lambda *_: current.__setitem__(0, "stem"))
    tokens = torch.zeros(1, positions, dtype=torch.long, device="meta")
    t = torch.zeros(1, device="meta")
    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            logits = model(tokens, t)
        forward = counter.get_total_flops()
        logits.float().sum().backward()
        total = counter.get_total_flops()
    blocks = [saved.get(f"block{i}", 0) for i in range(base.n_layers)]
    return {"forward_flops": forward, "train_flops": total, "block_saved_bytes": blocks, "stem_saved_bytes": saved["stem"],
            "block_input_bytes": positions * base.dim * BF16}


def memory_plan(counts: dict, cfg, gpus: int, act_per_cell: float, capacity_gb: float, reserve: float,
                bucket_elems: float, offload: bool) -> dict:
    ep = math.gcd(cfg.n_experts, gpus)
    shared = counts["total"] - counts["experts"]
    local_experts = counts["experts"] / ep
    weights = BF16 * (shared + local_experts)
    grads = BF16 * (shared + counts["experts"]) / gpus + BF16 * bucket_elems * 3  # partition + 2 reduce + 1 gather bucket
    optimizer = 0.0 if offload else (3 * FP32 + FP32) * (shared + counts["experts"]) / gpus
    static = weights + grads + optimizer
    budget = capacity_gb * GB * (1 - reserve)
    micro = max(0, int((budget - static) // act_per_cell))
    return {"gpus": gpus, "ep_size": ep, "weights": weights, "grads": grads, "optimizer": optimizer,
            "static": static, "act_per_cell": act_per_cell, "capacity_gb": capacity_gb, "micro_batch": micro,
            "total_at_micro": static + micro * act_per_cell, "offload": offload}


def plan(name: str = "moe17b", gpus: tuple[int, ...] = (8, 16, 64), positions: int = 2000, n_tokens: int = 64,
         capacities: tuple[float, ...] = (80, 141), reserve: float = 0.10, bucket_elems: float = 2e8) -> dict:
    from .models import count_parameters
    from .models.moe import parameter_formula

    model = build_meta(name, positions, n_tokens)
    cfg = model.cfg
    counts = parameter_formula(cfg)
    built = count_parameters(model)
    if built != counts["total"]:
        raise AssertionError(f"{name}: meta build has {built:,} parameters, the formula {counts['total']:,}")
    routed = count_cost(name, positions, n_tokens, capacity=1.0)
    padded = count_cost(name, positions, n_tokens, capacity=cfg.capacity_factor)
    blocks = padded["block_saved_bytes"]
    if cfg.checkpoint_activations:
        act = cfg.n_layers * padded["block_input_bytes"] + max(blocks) + padded["stem_saved_bytes"]
    else:
        act = sum(blocks) + padded["stem_saved_bytes"]
    rows = [memory_plan(counts, cfg, g, act, c, reserve, bucket_elems, offload)
            for offload in (False, True) for c in capacities for g in gpus]
    return {"model": name, "positions": positions, "parameters": counts, "flops": routed,
            "padded_train_flops": padded["train_flops"], "activation_bytes_per_cell": act,
            "checkpoint_activations": cfg.checkpoint_activations, "reserve": reserve, "plans": rows, "config": cfg}


def render(result: dict) -> str:
    p, f = result["parameters"], result["flops"]
    lines = [f"{result['model']}: {p['total']:,} parameters ({p['total'] / 1e9:.2f}B; experts {p['experts']:,}, "
             f"adapters + conditioning encoders {p['adapters_and_encoders']:,}); active per token with top-"
             f"{result['config'].top_k}: {p['active_per_token']:,} ({p['active_per_token'] / 1e9:.2f}B)",
             f"FLOPs per cell at {result['positions']:,} positions (torch.utils.flop_counter, meta device): forward "
             f"{f['forward_flops'] / 1e12:.2f} TFLOP, forward+backward {f['train_flops'] / 1e12:.2f} TFLOP "
             f"(with capacity padding {result['padded_train_flops'] / 1e12:.2f}; activation recomputation adds one "
             f"forward)",
             f"Activations per cell (bf16{', checkpointed per block' if result['checkpoint_activations'] else ''}): "
             f"{result['activation_bytes_per_cell'] / GB:.2f} GB",
             "",
             "Memory per GPU, EP + ZeRO-2, bf16 weights/grads, fp32 Adam "
             f"(GB = 1e9 bytes; usable = {1 - result['reserve']:.0%} of the GPU):",
             "| GPU | GPUs | ep_size | optimizer | weights | gradients | optimizer states | static | activations/cell "
             "| largest micro-batch | total at it |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["plans"]:
        where = "CPU offload" if r["offload"] else "on GPU"
        lines.append(f"| {r['capacity_gb']:.0f} GB | {r['gpus']} | {r['ep_size']} | {where} | {r['weights'] / GB:.1f} "
                     f"| {r['grads'] / GB:.1f} | {r['optimizer'] / GB:.1f} | {r['static'] / GB:.1f} "
                     f"| {r['act_per_cell'] / GB:.2f} | {r['micro_batch']} | {r['total_at_micro'] / GB:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scmodel.plan", description="parameters, FLOPs and memory plan of a model")
    p.add_argument("--config", default="moe17b", help="a model of scmodel.models.MODELS with an MoE config")
    p.add_argument("--gpus", default="8,16,64", help="comma-separated GPU counts")
    p.add_argument("--positions", type=int, default=2000, help="gene positions per cell")
    p.add_argument("--reserve", type=float, default=0.10, help="fraction of GPU memory kept free")
    a = p.parse_args(argv)
    print(render(plan(a.config, tuple(int(g) for g in a.gpus.split(",")), a.positions, reserve=a.reserve)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
