"""Train scVI on a training file of raw counts and generate cells from it, for the generation benchmark.

Run with the scvi venv's python (``benchmarks/baselines/setup_scvi.sh``), not the main one; the main
venv drives it through ``benchmarks/baselines/scvi_peer.py``::

    python scvi_generate.py --train TRAIN.h5ad --heldout HELDOUT.h5ad --n-samples N --out DIR --seed S \
        [--max-epochs E] [--n-latent 10] [--threads 2]

The model is ``scvi.model.SCVI`` with scvi-tools' own defaults (gene likelihood ``zinb``, observed
library size, ``max_epochs`` from ``get_max_epochs_heuristic`` unless given), trained on CPU. Two
kinds of cells come out, both integer counts over TRAIN's genes, stored as CSR int32:

``prior_samples.h5ad``
    ``N`` cells from the generative model alone: z ~ N(0, I), a library size drawn (with replacement)
    from the observed totals of TRAIN's cells, decoded by ``module.generative`` and sampled from the
    count distribution. This is the row a generative model is judged on: nothing real goes in but
    the library size, which scVI never models itself (``use_observed_lib_size=True``).
``reconstructions.h5ad``
    one posterior-predictive sample per HELDOUT cell (``posterior_predictive_sample``): scVI encodes
    the real cell first, so this is the optimistic row, an upper bound on what its decoder can do.

``scvi_run.json`` records the version, settings, timings and final training losses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

BATCH = 1024  # cells decoded at once; bounds memory at BATCH x genes floats per tensor


def _fail(message: str) -> None:
    print(f"scvi_generate: {message}", file=sys.stderr)
    sys.exit(2)


def _read_counts(path: str, role: str):
    """The AnnData at ``path`` with X checked to be finite, non-negative integer counts: scVI's
    likelihoods are for raw counts, and a normalized file would train without complaint."""
    import anndata as ad
    import scipy.sparse as sp

    if not os.path.exists(path):
        _fail(f"{role} file {path} does not exist")
    adata = ad.read_h5ad(path)
    if adata.n_obs == 0 or adata.n_vars == 0:
        _fail(f"{role} file {path} is empty ({adata.n_obs} cells x {adata.n_vars} genes)")
    if adata.X is None:
        _fail(f"{role} file {path} has no X")
    values = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)
    if values.size and not np.issubdtype(values.dtype, np.integer):
        bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
        if bad.any():
            _fail(f"{role} file {path}: X is not raw integer counts (e.g. value {float(values[bad].flat[0])}); "
                  "scVI needs the unnormalized counts")
    elif values.size and (values < 0).any():
        _fail(f"{role} file {path}: X has negative values; scVI needs raw counts")
    if not adata.var_names.is_unique:
        _fail(f"{role} file {path}: var_names are not unique")
    # scvi-tools copies X to float32 inside its data loader either way; one CSR float32 copy is what it trains on.
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def _as_output(counts: np.ndarray, obs, var):
    """An AnnData of CSR int32 counts (samples come out as float tensors holding integers)."""
    import anndata as ad
    import scipy.sparse as sp

    return ad.AnnData(X=sp.csr_matrix(np.rint(counts).astype(np.int32)), obs=obs, var=var.copy())


def sample_prior(model, libraries: np.ndarray, seed: int) -> np.ndarray:
    """Counts for ``len(libraries)`` cells from scVI's prior: z ~ N(0, I), decoded through
    ``module.generative`` with ``library = log(total counts)`` (as ``_regular_inference`` hands it
    on when ``use_observed_lib_size``), batch 0 and label 0 (no batch or labels key), then one
    draw from the count distribution ``px``."""
    import torch

    module = model.module
    if not module.use_observed_lib_size:
        raise RuntimeError("prior sampling here assumes use_observed_lib_size=True (scVI's default)")
    module.eval()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # px.sample() draws from the global generator
    out = []
    with torch.inference_mode():
        for start in range(0, len(libraries), BATCH):
            lib = torch.as_tensor(libraries[start:start + BATCH], dtype=torch.float32).unsqueeze(1)
            n = lib.shape[0]
            z = module.z_encoder.z_transformation(torch.randn(n, module.n_latent, generator=generator))
            zeros = torch.zeros(n, 1, dtype=torch.long)
            px = module.generative(z=z, library=torch.log(lib), batch_index=zeros, y=zeros)["px"]
            out.append(px.sample().cpu().numpy())
    return np.concatenate(out, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="h5ad of raw counts to train on")
    parser.add_argument("--heldout", required=True, help="h5ad of raw counts to reconstruct (same genes)")
    parser.add_argument("--n-samples", type=int, required=True, help="cells to generate from the prior")
    parser.add_argument("--out", required=True, help="directory for the outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="default: scvi-tools' heuristic")
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.n_samples < 1:
        _fail(f"--n-samples must be positive, got {args.n_samples}")

    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    train = _read_counts(args.train, "TRAIN")
    heldout = _read_counts(args.heldout, "HELDOUT")
    if list(heldout.var_names) != list(train.var_names):
        missing = train.var_names.difference(heldout.var_names)
        extra = heldout.var_names.difference(train.var_names)
        if len(missing) or len(extra) or heldout.n_vars != train.n_vars:
            _fail(f"genes differ between TRAIN {args.train} ({train.n_vars}) and HELDOUT {args.heldout} "
                  f"({heldout.n_vars}): {len(missing)} missing from HELDOUT (e.g. {list(missing[:3])}), "
                  f"{len(extra)} only in HELDOUT (e.g. {list(extra[:3])})")
        heldout = heldout[:, train.var_names].copy()  # same genes, another order

    import scvi
    from scvi.model import SCVI
    from scvi.model._utils import get_max_epochs_heuristic

    scvi.settings.seed = args.seed
    scvi.settings.dl_num_workers = 0
    torch.set_num_threads(args.threads)  # scvi's import may have reset it
    os.makedirs(args.out, exist_ok=True)

    train.obs = pd.DataFrame(index=train.obs_names)  # no batch / labels: one population, as the benchmark asks
    heldout.obs = pd.DataFrame(index=heldout.obs_names)
    SCVI.setup_anndata(train)
    model = SCVI(train, n_latent=args.n_latent)
    max_epochs = args.max_epochs if args.max_epochs is not None else get_max_epochs_heuristic(train.n_obs)
    started = time.perf_counter()
    model.train(max_epochs=args.max_epochs, accelerator="cpu", devices=1, enable_progress_bar=False)
    train_seconds = time.perf_counter() - started
    epochs_run = int(model.trainer.current_epoch) if getattr(model, "trainer", None) is not None else max_epochs

    started = time.perf_counter()
    totals = np.asarray(train.X.sum(axis=1)).ravel()
    pool = np.flatnonzero(totals > 0)
    if not len(pool):
        _fail(f"TRAIN file {args.train}: every cell has zero counts")
    drawn = np.random.default_rng(args.seed).choice(pool, size=args.n_samples, replace=True)
    prior = sample_prior(model, totals[drawn], args.seed)
    prior_obs = pd.DataFrame({"library": totals[drawn].astype(np.int64), "library_from": train.obs_names[drawn].to_numpy()},
                             index=[f"scvi_prior_{i}" for i in range(args.n_samples)])
    prior_seconds = time.perf_counter() - started

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    recon = model.posterior_predictive_sample(adata=heldout, n_samples=1).todense()
    recon_seconds = time.perf_counter() - started

    prior_path = os.path.join(args.out, "prior_samples.h5ad")
    recon_path = os.path.join(args.out, "reconstructions.h5ad")
    _as_output(prior, prior_obs, train.var).write_h5ad(prior_path)
    _as_output(recon, pd.DataFrame(index=heldout.obs_names), train.var).write_h5ad(recon_path)

    history = {}
    for key, frame in (model.history or {}).items():
        values = frame.iloc[:, 0].dropna() if hasattr(frame, "iloc") else []
        if len(values):
            history[key] = float(values.iloc[-1])
    module = model.module
    run = {
        "scvi_tools_version": scvi.__version__,
        "torch_version": torch.__version__,
        "settings": {
            "n_latent": args.n_latent,
            "gene_likelihood": module.gene_likelihood,
            "dispersion": module.dispersion,
            "latent_distribution": module.latent_distribution,
            "use_observed_lib_size": bool(module.use_observed_lib_size),
            "n_hidden": int(model.init_params_["non_kwargs"]["n_hidden"]),
            "n_layers": int(model.init_params_["non_kwargs"]["n_layers"]),
            "max_epochs_requested": args.max_epochs,
            "max_epochs": max_epochs,
            "epochs_run": epochs_run,
            "seed": args.seed,
            "threads": args.threads,
            "accelerator": "cpu",
        },
        "train_seconds": train_seconds,
        "sample_seconds": prior_seconds + recon_seconds,
        "prior_sample_seconds": prior_seconds,
        "reconstruction_seconds": recon_seconds,
        "n_train_cells": int(train.n_obs),
        "n_train_cells_fit": int(len(model.train_indices)),  # scvi-tools keeps 10% aside for validation by default
        "n_heldout_cells": int(heldout.n_obs),
        "n_genes": int(train.n_vars),
        "n_prior_samples": int(args.n_samples),
        "final_train_elbo": history.get("elbo_train"),
        "final_train_loss": history.get("train_loss", history.get("train_loss_epoch")),
        "final_history": history,
        "prior_samples": prior_path,
        "reconstructions": recon_path,
    }
    with open(os.path.join(args.out, "scvi_run.json"), "w") as f:
        json.dump(run, f, indent=1)
    print(f"scvi_generate: {epochs_run} epochs in {train_seconds:.1f} s; {args.n_samples} prior cells, "
          f"{heldout.n_obs} reconstructions -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
