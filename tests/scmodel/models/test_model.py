"""Diffusion models: they learn, resume exactly, sample valid cells, and respond to conditioning."""

import json
import os
import subprocess
import sys

import pytest
import torch

from scmodel.diffusion import DiffusionConfig, corrupt, diffusion_loss, sample, sample_times
from scmodel.models import ConditionalConfig, ConditionalDiffusionModel, MiniConfig, MiniDiffusionModel
from scmodel.train import main
from tests.conftest import materialized_store

TINY = MiniConfig(n_genes=32, n_tokens=8, dim=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_ratio=2.0)


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = MiniDiffusionModel(TINY)
    tokens = torch.randint(0, 8, (16, 32))
    cfg = DiffusionConfig(schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    t = sample_times(16, cfg, gen)
    noisy, mask = corrupt(tokens, t, cfg, TINY.mask_id, gen)  # a fixed batch: same noise every step
    losses = []
    for _ in range(300):
        loss = diffusion_loss(model(noisy, t), tokens, mask, t, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last <= 0.1 * first, (first, last)


def test_sampler_unmasks_everything_with_valid_tokens():
    model = MiniDiffusionModel(TINY).eval()
    out = sample(model, 5, 32, steps=4, mask_id=TINY.mask_id, generator=torch.Generator().manual_seed(1))
    assert out.shape == (5, 32) and int(out.min()) >= 0 and int(out.max()) < TINY.n_tokens


def test_conditioning_changes_the_output():
    torch.manual_seed(0)
    model = ConditionalDiffusionModel(ConditionalConfig(backbone=TINY, gene_vocab=100, n_control_tokens=2)).eval()
    for p in model.parameters():  # adaLN/zero init would hide the paths at initialization
        torch.nn.init.normal_(p, std=0.05)
    tokens = torch.randint(0, 8, (2, 32))
    t = torch.full((2,), 0.5)
    base = model(tokens, t)
    pert = model(tokens, t, target_gene=torch.tensor([3, 3]), sign=torch.tensor([-1, -1]), log2fc=torch.tensor([-1.0, -1.0]))
    other = model(tokens, t, target_gene=torch.tensor([7, 7]), sign=torch.tensor([1, 1]), log2fc=torch.tensor([2.0, 2.0]))
    control = model(tokens, t, control=torch.rand(2, 5, 32))
    control2 = model(tokens, t, control=torch.rand(2, 5, 32) * 3)
    assert not torch.allclose(base, pert) and not torch.allclose(pert, other)
    assert not torch.allclose(base, control) and not torch.allclose(control, control2)
    cells = torch.rand(2, 5, 32)  # a set: the order of control cells does not matter
    torch.testing.assert_close(model(tokens, t, control=cells), model(tokens, t, control=cells.flip(1)), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def store(demo_bucket, tmp_path_factory):
    return materialized_store(demo_bucket, tmp_path_factory.mktemp("train"), n_hvgs=64)


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(out, "metrics.jsonl"))) if not r.get("eval")}


def test_train_cli_and_exact_resume(store, tmp_path):
    common = ["--config", "mini-tiny", "--store", store, "--max-steps", "8", "--set", "log_every=1", "--set", "eval_every=100",
              "--set", "context_genes=32", "--batch-size", "16"]
    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(common + ["--out", straight]) == 0
    assert main(common + ["--out", resumed, "--set", "stop_at_step=4", "--save-every", "4"]) == 0
    assert main(common + ["--out", resumed, "--resume"]) == 0
    a, b = _losses(straight), _losses(resumed)
    assert set(a) == set(range(1, 9))
    for step in range(5, 9):
        assert a[step] == b[step], (step, a[step], b[step])  # bit-identical continuation on CPU
    for name in ("checkpoint.pt", "metrics.jsonl", "curves.png", "samples.png"):
        assert os.path.exists(os.path.join(straight, name))
    evals = [r for r in map(json.loads, open(os.path.join(straight, "metrics.jsonl"))) if r.get("eval")]
    final = evals[-1]
    assert {"masked_accuracy", "baseline_accuracy", "baseline_loss", "pearson"} <= set(final)
    for name in ("samples", "real", "gene_shuffled", "marginal"):
        for metric in ("mmd", "mmd_pvalue", "auc", "mean_corr", "var_corr", "zero_fraction_error", "gene_corr_error"):
            assert isinstance(final[f"{metric}_{name}"], float), (metric, name)
    assert final["sample_unmasked"] and final["n_sample_cells"] > 0
    # the floor: two halves of the same real held-out cells are closer than gene-shuffled cells
    assert final["mmd_real"] < final["mmd_gene_shuffled"] and final["gene_corr_error_real"] < final["gene_corr_error_gene_shuffled"]


def test_evaluate_cli_on_a_checkpoint(store, tmp_path):
    from scmodel.evaluate.cli import main as evaluate_main

    out = str(tmp_path / "run")
    assert main(["--config", "mini-tiny", "--store", store, "--max-steps", "2", "--out", out, "--batch-size", "16",
                 "--set", "context_genes=32", "--set", "eval_every=100", "--set", "sample_steps=4"]) == 0
    assert evaluate_main(["--checkpoint", os.path.join(out, "checkpoint.pt"), "--sample-steps", "8",
                          "--out", str(tmp_path / "eval")]) == 0
    result = json.load(open(tmp_path / "eval" / "evaluation.json"))
    assert result["sample_steps"] == 8 and result["step"] == 2 and result["store"] == store
    assert {"mmd_samples", "mmd_gene_shuffled", "mmd_real", "auc_samples", "auc_gene_shuffled", "nn1_accuracy_samples",
            "nn1_accuracy_real", "nn1_accuracy_gene_shuffled", "w2_samples", "precision_samples"} <= set(result)
    assert result["seeds"] == [0, 1, 2] and len(result["by_seed"]) == 3 and "nn1_accuracy_samples" in result["spread"]
    by_seed = [r["nn1_accuracy_samples"] for r in result["by_seed"]]
    assert result["nn1_accuracy_samples"] == pytest.approx(sum(by_seed) / 3)
    assert os.path.getsize(tmp_path / "eval" / "samples.png") > 10_000


def test_checkpoints_load_without_pickle_and_pickled_objects_are_refused(store, tmp_path):
    from scmodel.engines.state import safe_load

    out = str(tmp_path / "run")
    assert main(["--config", "mini-tiny", "--store", store, "--max-steps", "1", "--out", out, "--batch-size", "8",
                 "--set", "context_genes=32", "--set", "eval_every=100", "--set", "sample_steps=2"]) == 0
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)  # plain data and tensors only
    assert state["step"] == 1 and isinstance(state["config"], dict)
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "config": MiniConfig()}, bad)  # a pickled dataclass: code could ride along
    with pytest.raises(ValueError, match="refusing to load checkpoint .*bad.pt"):
        safe_load(str(bad))
    with pytest.raises(ValueError, match="refusing"):
        main(["--config", "mini-tiny", "--store", store, "--max-steps", "1", "--out", str(tmp_path / "ft"),
              "--set", f"init_from={bad}", "--set", "context_genes=32"])


def test_conditional_tiny_trains(store, tmp_path):
    assert main(["--config", "conditional-tiny", "--store", store, "--max-steps", "3", "--out", str(tmp_path / "c"),
                 "--set", "context_genes=32", "--batch-size", "8", "--set", "eval_every=100"]) == 0


def test_ddp_two_processes_gloo(store, tmp_path):
    out = str(tmp_path / "ddp")
    from tests.services import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "scmodel.train",
           "--config", "mini-tiny", "--store", store, "--max-steps", "3", "--out", out, "--batch-size", "8",
           "--set", "context_genes=32", "--set", "eval_every=100", "--set", "log_every=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert len(state["loader"]) == 2 and state["step"] == 3  # both ranks' loader positions saved
    assert len(_losses(out)) == 3


@pytest.mark.slow
def test_compiled_training_follows_the_eager_losses(store, tmp_path):
    """``--set compile=true`` trains the same model: its first losses match eager ones (same seed)."""
    common = ["--config", "mini-tiny", "--store", store, "--max-steps", "3", "--set", "log_every=1", "--set",
              "eval_every=100", "--set", "context_genes=32", "--batch-size", "8", "--set", "sample_steps=2"]
    eager, compiled = str(tmp_path / "eager"), str(tmp_path / "compiled")
    assert main(common + ["--out", eager]) == 0
    assert main(common + ["--out", compiled, "--set", "compile=true"]) == 0
    a, b = _losses(eager), _losses(compiled)
    assert set(a) == set(b) == {1, 2, 3}
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-3), step
