"""``TrainConfig``: one training run, as every command that starts or reads a run sees it.

Its own module, below the commands (``scmodel.train``, ``scmodel.evaluate``, ``scmodel.predict``)
and the ``Trainer``: each of them reads a run's configuration, from presets and overrides or from a
checkpoint (``config_from_dict``), without importing another command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..diffusion import DiffusionConfig
from ..models import MODELS, STATE_MODELS


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
    split_by: str = "experiment"
    """How an atlas store's cells are held out (``LoaderConfig.split_by``): "experiment", whole
    experiments (a model of experiments it has not seen); "cell", ``val_fraction`` of every
    experiment's cells (the generative-model field's split)."""
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 4
    save_every: int = 200
    bf16: str = "auto"
    """"auto": bf16 autocast on GPUs that support it; "on"/"off" force it (on CPUs with AVX-512 BF16 /
    AMX, "on" runs the matrix products in bf16; ``benchmarks/bench_train.py`` measures what it buys)."""
    compile: bool = False
    """``torch.compile`` the training forward (plain engine): fused kernels instead of eager ops, at a
    compilation cost of tens of seconds on the first steps."""
    stop_at_step: int | None = None
    """Stop (and checkpoint) at this step without changing the schedule, e.g. for time-limited jobs."""
    init_from: str | None = None
    """Fine-tuning: start from this checkpoint's weights (optimizer and data position start fresh)."""
    sample_steps: int = 64
    """Reverse-process steps when the evaluation samples cells."""
    sample_order: str = "random"
    """"random": the ancestral masked-diffusion sampler; "confidence": most confident first (MaskGIT)."""
    sample_temperature: float = 1.0
    sample_top_p: float = 1.0
    """Nucleus sampling mass of the run's sampler (1: every token); ``python -m scmodel.generate``
    and the evaluation use it unless told otherwise."""
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
    programs_cells: int = 50_000
    """A run on a scBaseCount store (pretraining) fits the atlas's gene programs
    (``scmodel.coexpression``) from up to this many training cells and saves them with the weights;
    a fine-tune inherits them from ``init_from``. 0: none."""
    programs_genes: int = 4096
    """Genes the programs cover besides the model's: the store's most expressed (``var/means``), so
    an unseen knockdown's effect reaches genes outside the HVGs. 0: the model's genes only."""
    programs_components: int = 128
    """Programs kept (principal directions of the atlas's within-state covariance)."""
    n_states: int = 0
    """Cell states (k-means clusters of the training cells, ``scmodel.models.states``) the model is
    conditioned on and generates from: a state drawn by its frequency first, then the genes given
    it. Fitted before training from up to ``states_cells`` training cells, saved with the weights.
    0: an unconditional model. The mini models only."""
    state_depth_bins: int = 1
    """Crossed with the clusters: quantile bins of the cells' detected genes (their depth), so that
    a generated cell's depth is drawn with its cluster instead of inferred from its own genes as
    they are sampled (``n_states * state_depth_bins`` states)."""
    states_cells: int = 20_000
    """Training cells the cell states are fitted on."""
    state_prior: bool = False
    """Add each state's per-gene token log-frequencies (of the cells the states are fitted on) to
    the model's logits (``MiniConfig.state_prior``): the network learns what independent genes
    within a state miss. Needs ``n_states``."""
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
        if self.programs_cells < 0 or self.programs_genes < 0 or self.programs_components < 1:
            raise ValueError(f"programs_cells and programs_genes must be >= 0 and programs_components >= 1, got "
                             f"{self.programs_cells}, {self.programs_genes}, {self.programs_components}")
        if self.n_states < 0 or self.n_states == 1 or (self.n_states and self.model not in STATE_MODELS):
            raise ValueError(f"n_states={self.n_states}: 0 (no cell states) or at least 2, on a model of "
                             f"{', '.join(STATE_MODELS)} (model {self.model!r})")
        if self.state_depth_bins < 1:
            raise ValueError(f"state_depth_bins must be at least 1, got {self.state_depth_bins}")
        if self.state_prior and not self.n_states:
            raise ValueError("state_prior needs cell states: set n_states too")
        if self.n_states and self.states_cells < 10 * self.n_states:
            raise ValueError(f"states_cells={self.states_cells}: {self.n_states} cell states need at least "
                             f"{10 * self.n_states} cells to be fitted on")
        if self.split_by not in ("experiment", "cell"):
            raise ValueError(f"split_by must be 'experiment' or 'cell', got {self.split_by!r}")
        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError("bf16 must be auto, on or off")
        if not 0.0 < self.sample_top_p <= 1.0:
            raise ValueError(f"sample_top_p must be in (0, 1], got {self.sample_top_p}")
        if self.sample_order not in ("random", "confidence") or self.sample_steps <= 0:
            raise ValueError(f"sample_order must be random or confidence and sample_steps positive, got "
                             f"{self.sample_order!r}, {self.sample_steps}")
        if self.engine not in ("plain", "deepspeed"):
            raise ValueError(f"engine must be 'plain' or 'deepspeed', got {self.engine!r}")
        if self.ep_size < 1 or (self.ep_size > 1 and (self.engine != "deepspeed" or not self.model.startswith("moe"))):
            raise ValueError(f"ep_size {self.ep_size}: expert parallelism needs an MoE model and engine='deepspeed' "
                             f"(model {self.model!r}, engine {self.engine!r})")


def config_from_dict(data: dict) -> TrainConfig:
    """The ``TrainConfig`` saved in a checkpoint (as plain data, so that it loads without pickle)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in data.items() if k in known}
    if isinstance(values.get("holdout_targets"), list):
        values["holdout_targets"] = tuple(values["holdout_targets"])
    if isinstance(values.get("diffusion"), dict):
        values["diffusion"] = DiffusionConfig(**values["diffusion"])
    return TrainConfig(**values)
