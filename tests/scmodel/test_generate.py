"""``python -m scmodel.generate``: a trained model's cells as an AnnData that scanpy reads and
processes, with integer counts whose zeros are the model's zero tokens and whose values come back
to the model's bins under the loader's normalization."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from scmodel.generate import counts_from_values, dequantized_values
from scmodel.train import main as train_main
from tests.conftest import materialized_store


def test_dequantized_values_stay_in_their_bins():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 8, size=(200, 30))
    values = dequantized_values(tokens, n_tokens=8, max_value=7.0, rng=rng)  # bins of width 1
    assert (values[tokens == 0] == 0).all()
    nz = tokens > 0
    assert ((values[nz] >= tokens[nz] - 1) & (values[nz] < tokens[nz])).all()


def test_counts_from_values_by_hand():
    values = np.array([[0.0, np.log1p(2.0), np.log1p(0.01)], [np.log1p(5.0), 0.0, np.log1p(0.3)]])
    totals = np.array([10_000.0, 20_000.0])
    # cell 0 at depth 1x: 2 -> 2, 0.01 -> 1 (expressed genes keep at least one count);
    # cell 1 at 2x: 5 -> 10, 0.3 -> round(0.6) = 1
    np.testing.assert_array_equal(counts_from_values(values, totals, 1e4), [[0, 2, 1], [10, 0, 1]])


@pytest.fixture(scope="module")
def run(demo_bucket, tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    store = materialized_store(demo_bucket, root, n_hvgs=48)
    out = str(root / "run")
    assert train_main(["--config", "mini-tiny", "--store", store, "--max-steps", "3", "--out", out, "--batch-size", "16",
                       "--set", "eval_every=100", "--set", "sample_steps=4"]) == 0
    return store, os.path.join(out, "checkpoint.pt")


def test_generated_cells_open_in_scanpy_with_counts_the_model_s_tokens_explain(run, tmp_path):
    import anndata as ad
    import scanpy as sc

    import scdata

    store, checkpoint = run
    path = str(tmp_path / "cells" / "generated.h5ad")
    done = subprocess.run([sys.executable, "-m", "scmodel.generate", "--checkpoint", checkpoint, "--n-cells", "70",
                           "--out", path, "--steps", "6", "--seed", "3", "--batch-size", "32"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    adata = ad.read_h5ad(path)
    assert adata.shape == (70, 48)
    x = adata.X.toarray()
    assert np.issubdtype(x.dtype, np.integer) and x.min() >= 0
    tokens = adata.layers["tokens"].astype(int)
    np.testing.assert_array_equal(x > 0, tokens > 0)  # zero counts exactly where the model said "not expressed"

    # the loader's normalization of the counts lands back in each token's bin (rounding to an
    # integer can move a low count across its bin edge, so allow one bin)
    info = adata.uns["generation"]
    width = info["tokenizer_max"] / (info["n_tokens"] - 1)
    value = np.log1p(x / adata.obs["library_size"].to_numpy()[:, None] * info["target_sum"])
    back = np.minimum(np.floor(value / width), info["n_tokens"] - 2) + 1
    assert (np.abs(back - tokens)[tokens > 0] <= 1).all()
    assert (back == tokens)[tokens > 1].mean() > 0.9

    ds = scdata.open_store(store)  # genes: the run's HVGs in the model's order, with ids and symbols
    assert list(adata.var["gene_symbol"]) == [str(s) for s in ds.gene_symbol.values[hvg_positions(store, 48)]]
    assert set(adata.obs["library_size"]) <= set(ds.total_counts.values.astype(int))
    assert info["seed"] == 3 and info["sample_steps"] == 6 and info["checkpoint"] == os.path.abspath(checkpoint)

    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=10)
    assert adata.obsm["X_pca"].shape == (70, 10)


def hvg_positions(store: str, n: int) -> np.ndarray:
    from scdata.hvg.results import open_hvg_matrix

    return np.asarray(open_hvg_matrix(store)[1][:n])


def test_the_same_seed_gives_the_same_cells_and_another_seed_others(run, tmp_path):
    from scmodel.generate import GenerateConfig, generate

    _, checkpoint = run
    a, b, c = (generate(GenerateConfig(checkpoint=checkpoint, n_cells=20, out=str(tmp_path / f"{name}.h5ad"), steps=4,
                                       seed=seed), echo=lambda *_: None)
               for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_a_missing_checkpoint_is_named(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scmodel.generate", "--checkpoint", str(tmp_path / "nope.pt"),
                           "--n-cells", "5", "--out", str(tmp_path / "x.h5ad")], capture_output=True, text=True)
    assert done.returncode == 1 and "nope.pt: no such file" in done.stderr


@pytest.fixture(scope="module")
def state_run(run, tmp_path_factory):
    """A mini-tiny trained with 4 cell states on the same store (every training cell in the codebook)."""
    store, _ = run
    out = str(tmp_path_factory.mktemp("states") / "run")
    assert train_main(["--config", "mini-tiny", "--store", store, "--max-steps", "3", "--out", out, "--batch-size", "16",
                       "--set", "eval_every=100", "--set", "sample_steps=4", "--set", "n_states=4",
                       "--set", "states_cells=100000", "--set", "programs_cells=0"]) == 0
    return store, out


def test_a_state_model_s_codebook_is_fitted_on_its_training_batches_and_survives_a_resume(state_run):
    from scmodel.engines.state import safe_load
    from scmodel.run.checkpoint import load_run
    from scmodel.run.loaders import build_loaders
    from scmodel.tokenize import BinnedTokenizer

    store, out = state_run
    checkpoint = os.path.join(out, "checkpoint.pt")
    config, state = load_run(checkpoint)
    weights = state["model"]
    tokenizer = BinnedTokenizer(n_tokens=config.n_tokens, max_value=config.tokenizer_max)
    train, _ = build_loaders(config, tokenizer)
    # every training cell counted once; the PCA mean is the mean of the loader's own tokens (bin
    # centres): the codebook sees cells exactly as training batches show them
    assert int(weights["cell_states.counts"].sum()) == len(train.dataset.rows)
    seen = torch_cat(tokenizer.detokenize(tokens.long()) for tokens, _ in _one_epoch(train))
    assert len(seen) > len(train.dataset.rows) * 0.9  # drop_last loses less than a batch
    np.testing.assert_allclose(weights["cell_states.mean"].numpy(), seen.mean(0).numpy(), atol=0.05)

    assert train_main(["--config", "mini-tiny", "--store", store, "--max-steps", "5", "--out", out, "--batch-size", "16",
                       "--set", "eval_every=100", "--set", "sample_steps=4", "--set", "n_states=4",
                       "--set", "states_cells=100000", "--set", "programs_cells=0", "--resume"]) == 0
    resumed = safe_load(checkpoint)["model"]
    assert resumed is not weights and all(torch_equal(resumed[k], weights[k]) for k in weights if k.startswith("cell_states."))


def test_a_state_model_generates_each_cell_from_a_drawn_state(state_run, tmp_path):
    _, out = state_run
    from scmodel.generate import GenerateConfig, generate

    adata = generate(GenerateConfig(checkpoint=os.path.join(out, "checkpoint.pt"), n_cells=40,
                                    out=str(tmp_path / "cells.h5ad"), steps=4, seed=1), echo=lambda *_: None)
    assert adata.uns["generation"]["n_states"] == 4
    assert set(adata.obs["cell_state"].astype(int)) <= {0, 1, 2, 3} and adata.obs["cell_state"].nunique() > 1


def test_sampler_options_reach_the_sampler_and_are_recorded(state_run, tmp_path):
    _, out = state_run
    from scmodel.generate import GenerateConfig, generate

    checkpoint = os.path.join(out, "checkpoint.pt")
    base = dict(checkpoint=checkpoint, n_cells=24, steps=4, seed=3)
    plain = generate(GenerateConfig(out=str(tmp_path / "a.h5ad"), **base), echo=lambda *_: None)
    assert plain.uns["generation"]["bf16"] is False  # the run trained in fp32 on a CPU
    assert plain.uns["generation"]["top_p"] == 1.0  # the run's sample_top_p
    tuned = generate(GenerateConfig(out=str(tmp_path / "b.h5ad"), guidance=1.0, remask=0.05, top_p=0.9, float64=True,
                                    bf16="on", **base), echo=lambda *_: None)
    g = tuned.uns["generation"]
    assert (g["guidance"], g["remask"], g["top_p"], g["float64"], g["bf16"]) == (1.0, 0.05, 0.9, True, True)
    # the same seed draws the same states; the sampler options change the cells
    assert list(tuned.obs["cell_state"]) == list(plain.obs["cell_state"])
    assert not np.array_equal(tuned.layers["tokens"], plain.layers["tokens"])
    done = subprocess.run([sys.executable, "-m", "scmodel.generate", "--checkpoint", checkpoint, "--n-cells", "4",
                           "--out", str(tmp_path / "c.h5ad"), "--remask", "0.1", "--order", "confidence"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "remask" in done.stderr


def test_a_state_prior_run_keeps_its_training_cells_token_frequencies_and_generates(run, tmp_path):
    import torch

    from scmodel.engines.state import safe_load
    from scmodel.generate import GenerateConfig, generate
    from scmodel.run.checkpoint import load_run
    from scmodel.run.loaders import build_loaders
    from scmodel.tokenize import BinnedTokenizer

    store, _ = run
    out = str(tmp_path / "prior")
    assert train_main(["--config", "mini-tiny", "--store", store, "--max-steps", "2", "--out", out, "--batch-size", "16",
                       "--set", "eval_every=100", "--set", "sample_steps=4", "--set", "n_states=4",
                       "--set", "states_cells=100000", "--set", "programs_cells=0", "--set", "state_prior=true"]) == 0
    checkpoint = os.path.join(out, "checkpoint.pt")
    config, _ = load_run(checkpoint)
    prior = safe_load(checkpoint)["model"]["cell_states.token_log_prior"].exp()
    tokenizer = BinnedTokenizer(n_tokens=config.n_tokens, max_value=config.tokenizer_max)
    train, _ = build_loaders(config, tokenizer)
    seen = torch_cat(tokens.long() for tokens, _ in _one_epoch(train))
    overall = torch.stack([torch.bincount(seen[:, g], minlength=config.n_tokens) for g in range(seen.shape[1])]).float()
    # the "no state" row is every training cell's token frequencies, as the loader's batches show them
    torch.testing.assert_close(prior[-1], overall / len(seen), atol=0.03, rtol=0)
    adata = generate(GenerateConfig(checkpoint=checkpoint, n_cells=16, out=str(tmp_path / "cells.h5ad"), steps=4),
                     echo=lambda *_: None)
    assert adata.n_obs == 16 and "cell_state" in adata.obs
    from scmodel.viz import load_model

    loaded = load_model(None, checkpoint)  # the figures' loader rebuilds it with its prior
    assert torch.equal(loaded.model.cell_states.token_log_prior, safe_load(checkpoint)["model"]["cell_states.token_log_prior"])


def _one_epoch(loader):
    loader.set_epoch(0)
    return list(loader)


def torch_cat(tensors):
    import torch

    return torch.cat(list(tensors))


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
