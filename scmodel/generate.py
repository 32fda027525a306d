"""``python -m scmodel.generate``: cells sampled from a trained model, as an AnnData to open in scanpy.

    python -m scmodel.generate --checkpoint runs/mini-tiny/checkpoint.pt --n-cells 2000 --out cells.h5ad
    python -m scmodel.generate --checkpoint ... --n-cells 2000 --out cells.h5ad --steps 128 --temperature 0.9 --seed 1
    python -m scmodel.generate --checkpoint ... --n-cells 2000 --out cells.h5ad --guidance 1 --top-p 0.95 --remask 0.02

The sampler options (``scmodel.diffusion.sample``): ``--temperature`` and ``--top-p`` (nucleus),
``--guidance`` (classifier-free guidance on the cell state, for models with cell states),
``--remask`` (ReMDM remasking), ``--float64`` (double-precision draws), ``--bf16 on/off`` (the
forward passes; default as the run trained). ``benchmarks/bench_generation.py --tune`` measures
each on held-out cells kept apart from the benchmark's reference cells.

The model samples tokens for every gene it models (the run's HVGs, all of them in one context);
the file holds, per generated cell:

* ``X``: integer counts (CSR, int32). A model token is a bin of ``log1p(count / total * 1e4)``
  (the loader's normalization); each cell gets a library size ``total`` drawn at random from the
  training cells' ``total_counts``, a non-zero token a value drawn uniformly within its bin,
  and the count is ``max(1, round(expm1(value) * total / 1e4))``: zero tokens stay zero counts,
  expressed genes at least one. ``total`` counts every gene of the store (the normalization's
  denominator), so the cell's HVG counts sum to less than it, as in a real cell.
* ``layers["model_log1p"]``: the model's own values, the bin centres of its tokens (float32).
* ``layers["tokens"]``: the tokens (uint8 / int16).
* ``obs``: ``library_size`` (the drawn total), ``n_counts`` (the sum of the cell's X row) and, for
  a model with cell states (``--set n_states=K`` in training, as ``gen-cpu``), ``cell_state``: the
  state each cell was generated from, drawn with the training cells' state frequencies.
* ``var``: the store's gene ids (index) and ``gene_symbol``, in the model's gene order.
* ``uns["generation"]``: the checkpoint, its step and model, the store and the sampler settings.

A conditional model (``conditional``, ``conditional-tiny``) pretrained on an atlas store samples
unconditioned cells, as in its pretraining. A checkpoint fine-tuned on a perturbation store
generates perturbed cells through ``python -m scmodel.predict`` instead, which supplies their
conditioning (target, control cells).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    checkpoint: str
    n_cells: int
    out: str
    store: str | None = None
    """Store to read genes and library sizes from (default: the run's)."""
    steps: int | None = None
    """Reverse-process steps (default: the run's ``sample_steps``)."""
    temperature: float | None = None
    order: str | None = None
    top_p: float | None = None
    """Nucleus sampling: draw from the most likely tokens holding this much probability (1: all;
    default: the run's ``sample_top_p``)."""
    remask: float = 0.0
    """ReMDM remasking cap (``scmodel.diffusion.sample``; 0: none)."""
    guidance: float = 0.0
    """Classifier-free guidance weight on the cell state (a model with cell states; 0: none)."""
    float64: bool = False
    """Draw tokens from double-precision probabilities."""
    bf16: str | None = None
    """"on"/"off": the forward passes under bf16 autocast; default: as the run trained
    (``bf16="on"``, or "auto" on a GPU that supports it)."""
    seed: int = 0
    batch_size: int = 256
    """Cells sampled at once (memory grows with batch x genes x tokens)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.n_cells <= 0:
            raise ValueError(f"--n-cells must be positive, got {self.n_cells}")
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        if self.bf16 not in (None, "on", "off"):
            raise ValueError(f"--bf16 must be on or off, got {self.bf16!r}")


def dequantized_values(tokens: np.ndarray, n_tokens: int, max_value: float, rng: np.random.Generator) -> np.ndarray:
    """log1p values for fixed-bin tokens: 0 for token 0, uniform within the bin for the others
    (bin ``t`` covers ``[(t - 1) w, t w)`` with ``w = max_value / (n_tokens - 1)``)."""
    width = max_value / (n_tokens - 1)
    tokens = np.asarray(tokens)
    low = (tokens.astype(np.float64) - 1) * width
    values = low + rng.random(tokens.shape) * width
    return np.where(tokens > 0, values, 0.0)


def counts_from_values(values: np.ndarray, totals: np.ndarray, target_sum: float) -> np.ndarray:
    """Integer counts of log1p-normalized ``values`` (cells, genes) at library sizes ``totals``:
    ``max(1, round(expm1(v) * total / target_sum))`` where ``v > 0``, else 0."""
    expected = np.expm1(values) * (np.asarray(totals, dtype=np.float64)[:, None] / target_sum)
    return np.where(values > 0, np.maximum(1, np.rint(expected)), 0).astype(np.int32)


class Generator:
    """A trained model, its genes and its training cells' library sizes."""

    def __init__(self, config: GenerateConfig):
        from scdata.hvg.results import open_hvg_matrix
        from scdata.store.layout import open_root, read_strings

        from .run.network import build_run_model
        from .run.checkpoint import load_run
        from .run.loaders import is_perturbation_store
        from .tokenize import BinnedTokenizer

        if not os.path.exists(config.checkpoint):
            raise FileNotFoundError(f"--checkpoint {config.checkpoint}: no such file")
        self.config = config
        run, state = load_run(config.checkpoint, config.store, config.device)
        if is_perturbation_store(run.store):
            raise ValueError(f"{config.checkpoint} was trained on the perturbation store {run.store}: its cells need "
                             "conditioning (a target and control cells); generate them with python -m scmodel.predict")
        self.run, self.step = run, state.get("step")
        _, hvg_positions = open_hvg_matrix(run.store)
        n = len(hvg_positions) if run.n_hvgs is None else min(run.n_hvgs, len(hvg_positions))
        self.positions = np.asarray(hvg_positions[:n])
        root = open_root(run.store)
        gene_ids = read_strings(root["var/_index"])
        symbols = read_strings(root["var/gene_symbol"])
        self.gene_ids, self.symbols = gene_ids[self.positions], symbols[self.positions]
        self.tokenizer = BinnedTokenizer(n_tokens=run.n_tokens, max_value=run.tokenizer_max)
        self.device = torch.device(config.device)
        self.model = build_run_model(run, n).to(self.device)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.training_totals = self._training_totals(run)

    def _training_totals(self, run) -> np.ndarray:
        """``total_counts`` of the run's training cells (its split of the store)."""
        from .data import LoaderConfig, StoreDataset
        from scdata.store.layout import open_root

        self.loader_config = LoaderConfig(store=run.store, features="hvg", n_hvgs=len(self.positions), split="train",
                                          split_by=run.split_by, val_fraction=run.val_fraction, seed=run.seed)
        rows = StoreDataset(self.loader_config).rows
        totals = np.asarray(open_root(run.store)["obs/total_counts"][:], dtype=np.float64)[rows]
        totals = totals[totals > 0]
        if not len(totals):
            raise ValueError(f"{run.store}: the run's training cells have no counts to draw library sizes from")
        return totals

    def sample_tokens(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(tokens, cell states or None): a state model's cells each come from a drawn state."""
        from .diffusion import sample

        config, run = self.config, self.run
        generator = torch.Generator().manual_seed(config.seed)
        states = getattr(self.model, "cell_states", None)
        out, drawn = [], []
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for start in range(0, config.n_cells, config.batch_size):
                n = min(config.batch_size, config.n_cells - start)
                extra = {}
                if states is not None:
                    drawn.append(states.draw(n, generator))
                    extra["state"] = drawn[-1].to(self.device)
                out.append(sample(self.model, n, len(self.positions), self.steps, run.n_tokens,
                                  temperature=self.temperature, generator=generator, device=self.device,
                                  order=self.order, schedule=run.diffusion, top_p=self.top_p, remask=config.remask,
                                  guidance=config.guidance, float64=config.float64, **extra).cpu())
        return torch.cat(out), (torch.cat(drawn) if drawn else None)

    @property
    def steps(self) -> int:
        return self.config.steps or self.run.sample_steps

    @property
    def temperature(self) -> float:
        return self.run.sample_temperature if self.config.temperature is None else self.config.temperature

    @property
    def top_p(self) -> float:
        return self.run.sample_top_p if self.config.top_p is None else self.config.top_p

    @property
    def bf16(self) -> bool:
        """Autocast the forward passes to bf16: as asked, else as the run trained."""
        if self.config.bf16 is not None:
            return self.config.bf16 == "on"
        return self.run.bf16 == "on" or (self.run.bf16 == "auto" and self.device.type == "cuda"
                                         and torch.cuda.is_bf16_supported())

    @property
    def order(self) -> str:
        return self.config.order or self.run.sample_order

    def generate(self):
        """The generated cells as an AnnData (see the module docstring)."""
        import anndata as ad
        import pandas as pd
        import scipy.sparse as sp

        tokens, states = self.sample_tokens()
        rng = np.random.default_rng(self.config.seed)
        totals = rng.choice(self.training_totals, size=len(tokens), replace=True)
        values = dequantized_values(tokens.numpy(), self.run.n_tokens, self.run.tokenizer_max, rng)
        target_sum = self.loader_config.target
        counts = counts_from_values(values, totals, target_sum)
        n_tokens = self.run.n_tokens
        token_dtype = np.uint8 if n_tokens <= 256 else np.int32
        obs = pd.DataFrame({"library_size": totals.astype(np.int64), "n_counts": counts.sum(axis=1).astype(np.int64)},
                           index=[f"generated-{i}" for i in range(len(tokens))])
        if states is not None:
            obs["cell_state"] = pd.Categorical(states.numpy())
        var = pd.DataFrame({"gene_symbol": self.symbols.astype(str)}, index=pd.Index(self.gene_ids.astype(str), name="gene_id"))
        adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var,
                           layers={"model_log1p": self.tokenizer.detokenize(tokens).numpy().astype(np.float32),
                                   "tokens": tokens.numpy().astype(token_dtype)})
        adata.uns["generation"] = {
            "checkpoint": os.path.abspath(self.config.checkpoint), "step": int(self.step or 0), "model": self.run.model,
            "store": self.run.store, "seed": self.config.seed, "sample_steps": self.steps,
            "temperature": float(self.temperature), "sample_order": self.order, "top_p": float(self.top_p),
            "remask": float(self.config.remask), "guidance": float(self.config.guidance),
            "float64": bool(self.config.float64), "bf16": bool(self.bf16), "n_tokens": n_tokens,
            "tokenizer_max": float(self.run.tokenizer_max), "target_sum": float(target_sum),
            "n_states": int(self.run.n_states), "state_depth_bins": int(self.run.state_depth_bins),
            "library_size": "drawn with replacement from the training cells' total_counts",
            "counts": "max(1, round(expm1(v) * library_size / target_sum)), v uniform within each token's bin",
        }
        return adata


def generate(config: GenerateConfig, echo=print):
    """Sample ``config.n_cells`` cells and write them to ``config.out``; returns the AnnData."""
    adata = Generator(config).generate()
    directory = os.path.dirname(os.path.abspath(config.out))
    os.makedirs(directory, exist_ok=True)
    adata.write_h5ad(config.out)
    echo(f"Wrote {config.out}: {adata.n_obs} generated cells x {adata.n_vars} genes "
         f"({adata.uns['generation']['sample_steps']} steps, temperature {adata.uns['generation']['temperature']})")
    return adata


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scmodel.generate", description="sample cells from a trained model")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by python -m scmodel.train")
    p.add_argument("--n-cells", type=int, required=True)
    p.add_argument("--out", required=True, help="the .h5ad file to write")
    p.add_argument("--store", help="store to read genes and library sizes from (default: the run's)")
    p.add_argument("--steps", type=int, help="reverse-process steps (default: the run's sample_steps)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the run's)")
    p.add_argument("--order", choices=("random", "confidence"), help="reveal order (default: the run's)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (default: the run's, 1 unless set)")
    p.add_argument("--remask", type=float, default=0.0, help="ReMDM remasking cap eta (default 0: off)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="classifier-free guidance on the cell state (a model with cell states; default 0: off)")
    p.add_argument("--float64", action="store_true", help="draw tokens from double-precision probabilities")
    p.add_argument("--bf16", choices=("on", "off"), help="bf16 forward passes (default: as the run trained)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        generate(GenerateConfig(checkpoint=args.checkpoint, n_cells=args.n_cells, out=args.out, store=args.store,
                                steps=args.steps, temperature=args.temperature, order=args.order, top_p=args.top_p,
                                remask=args.remask, guidance=args.guidance, float64=args.float64, bf16=args.bf16,
                                seed=args.seed,
                                batch_size=args.batch_size, device=args.device))
    except (ValueError, FileNotFoundError) as exc:
        print(f"python -m scmodel.generate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
