"""The named presets of ``python -m scmodel.train --config NAME`` (``CONFIGS``).

Apart from ``TrainConfig`` so the field definitions and their validation read on their own; the
presets are data, kept together with the reasons for their values.
"""

from __future__ import annotations

from ..diffusion import seed_schedule
from .config import TrainConfig

CONFIGS: dict[str, TrainConfig] = {
    "mini": TrainConfig(model="mini", out="runs/mini"),
    # The CPU demo models the 256 most variable genes (every position in every batch, so each gene's
    # embedding learns from every cell) with 8 coarse log1p bins.
    "mini-tiny": TrainConfig(model="mini-tiny", out="runs/mini-tiny", batch_size=32, lr=3e-3, warmup_steps=20,
                             log_every=5, eval_every=50, save_every=50, eval_batches=16, n_hvgs=256, n_tokens=8),
    "conditional": TrainConfig(model="conditional", out="runs/conditional"),
    "conditional-tiny": TrainConfig(model="conditional-tiny", out="runs/conditional-tiny", batch_size=32, lr=3e-3,
                                    warmup_steps=20, log_every=5, eval_every=50, save_every=50, eval_batches=4,
                                    context_genes=256, n_tokens=16),
    # The 17B MoE model on GPUs: DeepSpeed ZeRO-2 + expert parallelism (2 of the 16 experts per GPU
    # on 8 GPUs), all 2,000 HVG positions; micro-batch 8, half the largest `python -m scmodel.plan` fits
    # on 80 GB GPUs (16), a margin until a GPU run measures the plan.
    "moe17b": TrainConfig(model="moe17b", out="runs/moe17b", engine="deepspeed", deepspeed_config="ds_moe17b.json",
                          ep_size=8, batch_size=8, lr=1.5e-4, warmup_steps=2000, max_steps=200_000, log_every=10,
                          eval_every=2000, save_every=1000),
    # The same code at a few million parameters, on CPU under DeepSpeed (gloo), like mini-tiny.
    "moe17b-tiny": TrainConfig(model="moe17b-tiny", out="runs/moe17b-tiny", engine="deepspeed",
                               deepspeed_config="ds_cpu_tiny.json", batch_size=32, lr=3e-3, warmup_steps=20, log_every=5,
                               eval_every=50, save_every=50, eval_batches=16, n_hvgs=256, n_tokens=8),
    "mini-seed": TrainConfig(model="mini", out="runs/mini-seed", diffusion=seed_schedule()),
    "pretrain": TrainConfig(model="conditional", out="runs/pretrain", epochs=50, max_steps=10**9),
    "finetune": TrainConfig(model="conditional", out="runs/finetune", epochs=20, max_steps=10**9, lr=1e-4,
                            init_from="runs/pretrain/checkpoint.pt", val_fraction=0.2),
    # CPU scale of the perturbation task: pretrain with `--config conditional-tiny --set n_hvgs=512`,
    # then fine-tune on a perturbation store (`scdata vcc import`) with --init-from.
    # (1,500 steps at 3e-3: the programs of the demo's perturbations need them; 600 at 1e-3 learned
    # the knockdowns only)
    # The generative recipe for 2 CPU cores: mini-tiny's network over the same 256 HVGs, 16 log1p bins
    # instead of 8 (finer counts), conditioned on cell states, 64 clusters x 8 depth bins (without
    # them its cells came out as blends of cell types, and expressing too many genes), each state's
    # per-gene token frequencies added to the logits (the network learns the rest), bf16,
    # 2,500 steps (the demo's 400 learn little more than per-gene marginals); no gene programs (they
    # serve perturbation transfer, not generation); sampled at temperature 0.8, the best of a
    # screen on held-out cells apart from the reported ones. Measured in bench_generation.
    "gen-cpu": TrainConfig(model="mini-tiny", out="runs/gen-cpu", batch_size=32, lr=3e-3, warmup_steps=100,
                           log_every=50, eval_every=2500, save_every=500, eval_batches=16, n_hvgs=256, n_tokens=16,
                           max_steps=2500, n_states=64, state_depth_bins=8, state_prior=True, bf16="on",
                           programs_cells=0, sample_temperature=0.8),
    "finetune-tiny": TrainConfig(model="conditional-tiny", out="runs/finetune-tiny", batch_size=32, lr=3e-3,
                                 warmup_steps=20, log_every=10, eval_every=500, save_every=500, eval_batches=4,
                                 n_hvgs=512, context_genes=256, n_tokens=16, val_fraction=0.2, max_steps=1500),
}
