"""DeepSpeed: ZeRO data parallelism and expert parallelism for the MoE model.

The JSON config (``TrainConfig.deepspeed_config``, e.g. ``scmodel/configs/ds_moe17b.json``) holds
ZeRO, precision and communication settings; batch size, gradient accumulation and clipping come
from the training config and are written into it, so the two cannot disagree. The optimizer is
torch's AdamW handed to ``deepspeed.initialize``: DeepSpeed's fused/CPU Adam would be JIT-compiled
on first use (minutes). On CPU, DeepSpeed's shared-memory all-reduce op would be JIT-built too; it
is switched off there (gloo does the reductions). Native DeepSpeed MoE does not support ZeRO
stage 3, so stage 3 with an MoE model is refused before anything is built.

Checkpoints: ``OUT/checkpoint/<tag>/`` through ``save_checkpoint`` / ``load_checkpoint`` (the tag
of the newest in ``OUT/checkpoint/latest``), with the trainer's state as ``client_state``. Loading
goes through ``weights_only=True``; ZeRO's optimizer shards hold a few DeepSpeed value classes
(``safe_globals``: loss-scaler record, ZeRO stage enum, slice addresses), allowed by name and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket

import torch

from .base import lr_lambda, param_groups
from .state import safe_load

PACKAGE_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def resolve_config_path(path: str | None) -> str:
    """A path, or a file name in ``scmodel/configs/``."""
    if not path:
        raise ValueError("engine 'deepspeed' needs a DeepSpeed JSON config: set deepspeed_config (--set "
                         f"deepspeed_config=PATH), e.g. one of {sorted(os.listdir(PACKAGE_CONFIGS))} in {PACKAGE_CONFIGS}")
    for candidate in (path, os.path.join(PACKAGE_CONFIGS, path)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"DeepSpeed config {path!r} not found (neither a file nor one of "
                            f"{sorted(os.listdir(PACKAGE_CONFIGS))} in {PACKAGE_CONFIGS})")


def read_config(path: str | None) -> dict:
    with open(resolve_config_path(path)) as f:
        return json.load(f)


def check_deepspeed(config, world: int) -> None:
    """Refuse before any compute: a missing config, ZeRO-3 with MoE, an ep_size that does not divide."""
    ds = read_config(config.deepspeed_config)
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage == 3 and config.model.startswith("moe"):
        raise ValueError(f"{config.deepspeed_config}: ZeRO stage 3 is not supported with DeepSpeed MoE layers "
                         f"(model {config.model!r}); use stage 2 with expert parallelism (ep_size), optionally with "
                         f"optimizer offload (zero_optimization.offload_optimizer)")
    if config.freeze_base and config.model.startswith("moe") and stage > 0:
        raise ValueError(f"{config.deepspeed_config}: freeze_base leaves the experts frozen, and DeepSpeed's ZeRO "
                         f"optimizer needs trainable expert parameters with MoE layers; adapter fine-tuning trains "
                         f"~48M parameters, so use ZeRO stage 0 (ds_moe17b_adapters.json, ds_cpu_tiny_adapters.json)")
    if config.model.startswith("moe"):  # the model's own checks (ep_size must divide the experts), on meta: no memory
        from ..models import MODELS

        with torch.device("meta"):
            MODELS[config.model](n_genes=1, n_tokens=config.n_tokens, ep_size=config.ep_size)
    if world % config.ep_size:
        raise ValueError(f"ep_size {config.ep_size} does not divide the world size {world}: expert-parallel groups "
                         f"must tile the ranks (use a divisor of {world})")


def _cpu_without_jit_builds() -> None:
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # a C++ build at init; gloo reduces instead


def _init_distributed() -> None:
    import deepspeed

    if "RANK" not in os.environ:  # a plain `python -m scmodel.train`: a world of one
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def safe_globals() -> tuple:
    """The DeepSpeed value classes in ZeRO optimizer shards (a loss-scale record, the ZeRO stage
    enum, flat-buffer slice addresses): plain data holders, allowed by name for weights-only loading."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return (LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address)


def _safe_checkpoint_engine():
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return safe_load(path, map_location=map_location, allowed=safe_globals())

    return WeightsOnlyCheckpointEngine


def setup() -> None:
    """Process group and CPU settings; call before building an MoE model (its layers need the groups)."""
    _cpu_without_jit_builds()
    _init_distributed()


class DeepSpeedEngine:
    def __init__(self, config, model: torch.nn.Module, world: int, out: str):
        import deepspeed
        from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

        self.config = config
        ds = read_config(config.deepspeed_config)
        ds.update(train_micro_batch_size_per_gpu=config.batch_size, gradient_accumulation_steps=config.grad_accum,
                  gradient_clipping=config.grad_clip or 0.0, zero_allow_untested_optimizer=True)
        ds.setdefault("steps_per_print", 10**9)
        groups = param_groups(model, config.weight_decay, config.lr, config.conditioning_lr_scale)
        if any(hasattr(m, "deepspeed_moe") for m in model.modules()):
            groups = split_params_into_different_moe_groups_for_optimizer(groups)  # experts reduce in their own groups
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))
        schedule = lr_lambda(config.warmup_steps, config.max_steps)
        self.ds, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule))
        self.ds.checkpoint_engine = _safe_checkpoint_engine()(None)
        self.module = self.ds.module
        self.autocast = False  # DeepSpeed holds the model in its own precision (bf16 section of the config)
        self.dtype = torch.bfloat16 if ds.get("bf16", {}).get("enabled") else torch.float32
        self.directory = os.path.join(out, "checkpoint")
        self.rank = self.ds.global_rank

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.ds(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss, scale_wrt_gas=False)  # the trainer already averages over micro-batches
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()  # DeepSpeed counts micro-batches in step(); it updates only at the boundary

    def step(self) -> None:
        self.ds.step()

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def has_checkpoint(self) -> bool:
        return os.path.exists(os.path.join(self.directory, "latest"))

    def save(self, client_state: dict) -> None:
        previous = open(os.path.join(self.directory, "latest")).read().strip() if self.has_checkpoint() else None
        tag = f"step{client_state['step']}"
        self.ds.save_checkpoint(self.directory, tag=tag, client_state=client_state)
        torch.distributed.barrier()
        if self.rank == 0 and previous and previous != tag:  # keep one: the new one is complete on every rank
            shutil.rmtree(os.path.join(self.directory, previous), ignore_errors=True)

    def load(self) -> dict:
        path, client_state = self.ds.load_checkpoint(self.directory)
        if path is None:
            raise FileNotFoundError(f"--resume: no DeepSpeed checkpoint in {self.directory}")
        return client_state

    def load_weights(self, path: str) -> None:
        # Parameters frozen here (freeze_base) are in the checkpoint's module weights; marked frozen, DeepSpeed
        # would look for them among the "frozen fragments" of a checkpoint written without any.
        frozen = [p for p in self.module.parameters() if not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)
        try:
            self._load_module(path)
        finally:
            for p in frozen:
                p.requires_grad_(False)

    def _load_module(self, path: str) -> None:
        directory, tag = (os.path.dirname(path.rstrip("/")), os.path.basename(path.rstrip("/"))) \
            if not os.path.exists(os.path.join(path, "latest")) else (path, None)
        loaded, _ = self.ds.load_checkpoint(directory, tag=tag, load_module_only=True, load_optimizer_states=False,
                                            load_lr_scheduler_states=False)
        if loaded is None:
            raise FileNotFoundError(f"init_from {path}: no DeepSpeed checkpoint there")
