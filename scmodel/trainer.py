"""The ``Trainer``: one process's (rank's) training loop, its checkpoints and its reports; its
command line is ``scmodel.train``.

Writes ``metrics.jsonl`` (one line per logged step with ``loss``, and ``aux_loss`` for MoE models;
evaluation lines with ``"eval": true``), a checkpoint (``checkpoint.pt`` for the plain engine,
``checkpoint/`` for DeepSpeed: model, optimizer, schedule, every rank's RNG state and loader
position; all loadable with ``weights_only=True``) and ``curves.png`` into ``--out``. The backend
(plain torch / DDP, or DeepSpeed) is an engine of ``scmodel.engines`` behind one step interface.

What a run is (``TrainConfig``, its presets and checkpoints, its loaders) comes from
``scmodel.run``, the held-out evaluation from ``scmodel.evaluate``: the Trainer imports both, and
neither imports it (torchtitan's split of ``train.py`` / ``trainer``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import torch

from .diffusion import corrupt, diffusion_loss, sample_times
from .distributed import setup_distributed
from .engines import build_engine, check_engine
from .engines.state import rng_state, set_rng_state
from .evaluate.evaluator import HeldOutEvaluator
from .evaluate.heldout import summary_line
from .evaluate.sample_plots import plot_samples
from .models import count_parameters
from .run.network import build_run_model
from .run.checkpoint import check_init_from
from .run.programs import fit_run_programs, inherited_programs
from .run.states import fit_run_states
from .run.config import TrainConfig
from .run.loaders import build_loaders, is_perturbation_store
from .tokenize import BinnedTokenizer


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
        self.rank, self.world, self.device = setup_distributed(config.engine)
        torch.manual_seed(config.seed)
        self.tokenizer = BinnedTokenizer(n_tokens=config.n_tokens, max_value=config.tokenizer_max)
        self.train_loader, self.val_loader = build_loaders(config, self.tokenizer)
        self.conditional_batches = hasattr(self.train_loader, "conditioning")  # a perturbation store's loader
        n_genes = self.train_loader.dataset.n_features
        if config.n_states and self.conditional_batches:
            raise ValueError(f"n_states: {config.store} is a perturbation store; cell states condition the atlas "
                             "models' unconditional generation")
        model = build_run_model(config, n_genes)
        if config.n_states and not resume and not config.init_from:  # a resumed or fine-tuned run loads its own
            model.cell_states.load_codebook(fit_run_states(config, self.train_loader.dataset.rows, n_genes, self.tokenizer))
        model = model.to(self.device)
        if config.freeze_base:
            if not hasattr(model, "freeze_base"):
                raise ValueError(f"freeze_base: {config.model} has no perturbation-only parameters to train alone")
            model.freeze_base()  # before the optimizer is built: it holds the trainable parameters only
        self.mask_id = config.n_tokens
        os.makedirs(config.out, exist_ok=True)
        self.engine = build_engine(config, model, self.world, self.device, config.out)
        self.model = self.engine.module
        self.programs = None  # the atlas's gene programs this run saves with its weights
        if config.init_from:
            check_init_from(config)
            self.engine.load_weights(config.init_from)
            if os.path.isfile(config.init_from):
                self.programs = inherited_programs(config.init_from)
        self.last_aux: float | None = None
        self.step = 0
        self.epoch = 0
        self._evaluator = None
        self.bf16 = self.engine.autocast and (
            config.bf16 == "on" or (config.bf16 == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()))
        self.metrics_path = os.path.join(config.out, "metrics.jsonl")
        if resume:
            self._load()  # the programs come back with the checkpoint: not fitted again
        elif not config.init_from and config.programs_cells > 0 and not self.conditional_batches:
            self.programs = fit_run_programs(config, self.train_loader.dataset.rows, n_genes)
        if not resume and self.rank == 0 and os.path.exists(self.metrics_path):
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
        self.programs = state.get("programs", self.programs)
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
                          "rng": [g[1] for g in gathered], "config": dataclasses.asdict(self.config),
                          **({"programs": self.programs} if self.programs is not None else {})})

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
            if self.config.n_states:  # each cell's state, from its clean tokens over every modelled gene
                conditioning["state"] = self.model.cell_states.assign(tokens)
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
                plot_samples(*last_eval["_cells"], os.path.join(cfg.out, "samples.png"))
            self.echo(summary_line(self.step, last_eval))
        return last_eval

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _tokens(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, tuple) else batch


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
