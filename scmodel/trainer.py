"""``python -m scmodel.train``: train a diffusion model on a store's materialized HVG matrix.

    python -m scmodel.train --config mini-tiny --store data/demo/store.zarr --max-steps 200 --out runs/demo
    python -m scmodel.train --config mini-tiny --store ... --out runs/demo --resume       # exact continuation
    torchrun --nproc_per_node 2 -m scmodel.train --config mini-tiny --store ... --out runs/ddp
    python -m scmodel.train --config moe17b-tiny --store ... --out runs/moe               # DeepSpeed, CPU (gloo)
    torchrun --nproc_per_node 2 -m scmodel.train --config moe17b-tiny --set ep_size=2 ...  # expert parallel
    deepspeed --num_gpus 8 --module scmodel.train --config moe17b --store ... --out runs/moe17b

Writes ``metrics.jsonl`` (one line per logged step with ``loss``, and ``aux_loss`` for MoE models;
evaluation lines with ``"eval": true``), a checkpoint (``checkpoint.pt`` for the plain engine,
``checkpoint/`` for DeepSpeed: model, optimizer, schedule, every rank's RNG state and loader
position; all loadable with ``weights_only=True``) and ``curves.png`` into ``--out``. The backend
(plain torch / DDP, or DeepSpeed) is an engine of ``scmodel.engines`` behind one step interface.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace

import torch

from .diffusion import DiffusionConfig, corrupt, diffusion_loss, sample_times, seed_schedule
from .engines import build_engine, check_engine
from .engines.state import rng_state, set_rng_state
from .models import MODELS, count_parameters
from .tokenize import BinnedTokenizer


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run (presets in ``CONFIGS``; any field can be overridden with ``--set``)."""

    model: str = "mini"
    store: str = "data/scRNA/store.zarr"
    out: str = "runs/mini"
    max_steps: int = 1000
    epochs: int | None = None
    """Stop after this many epochs (the seed's pretrain 50 / fine-tune 20) unless max_steps comes first."""
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_tokens: int = 64
    tokenizer_max: float = 8.0
    """Top of the fixed log1p bins; bins are (tokenizer_max / (n_tokens - 1)) wide."""
    n_hvgs: int | None = None
    """Model only the top N HVGs by rank (all of the store's materialized HVGs when unset)."""
    context_genes: int | None = None
    """Train on a random subset of this many gene positions per batch (attention cost grows with
    the square of the positions; the tiny CPU configs use 256 of the 2,000 HVGs)."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    seed: int = 0
    num_workers: int = 0
    val_fraction: float = 0.15
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 4
    save_every: int = 200
    bf16: str = "auto"
    """"auto": bf16 autocast on GPUs that support it; "on"/"off" force it."""
    stop_at_step: int | None = None
    """Stop (and checkpoint) at this step without changing the schedule, e.g. for time-limited jobs."""
    init_from: str | None = None
    """Fine-tuning: start from this checkpoint's weights (optimizer and data position start fresh)."""
    sample_steps: int = 64
    """Reverse-process steps when the evaluation samples cells."""
    sample_order: str = "random"
    """"random": the ancestral masked-diffusion sampler; "confidence": most confident first (MaskGIT)."""
    sample_temperature: float = 1.0
    sample_every: int | None = None
    """Also sample (the costly part of an evaluation) at evaluations on multiples of this step;
    the final evaluation always samples."""
    freeze_base: bool = False
    """Perturbation fine-tuning: train only the LoRA adapters and conditioning encoders (MoE model)."""
    conditioning_lr_scale: float = 1.0
    """Learning-rate multiplier of the perturbation-conditioning modules (new in a fine-tune)."""
    control_set_size: int = 8
    """Perturbation stores: control cells of the same batch given to the model with each cell."""
    holdout_targets: tuple[str, ...] = ()
    """Perturbation stores: whole perturbations held out (besides ``val_fraction`` of every one's cells)."""
    engine: str = "plain"
    """"plain": one process or torch DDP; "deepspeed": DeepSpeed (ZeRO, expert parallelism)."""
    deepspeed_config: str | None = None
    """DeepSpeed JSON (a path or a file name in ``scmodel/configs/``); required by the deepspeed engine."""
    ep_size: int = 1
    """Expert-parallel ranks of the MoE layers (divides the experts and the world size)."""
    aux_loss_weight: float = 0.01
    """Weight of the routers' load-balancing loss added to the diffusion loss (MoE models)."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.max_steps <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError("max_steps, batch_size and grad_accum must be positive")
        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError("bf16 must be auto, on or off")
        if self.sample_order not in ("random", "confidence") or self.sample_steps <= 0:
            raise ValueError(f"sample_order must be random or confidence and sample_steps positive, got "
                             f"{self.sample_order!r}, {self.sample_steps}")
        if self.engine not in ("plain", "deepspeed"):
            raise ValueError(f"engine must be 'plain' or 'deepspeed', got {self.engine!r}")
        if self.ep_size < 1 or (self.ep_size > 1 and (self.engine != "deepspeed" or not self.model.startswith("moe"))):
            raise ValueError(f"ep_size {self.ep_size}: expert parallelism needs an MoE model and engine='deepspeed' "
                             f"(model {self.model!r}, engine {self.engine!r})")


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
    "finetune-tiny": TrainConfig(model="conditional-tiny", out="runs/finetune-tiny", batch_size=32, lr=3e-3,
                                 warmup_steps=20, log_every=10, eval_every=500, save_every=500, eval_batches=4,
                                 n_hvgs=512, context_genes=256, n_tokens=16, val_fraction=0.2, max_steps=1500),
}


def _setup_distributed(engine: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if engine == "deepspeed":  # DeepSpeed's own process group (also for a world of one: MoE layers need groups)
        from .engines.deepspeed import setup

        setup()
    elif world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def is_perturbation_store(store: str) -> bool:
    """Whether ``store`` was written by ``scdata vcc import`` (False for anything unreadable: the
    loaders report that)."""
    from scdata.store.layout import open_root

    try:
        return open_root(store).attrs.asdict().get("sczarr", {}).get("kind") == "perturbation"
    except Exception:
        return False


def _loaders(config: TrainConfig, tokenizer):
    """Training and held-out loaders; on a perturbation store the training batches carry conditioning."""
    from scdata.hvg.results import open_hvg_matrix

    from .data import LoaderConfig, StoreDataLoader, StoreDataset

    n_hvgs = config.n_hvgs
    if n_hvgs is not None:  # "the top N": a store with fewer materialized HVGs gives all of them
        n_hvgs = min(n_hvgs, len(open_hvg_matrix(config.store)[1]))
    common = dict(store=config.store, features="hvg", n_hvgs=n_hvgs, batch_size=config.batch_size, seed=config.seed,
                  tokenizer=tokenizer, val_fraction=config.val_fraction, drop_last=True, token_dtype="compact")
    if not is_perturbation_store(config.store):
        train = StoreDataLoader(StoreDataset(LoaderConfig(split="train", **common)), num_workers=config.num_workers)
        val = StoreDataLoader(StoreDataset(LoaderConfig(split="val", shuffle=False, **{**common, "drop_last": False})))
        return train, val
    from scdata.vcc.effects import perturbation_obs

    from .data.perturbation import Conditioning, PerturbationLoader, split_cells

    if not config.model.startswith(("conditional", "moe")):
        raise ValueError(f"{config.store} is a perturbation store: fine-tune a conditional or MoE model on it, not {config.model!r}")
    split = split_cells(perturbation_obs(config.store), config.val_fraction, config.seed, config.holdout_targets)
    conditioning = Conditioning(config.store, split.train, n_hvgs, config.control_set_size, config.seed,
                                effect_rows=split.train)
    train = StoreDataLoader(StoreDataset(LoaderConfig(rows=split.train, **common)), num_workers=config.num_workers)
    val = StoreDataLoader(StoreDataset(LoaderConfig(rows=split.val, shuffle=False, **{**common, "drop_last": False})))
    return PerturbationLoader(train, conditioning, config.seed), val


def config_from_dict(data: dict) -> TrainConfig:
    """The ``TrainConfig`` saved in a checkpoint (as plain data, so that it loads without pickle)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in data.items() if k in known}
    if isinstance(values.get("holdout_targets"), list):
        values["holdout_targets"] = tuple(values["holdout_targets"])
    if isinstance(values.get("diffusion"), dict):
        values["diffusion"] = DiffusionConfig(**values["diffusion"])
    return TrainConfig(**values)


class Trainer:
    """Parse -> build -> train -> close; one instance per process (rank)."""

    def __init__(self, config: TrainConfig, resume: bool = False, echo=print):
        self.config = config
        self.echo = echo
        check_engine(config, int(os.environ.get("WORLD_SIZE", 1)))  # configuration errors before any compute
        if config.freeze_base and not is_perturbation_store(config.store):
            raise ValueError("freeze_base trains only the perturbation adapters, which need batches labelled with "
                             "perturbations (target gene, sign, log2FC, control cells); the store loader's batches carry "
                             "none, so the adapters would get no gradient. Fine-tune on a perturbation store "
                             "(`scdata vcc import`), whose batches carry them.")
        self.rank, self.world, self.device = _setup_distributed(config.engine)
        torch.manual_seed(config.seed)
        self.tokenizer = BinnedTokenizer(n_tokens=config.n_tokens, max_value=config.tokenizer_max)
        self.train_loader, self.val_loader = _loaders(config, self.tokenizer)
        self.conditional_batches = hasattr(self.train_loader, "conditioning")  # a perturbation store's loader
        n_genes = self.train_loader.dataset.n_features
        options = {"ep_size": config.ep_size} if config.ep_size > 1 else {}
        model = MODELS[config.model](n_genes=n_genes, n_tokens=config.n_tokens, **options).to(self.device)
        if config.freeze_base:
            if not hasattr(model, "freeze_base"):
                raise ValueError(f"freeze_base: {config.model} has no perturbation-only parameters to train alone")
            model.freeze_base()  # before the optimizer is built: it holds the trainable parameters only
        self.mask_id = config.n_tokens
        os.makedirs(config.out, exist_ok=True)
        self.engine = build_engine(config, model, self.world, self.device, config.out)
        self.model = self.engine.module
        if config.init_from:
            _check_init_from(config)
            self.engine.load_weights(config.init_from)
        self.last_aux: float | None = None
        self.step = 0
        self.epoch = 0
        self._evaluator = None
        self.bf16 = self.engine.autocast and (
            config.bf16 == "on" or (config.bf16 == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()))
        self.metrics_path = os.path.join(config.out, "metrics.jsonl")
        if resume:
            self._load()
        elif self.rank == 0 and os.path.exists(self.metrics_path):
            os.remove(self.metrics_path)  # a fresh run starts a fresh log
        self.train_loader.set_epoch(self.epoch) if not resume else None
        if self.rank == 0:
            self.echo(f"{config.model}: {count_parameters(self.model):,} parameters; {n_genes} genes x {config.n_tokens} tokens; "
                      f"{len(self.train_loader.dataset.rows):,} training cells, {len(self.val_loader.dataset.rows):,} held out; "
                      f"device {self.device}{' bf16' if self.bf16 else ''}; world {self.world}; engine {config.engine}"
                      f"{f' (ep_size {config.ep_size})' if config.ep_size > 1 else ''}")

    # ---- checkpoints -------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.engine.has_checkpoint():
            raise FileNotFoundError(f"--resume: no {self.config.engine} checkpoint in {self.config.out}")
        state = self.engine.load()
        if len(state["loader"]) != self.world:
            raise ValueError(f"--resume: the checkpoint in {self.config.out} was written by {len(state['loader'])} "
                             f"processes, this run has {self.world}; resume with the same number")
        self.step, self.epoch = state["step"], state["epoch"]
        self.train_loader.load_state_dict(state["loader"][self.rank])
        set_rng_state(state["rng"][self.rank])
        self.echo(f"Resumed from {self.config.out} at step {self.step} (epoch {self.epoch})")

    def save(self) -> None:
        """Every rank's loader position and RNG state (plain data) go in with the engine's checkpoint."""
        mine = (self.train_loader.state_dict(), rng_state())
        gathered = [mine]
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, mine)
        self.engine.save({"step": self.step, "epoch": self.epoch, "loader": [g[0] for g in gathered],
                          "rng": [g[1] for g in gathered], "config": dataclasses.asdict(self.config)})

    # ---- training ----------------------------------------------------------------------------

    def _batches(self):
        """Token batches, or ``(tokens, conditioning)`` on a perturbation store."""
        while True:
            for tokens, extra in self.train_loader:
                yield (tokens, extra) if self.conditional_batches else tokens
            self.epoch += 1
            if self.config.epochs is not None and self.epoch >= self.config.epochs:
                return
            self.train_loader.set_epoch(self.epoch)

    def train_step(self, micro_batches: list[torch.Tensor]) -> float:
        cfg = self.config
        total, aux_total = 0.0, None
        for i, batch in enumerate(micro_batches):
            tokens, conditioning = batch if isinstance(batch, tuple) else (batch, {})
            conditioning = {k: v.to(self.device, non_blocking=True) for k, v in conditioning.items()}
            tokens = tokens.to(self.device, non_blocking=True).long()  # compact (uint8) on the wire
            gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + self.step * 131 + i + 7919 * self.rank)
            gene_index = None
            if cfg.context_genes and cfg.context_genes < tokens.shape[1]:
                gene_index = torch.randperm(tokens.shape[1], generator=gen)[: cfg.context_genes].sort().values
                tokens = tokens[:, gene_index.to(self.device)]
                gene_index = gene_index.to(self.device)
            t = sample_times(tokens.shape[0], cfg.diffusion, gen).to(self.device)
            noisy, mask = corrupt(tokens.cpu(), t.cpu(), cfg.diffusion, self.mask_id, gen)
            noisy, mask = noisy.to(self.device), mask.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.engine.forward(noisy, t, gene_index=gene_index, **conditioning)
            loss = diffusion_loss(logits, tokens, mask, t, cfg.diffusion) / len(micro_batches)
            aux = getattr(self.model, "aux_loss", None)  # MoE routers' load-balancing loss of this forward
            if aux is not None:
                aux = aux.float() / len(micro_batches)
                aux_total = (aux_total or 0.0) + float(aux.detach())
            self.engine.backward(loss if aux is None else loss + cfg.aux_loss_weight * aux)
            total += float(loss.detach())
        self.engine.step()
        self.step += 1
        self.last_aux = aux_total
        return total

    def _log_eval(self, result: dict) -> None:
        self._log({"step": self.step, "eval": True, **{k: v for k, v in result.items() if not k.startswith("_")}})

    def _log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _rng_untouched(self):
        """Evaluation draws from the global RNG (an MoE router's sampling) without moving the
        training stream: a run that evaluates and saves at step k resumes like one that went on."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def _evaluates_here(self) -> bool:
        """Rank 0 evaluates. With experts sharded over ranks (ep_size > 1) every forward pass is a
        collective, so every rank evaluates, on rank 0's held-out cells; rank 0 logs."""
        return self.config.ep_size > 1 or self.rank == 0

    def evaluate(self, with_samples: bool = True, sampling=None) -> dict:
        """The held-out evaluation; ``sampling`` (a ``SampleConfig``) overrides the run's sampler."""
        if self._evaluator is None:
            from .evaluate.evaluator import HeldOutEvaluator

            self._evaluator = HeldOutEvaluator(self.config, self.train_loader.dataset.config,
                                               self.val_loader.dataset.config, self.tokenizer, self.device)
            if self.config.ep_size > 1:  # every rank evaluates (collectives): on rank 0's cells
                self._evaluator.share_from(0)
        result = self._evaluator(self.model, with_samples=with_samples, sampling=sampling)
        result["_step"] = self.step
        return result

    def fit(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.config
        batches = self._batches()
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", disable=self.rank != 0 or not sys.stderr.isatty())
        last_eval = {}
        t_start = time.perf_counter()
        stop = min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)
        while self.step < stop:
            wait0 = time.perf_counter()
            micro = []
            for _ in range(cfg.grad_accum):
                try:
                    micro.append(next(batches))
                except StopIteration:
                    break
            if not micro:
                break
            wait = time.perf_counter() - wait0
            t0 = time.perf_counter()
            loss = self.train_step(micro)
            compute = time.perf_counter() - t0
            cells = sum(_tokens(m).shape[0] for m in micro) * self.world
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == 1:
                extra = {} if self.last_aux is None else {"aux_loss": self.last_aux}
                self._log({"step": self.step, "epoch": self.epoch, "loss": loss, **extra, "lr": self.engine.lr,
                           "cells_per_s": cells / (wait + compute), "tokens_per_s": cells * _tokens(micro[0]).shape[1] / (wait + compute),
                           "data_wait_fraction": wait / (wait + compute), "elapsed_s": time.perf_counter() - t_start})
                bar.set_postfix(loss=f"{loss:.3f}")
            if self.step % cfg.eval_every == 0 and self._evaluates_here():
                with self._rng_untouched():
                    last_eval = self.evaluate(with_samples=self.step >= stop or bool(
                        cfg.sample_every and self.step % cfg.sample_every == 0))
                self._log_eval(last_eval)
            if self.step % cfg.save_every == 0:
                self.save()
        bar.close()
        if self._evaluates_here() and (last_eval.get("_step") != self.step or "mmd_samples" not in last_eval):
            with self._rng_untouched():
                last_eval = self.evaluate()
            self._log_eval(last_eval)
        self.save()
        if self.rank == 0:
            plot_curves(self.metrics_path, os.path.join(cfg.out, "curves.png"))
            if "_cells" in last_eval:
                from .evaluate.sample_plots import plot_samples

                plot_samples(*last_eval["_cells"], os.path.join(cfg.out, "samples.png"))
            self.echo(summary_line(self.step, last_eval))
        return last_eval

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _tokens(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, tuple) else batch


def _check_init_from(config: TrainConfig) -> None:
    """A clear error when the checkpoint to fine-tune from has another shape than this run."""
    from .engines.state import safe_load

    if not os.path.isfile(config.init_from):
        if not os.path.isdir(config.init_from):
            raise FileNotFoundError(f"init_from {config.init_from}: no such checkpoint")
        return  # a DeepSpeed checkpoint directory: its engine checks the shapes
    saved = safe_load(config.init_from).get("config") or {}
    for name in ("model", "n_tokens", "n_hvgs"):
        if name in saved and saved[name] != getattr(config, name):
            raise ValueError(f"init_from {config.init_from} was trained with {name}={saved[name]!r}, this run has "
                             f"{getattr(config, name)!r}: set the same (--set {name}=...)")


def summary_line(step: int, result: dict) -> str:
    """The closing line of a run: masked-token metrics against the per-gene baseline, then sample
    quality (MMD and classifier AUC against real held-out cells) beside its baselines."""
    line = (f"step {step}: held-out masked-token loss {result['eval_loss']:.3f} vs per-gene marginal "
            f"{result['baseline_loss']:.3f}; accuracy {result['masked_accuracy']:.3f} vs per-gene majority "
            f"{result['baseline_accuracy']:.3f}; Pearson {result['pearson']:.3f}")
    if "mmd_samples" in result:
        line += (f"\nsamples vs real held-out cells (n={result['n_sample_cells']}, {result['sample_steps']} steps): "
                 f"MMD {result['mmd_samples']:.4f} (real {result['mmd_real']:.4f}, gene-shuffled "
                 f"{result['mmd_gene_shuffled']:.4f}, per-gene marginals {result['mmd_marginal']:.4f}); "
                 f"classifier AUC {result['auc_samples']:.3f} (real {result['auc_real']:.3f}, gene-shuffled "
                 f"{result['auc_gene_shuffled']:.3f}, per-gene marginals {result['auc_marginal']:.3f})")
    return line


def plot_curves(metrics_path: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(metrics_path)]
    train = [r for r in rows if not r.get("eval")]
    evals = [r for r in rows if r.get("eval")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
    axes[0].set(xlabel="step", ylabel="masked-token cross-entropy", title="Training loss")
    if evals:
        steps = [r["step"] for r in evals]
        axes[1].plot(steps, [r["eval_loss"] for r in evals], "o-", label="model")
        axes[1].plot(steps, [r["baseline_loss"] for r in evals], "s--", label="per-gene marginal")
        axes[1].set(xlabel="step", ylabel="cross-entropy at 50% masking", title="Held-out masked-token loss")
        axes[1].legend()
        last = evals[-1]["by_mask_ratio"]
        ratios = sorted(last, key=float)
        axes[2].plot([float(r) for r in ratios], [last[r]["accuracy"] for r in ratios], "o-", label="model")
        axes[2].plot([float(r) for r in ratios], [last[r]["baseline_accuracy"] for r in ratios], "s--", label="majority")
        axes[2].set(xlabel="mask ratio", ylabel="accuracy", title=f"By mask ratio (step {evals[-1]['step']})")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _coerce(value: str, current):
    if value.lower() == "none":  # optional fields (n_hvgs, context_genes, epochs...) can be unset
        return None
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(current, tuple):
        return tuple(v for v in value.split(",") if v)
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if current is None:
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def build_config(args) -> TrainConfig:
    config = CONFIGS[args.config]
    overrides = {k: v for k, v in (("store", args.store), ("out", args.out), ("max_steps", args.max_steps),
                                   ("batch_size", args.batch_size), ("lr", args.lr), ("num_workers", args.num_workers),
                                   ("seed", args.seed), ("eval_every", args.eval_every), ("save_every", args.save_every),
                                   ("init_from", args.init_from))
                 if v is not None}
    for item in args.set or ():
        key, value = item.split("=", 1)
        if key.startswith("diffusion."):
            sub = key.split(".", 1)[1]
            overrides["diffusion"] = replace(overrides.get("diffusion", config.diffusion),
                                             **{sub: _coerce(value, getattr(config.diffusion, sub))})
        elif key in {f.name for f in dataclasses.fields(TrainConfig)}:
            overrides[key] = _coerce(value, getattr(config, key))
        else:
            raise SystemExit(f"--set {key}: TrainConfig has no such field")
    return replace(config, **overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scmodel.train", description="train a discrete diffusion model on a store")
    p.add_argument("--config", choices=sorted(CONFIGS), default="mini")
    p.add_argument("--store")
    p.add_argument("--out")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--init-from", help="fine-tune: start from this checkpoint's weights")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.pt")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any TrainConfig field (diffusion.X too)")
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's; LOCAL_RANK is read
    args = p.parse_args(argv)
    config = build_config(args)
    trainer = Trainer(config, resume=args.resume)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
