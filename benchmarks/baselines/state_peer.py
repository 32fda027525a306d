"""State (Arc Institute's ``arc-state`` 0.11.1) as a peer for unseen perturbations.

State runs in its own virtual environment (``benchmarks/baselines/setup_state.sh``: Python 3.11,
torch 2.13.0 CPU, then arc-state); this module writes its inputs with our stack and drives its
``state tx train`` / ``state tx infer`` commands.

Set-up, as State's documentation asks: X is log1p(normalize_total) of the training file's counts;
obs ``target_gene``, ``cell_type`` (one value: the screen is one cell type) and ``batch`` as
categoricals. One-hot perturbation identities cannot generalize to targets without training
cells, so every target, unseen ones included, gets a feature vector from the same atlas the
other methods use (``perturbation_features_file``: the target gene's row of the atlas PCA
embedding). The model is ``state_sm`` shrunk to what 2 cores train (hidden 128, 2 layers,
~0.6M trainable parameters; ``state_sm`` itself is 53M, ~5 s a step here).

Its predictions (cells in log1p space) are turned into per-gene ratios of mean expression against
its own predicted controls, and the cells are made from the same real controls as every other
row (``scmodel.delta_cells``), so State is scored on what it predicts, in the same space.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, "..", ".work", "state-venv")
CELL_TYPE = "screen"
DATASET = "screen"
SHRINK = [
    "model.kwargs.hidden_dim=128",
    "model.kwargs.n_encoder_layers=2",
    "model.kwargs.n_decoder_layers=2",
    "model.kwargs.transformer_backbone_kwargs.num_hidden_layers=2",
    "model.kwargs.transformer_backbone_kwargs.intermediate_size=512",
    "model.kwargs.transformer_backbone_kwargs.num_attention_heads=4",
    "model.kwargs.transformer_backbone_kwargs.num_key_value_heads=4",
    "model.kwargs.transformer_backbone_kwargs.head_dim=32",
]
EPS = 1e-2


def available() -> bool:
    return os.path.exists(os.path.join(VENV, "bin", "state"))


def _log1p(counts: np.ndarray) -> np.ndarray:
    return np.log1p(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0) * 1e4).astype(np.float32)


def _run(cmd: list[str], log: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
               WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    with open(log, "w") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        with open(log) as f:
            raise RuntimeError(f"{cmd[0]} {' '.join(cmd[1:3])} failed (rc {done.returncode}):\n{f.read()[-4000:]}")


def train_state(work: str, training, features: dict[str, np.ndarray], control: str, steps: int, seed: int = 0,
                overrides: tuple[str, ...] = ()) -> str:
    """Train State on ``training`` (AnnData of counts, obs target_gene/batch); its run directory.
    A finished run with the same inputs (``inputs.json``) is reused, any other one removed."""
    import anndata as ad
    import scipy.sparse as sp
    import torch

    genes = list(training.var_names)
    inputs = {"steps": steps, "seed": seed, "genes": genes, "n_cells": int(training.n_obs), "shrink": SHRINK,
              "features": sorted(features), **({"overrides": list(overrides)} if overrides else {})}
    marker, run_dir = os.path.join(work, "inputs.json"), os.path.join(work, "runs", "peer")
    if os.path.exists(marker) and os.path.exists(os.path.join(run_dir, "checkpoints", "final.ckpt")):
        with open(marker) as f:
            if json.load(f) == inputs:
                return run_dir
    shutil.rmtree(work, ignore_errors=True)  # a run directory left behind would be resumed, not retrained
    data = os.path.join(work, "data")
    os.makedirs(data)
    x = training.X.toarray() if sp.issparse(training.X) else np.asarray(training.X)
    obs = pd.DataFrame({"target_gene": pd.Categorical(training.obs["target_gene"].astype(str)),
                        "cell_type": pd.Categorical([CELL_TYPE] * training.n_obs),
                        "batch": pd.Categorical(training.obs["batch"].astype(str))}, index=training.obs_names)
    train = ad.AnnData(X=_log1p(x.astype(np.float64)), obs=obs, var=pd.DataFrame({"gene_name": genes}, index=genes))
    train.uns["log1p"] = {"base": None}
    train.write_h5ad(os.path.join(data, f"{DATASET}.h5ad"))
    features_path = os.path.join(work, "features.pt")
    torch.save({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in features.items()}, features_path)
    toml = os.path.join(work, "split.toml")
    with open(toml, "w") as f:
        f.write(f'[datasets]\n{DATASET} = "{data}"\n\n[training]\n{DATASET} = "train"\n')
    _run([os.path.join(VENV, "bin", "state"), "tx", "train", f"data.kwargs.toml_config_path={toml}",
          "data.kwargs.pert_col=target_gene", "data.kwargs.cell_type_key=cell_type", "data.kwargs.batch_col=batch",
          f"data.kwargs.control_pert={control}", "data.kwargs.num_workers=0",
          f"data.kwargs.perturbation_features_file={features_path}", "model=state_sm", *SHRINK,
          f"training.max_steps={steps}", "training.val_freq=1000000000", "use_wandb=false",
          f"output_dir={os.path.join(work, 'runs')}", "name=peer", *overrides], os.path.join(work, "train.log"))
    with open(marker, "w") as f:
        json.dump(inputs, f)
    return run_dir


def predict_state(run_dir: str, controls, batches: list[str], targets: list[str], control: str, name: str,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """State's prediction for ``targets`` from the real ``controls`` (AnnData of counts; each cell
    given one of ``batches``); per target, the ratio of its predicted mean expression to State's
    own predicted controls'. Files go beside the run, named ``name``."""
    import anndata as ad
    import scipy.sparse as sp

    work = os.path.dirname(os.path.dirname(run_dir))
    genes = list(controls.var_names)
    c = controls.X.toarray() if sp.issparse(controls.X) else np.asarray(controls.X)
    drawn = np.random.default_rng(seed).choice(batches, size=len(c))
    var = pd.DataFrame({"gene_name": genes}, index=genes)
    blocks = [ad.AnnData(X=_log1p(c.astype(np.float64)), var=var.copy(), obs=pd.DataFrame(
        {"target_gene": label, "cell_type": CELL_TYPE, "batch": drawn}, index=[f"{i}__{label}" for i in range(len(c))]))
        for label in [control, *targets]]
    template = ad.concat(blocks)
    for column in ("target_gene", "cell_type", "batch"):
        template.obs[column] = pd.Categorical(template.obs[column].astype(str))
    template.var = var
    template_path, pred_path = os.path.join(work, f"{name}_template.h5ad"), os.path.join(work, f"{name}_pred.h5ad")
    template.write_h5ad(template_path)
    _run([os.path.join(VENV, "bin", "state"), "tx", "infer", "--model-dir", run_dir, "--checkpoint",
          os.path.join(run_dir, "checkpoints", "final.ckpt"), "--adata", template_path, "--pert-col", "target_gene",
          "--output", pred_path], os.path.join(work, f"{name}_infer.log"))
    return _ratios(ad.read_h5ad(pred_path), control, targets)


def _ratios(pred, control: str, targets: list[str]) -> dict[str, np.ndarray]:
    """Per target, the ratio of State's predicted mean expression to its own predicted controls'."""
    import scipy.sparse as sp

    values = pred.X.toarray() if sp.issparse(pred.X) else np.asarray(pred.X)
    labels = pred.obs["target_gene"].astype(str).to_numpy()
    means = {label: np.expm1(values[labels == label]).mean(axis=0) for label in [control, *targets]}
    return {t: (means[t] + EPS) / (means[control] + EPS) for t in targets}
