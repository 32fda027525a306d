"""The MoE diffusion model: exact sizes on meta, counted FLOPs, perturbation adapters, and training
under DeepSpeed on CPU (one process, two expert-parallel processes, exact resume, safe loading)."""

import glob
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from scmodel.diffusion import DiffusionConfig, corrupt, diffusion_loss, sample_times
from scmodel.engines.state import safe_load
from scmodel.models import MODELS, count_parameters
from scmodel.models.moe import MoEConfig, MoEDiffusionModel, parameter_formula
from scmodel.run.presets import CONFIGS
from scmodel.train import main
from scmodel.trainer import Trainer
from tests.conftest import materialized_store
from tests.services import free_port

TINY = MoEConfig(n_genes=32, n_tokens=8, dim=64, n_heads=4, n_kv_heads=4, n_layers=6, mlp_ratio=2.0, n_experts=4,
                 lora_rank=4, cond_dim=16, gene_vocab=100)


@pytest.fixture(scope="module")
def world_of_one():
    """A one-process group (DeepSpeed's MoE layers reduce over their expert group even alone)."""
    from scmodel.engines.deepspeed import setup

    setup()


def test_meta_count_equals_the_formula():
    with torch.device("meta"):
        full = MODELS["moe17b"]()
        sharded = MODELS["moe17b"](ep_size=8)
    counts = parameter_formula(full.cfg)
    assert count_parameters(full) == counts["total"]
    assert count_parameters(sharded) == parameter_formula(sharded.cfg, local=True)["total"]
    assert abs(counts["total"] / 17e9 - 1) <= 0.05, counts["total"]  # the seed's 17B
    assert full.cfg.n_layers - full.cfg.n_moe == 24 and full.cfg.n_moe == 12 and full.cfg.dim == 3072
    experts = sum(p.numel() for n, p in full.named_parameters() if ".deepspeed_experts." in n)
    assert experts == counts["experts"]
    per_expert = experts // (full.cfg.n_moe * full.cfg.n_experts)
    unused = full.cfg.n_moe * (full.cfg.n_experts - full.cfg.top_k) * per_expert  # experts a token does not visit
    assert counts["active_per_token"] == counts["total"] - unused
    tiny = MODELS["moe17b-tiny"](n_genes=256, n_tokens=8)
    assert count_parameters(tiny) == parameter_formula(tiny.cfg)["total"] < 5_000_000


def test_counted_flops_match_the_matmul_arithmetic():
    """flop_counter's count on meta equals 2 x (multiply-adds of every projection) + attention."""
    from scmodel.plan import count_cost

    cost = count_cost("moe17b-tiny", positions=128, n_tokens=8)
    cfg = MODELS["moe17b-tiny"](n_genes=128, n_tokens=8).cfg
    d, h, L, kv = cfg.dim, cfg.hidden, 128, 2 * cfg.n_kv_heads * (cfg.dim // cfg.n_heads)
    per_token = cfg.n_layers * (2 * d * d + d * kv) + (cfg.n_layers - cfg.n_moe) * 2 * d * h \
        + cfg.n_moe * (cfg.top_k * 2 * d * h + d * cfg.n_experts) + d * cfg.n_tokens
    per_cell = 2 * d * d + 6 * d * d  # time MLP (2 layers) and the shared modulation
    attention = cfg.n_layers * 2 * 2 * L * L * d  # QK^T and AV
    assert cost["forward_flops"] == 2 * (L * per_token + per_cell) + attention


def test_plan_prints_a_memory_plan_that_fits():
    from scmodel.plan import plan, render

    result = plan("moe17b", gpus=(8,), positions=2000)
    rows = {(r["capacity_gb"], r["offload"]): r for r in result["plans"]}
    assert 5e9 < result["parameters"]["active_per_token"] < 5.3e9
    assert 55e12 < result["flops"]["train_flops"] < 70e12  # ~6 x active parameters x 2,000 tokens + attention
    for (capacity, _), r in rows.items():
        assert r["micro_batch"] >= 1 and r["total_at_micro"] <= capacity * 1e9 * 0.9
        assert r["total_at_micro"] + r["act_per_cell"] > capacity * 1e9 * 0.9  # the largest that fits
    assert rows[(141, False)]["micro_batch"] > rows[(80, False)]["micro_batch"]
    assert "| 80 GB | 8 | 8 |" in render(result)


def test_adapters_condition_and_train_alone(world_of_one):
    torch.manual_seed(0)
    model = MoEDiffusionModel(TINY).eval()
    tokens, t = torch.randint(0, 8, (2, 32)), torch.full((2,), 0.5)
    pert = dict(target_gene=torch.tensor([3, 3]), sign=torch.tensor([-1, -1]), log2fc=torch.tensor([-1.0, -1.0]))
    base = model(tokens, t)
    torch.testing.assert_close(model(tokens, t, **pert), base)  # adapters start as the identity (B = 0)
    model.freeze_base()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters." in n or n.startswith("code.") or ".moe_adapter." in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(tokens, t, **pert).transpose(1, 2), tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    other = dict(target_gene=torch.tensor([7, 7]), sign=torch.tensor([1, 1]), log2fc=torch.tensor([2.0, 2.0]))
    assert not torch.allclose(model(tokens, t, **pert), model(tokens, t, **other))
    torch.testing.assert_close(model(tokens, t), base)  # no perturbation: the unconditional base, untouched


def test_loss_falls_under_deepspeed(world_of_one, tmp_path):
    """moe17b-tiny through the DeepSpeed engine (ZeRO-2, torch AdamW) fits a fixed batch."""
    import dataclasses

    from scmodel.engines.deepspeed import DeepSpeedEngine

    torch.manual_seed(0)
    model = MoEDiffusionModel(TINY)
    config = dataclasses.replace(CONFIGS["moe17b-tiny"], batch_size=16, max_steps=60, warmup_steps=5)
    engine = DeepSpeedEngine(config, model, 1, str(tmp_path))
    diffusion = DiffusionConfig(schedule="linear")
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 4, (16, 32)) * (torch.rand(16, 32, generator=gen) < 0.5)  # structured: mostly zeros
    t = sample_times(16, diffusion, gen)
    noisy, mask = corrupt(tokens, t, diffusion, TINY.mask_id, gen)
    losses, aux = [], []
    for _ in range(60):
        loss = diffusion_loss(engine.forward(noisy, t), tokens, mask, t, diffusion)
        engine.backward(loss + 0.01 * model.aux_loss)
        engine.step()
        losses.append(float(loss.detach()))
        aux.append(float(model.aux_loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert all(math.isfinite(a) and a > 0 for a in aux)


@pytest.fixture(scope="module")
def store(demo_bucket, tmp_path_factory):
    return materialized_store(demo_bucket, tmp_path_factory.mktemp("moe"), n_hvgs=64)


def _records(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def _losses(out):
    return {r["step"]: r["loss"] for r in _records(out) if not r.get("eval")}


COMMON = ["--config", "moe17b-tiny", "--max-steps", "4", "--batch-size", "8", "--set", "log_every=1",
          "--set", "eval_every=100", "--set", "eval_batches=1", "--set", "context_genes=32"]


def test_deepspeed_cli_resumes_exactly_and_loads_weights_only(world_of_one, store, tmp_path):
    from scmodel.engines.deepspeed import safe_globals

    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(COMMON + ["--store", store, "--out", straight]) == 0
    assert main(COMMON + ["--store", store, "--out", resumed, "--set", "stop_at_step=2", "--save-every", "2"]) == 0
    assert main(COMMON + ["--store", store, "--out", resumed, "--resume"]) == 0
    a, b = _losses(straight), _losses(resumed)
    assert set(a) == set(b) == {1, 2, 3, 4}
    assert a[3] == b[3] and a[4] == b[4], (a, b)  # bit-identical continuation
    train = [r for r in _records(straight) if not r.get("eval")]
    assert all(math.isfinite(r["aux_loss"]) and r["aux_loss"] > 0 for r in train)  # the routers' loss, logged
    files = glob.glob(os.path.join(straight, "checkpoint", "*", "*.pt"))
    assert any("expert" in f for f in files) and any("optim_states" in f for f in files)
    with torch.serialization.safe_globals(list(safe_globals())):
        for f in files:
            torch.load(f, weights_only=True)  # every file of a DeepSpeed checkpoint loads without running code
    state = safe_load(glob.glob(os.path.join(straight, "checkpoint", "*", "mp_rank_00_model_states.pt"))[0])
    assert state["step"] == 4 and state["config"]["model"] == "moe17b-tiny" and len(state["rng"]) == 1


class Payload:
    """Any class: unpickling it would run code chosen by whoever wrote the file."""


def test_a_checkpoint_with_a_pickled_object_is_refused(store, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "step": 1, "extra": Payload()}, path)
    with pytest.raises(ValueError, match="refusing to load checkpoint .*pickled Python object"):
        safe_load(str(path))
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "step": 1, "extra": Payload()}, out / "checkpoint.pt")
    config = CONFIGS["mini-tiny"].__class__(**{**CONFIGS["mini-tiny"].__dict__, "store": store, "out": str(out)})
    with pytest.raises(ValueError, match="refusing to load checkpoint"):
        Trainer(config, resume=True, echo=lambda *_: None)
    config = config.__class__(**{**config.__dict__, "init_from": str(out / "checkpoint.pt")})
    with pytest.raises(ValueError, match="refusing to load checkpoint"):
        Trainer(config, echo=lambda *_: None)


@pytest.mark.parametrize("overrides, error, message", [
    ({"ep_size": 3}, ValueError, "ep_size 3 does not divide n_experts 4"),
    ({"ep_size": 4}, ValueError, "ep_size 4 does not divide the world size 1"),
    ({"deepspeed_config": None}, ValueError, "needs a DeepSpeed JSON config"),
    ({"deepspeed_config": "no-such.json"}, FileNotFoundError, "no-such.json"),
    ({"deepspeed_config": "ZERO3"}, ValueError, "ZeRO stage 3 is not supported with DeepSpeed MoE"),
])
def test_bad_deepspeed_settings_fail_before_compute(tmp_path, overrides, error, message):
    if overrides.get("deepspeed_config") == "ZERO3":
        path = tmp_path / "zero3.json"
        path.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
        overrides = {"deepspeed_config": str(path)}
    config = CONFIGS["moe17b-tiny"].__class__(**{**CONFIGS["moe17b-tiny"].__dict__, "store": str(tmp_path / "no-store"),
                                                 "out": str(tmp_path / "o"), **overrides})
    with pytest.raises(error, match=message):  # the store does not exist: nothing was read or built
        Trainer(config, echo=lambda *_: None)


def test_expert_parallelism_needs_deepspeed_and_moe():
    with pytest.raises(ValueError, match="expert parallelism needs an MoE model"):
        CONFIGS["mini-tiny"].__class__(model="mini-tiny", ep_size=2)
    with pytest.raises(ValueError, match="expert parallelism needs an MoE model"):
        CONFIGS["mini-tiny"].__class__(model="moe17b-tiny", ep_size=2, engine="plain")


def test_importing_the_package_leaves_deepspeed_out():
    code = "import sys, scmodel.train, scmodel.models, scmodel.plan; assert 'deepspeed' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_two_process_expert_parallel_training(store, tmp_path):
    """torchrun, 2 gloo processes, ep_size=2: each rank holds 2 of the 4 experts of every MoE layer."""
    out = str(tmp_path / "ep2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "scmodel.train", "--config", "moe17b-tiny", "--store", store, "--out", out, "--max-steps", "16",
           "--batch-size", "8", "--set", "ep_size=2", "--set", "context_genes=32", "--set", "log_every=1",
           "--set", "eval_every=8", "--set", "eval_batches=1", "--set", "warmup_steps=4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 17))
    assert sum(losses[s] for s in range(12, 17)) / 5 < 0.8 * losses[1], losses
    evals = [r for r in _records(out) if r.get("eval")]
    assert [r["step"] for r in evals] == [8, 16]  # every rank evaluated (a forward pass is a collective), rank 0 logged
    state = safe_load(glob.glob(os.path.join(out, "checkpoint", "*", "mp_rank_00_model_states.pt"))[0])
    assert len(state["loader"]) == 2 and len(state["rng"]) == 2 and state["step"] == 16
    experts = glob.glob(os.path.join(out, "checkpoint", "*", "layer_*_expert_*_model_states.pt"))
    assert len(experts) == 2 * 4  # 2 MoE layers x 4 experts, written by the two ranks that hold them


@pytest.mark.slow
def test_two_process_expert_parallel_resume_is_exact(store, tmp_path):
    def run(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "scmodel.train", *COMMON, "--store", store, "--out", out, "--set", "ep_size=2", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]

    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    run(straight)
    run(resumed, "--set", "stop_at_step=2", "--save-every", "2")
    run(resumed, "--resume")
    a, b = _losses(straight), _losses(resumed)
    assert a[3] == b[3] and a[4] == b[4], (a, b)


def test_adapter_fine_tuning_under_deepspeed_from_a_pretrained_checkpoint(world_of_one, tmp_path):
    """Pretrain (ZeRO-2) -> checkpoint -> freeze the base, load it, train adapters on perturbation batches (stage 0)."""
    import dataclasses

    from scmodel.engines.deepspeed import DeepSpeedEngine

    torch.manual_seed(0)
    pretrained = MoEDiffusionModel(TINY)
    config = dataclasses.replace(CONFIGS["moe17b-tiny"], batch_size=4)
    DeepSpeedEngine(config, pretrained, 1, str(tmp_path / "pre")).save({"step": 0})
    model = MoEDiffusionModel(TINY)
    model.freeze_base()
    tuned = dataclasses.replace(config, deepspeed_config="ds_cpu_tiny_adapters.json", freeze_base=True)
    engine = DeepSpeedEngine(tuned, model, 1, str(tmp_path / "tune"))
    engine.load_weights(str(tmp_path / "pre" / "checkpoint"))
    for (name, p), q in zip(model.named_parameters(), pretrained.parameters()):
        assert torch.equal(p, q), name
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokens, t = torch.randint(0, 8, (4, 32)), torch.rand(4)
    pert = dict(target_gene=torch.tensor([1, 2, 3, 4]), sign=torch.tensor([1, -1, 1, -1]), log2fc=torch.randn(4))
    for _ in range(3):
        engine.backward(torch.nn.functional.cross_entropy(engine.forward(tokens, t, **pert).transpose(1, 2), tokens))
        engine.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".adapters." in n or n.startswith("code.") or ".moe_adapter." in n for n in changed)


def test_freezing_the_base_needs_a_stage_0_config_and_perturbation_batches(tmp_path):
    base = {**CONFIGS["moe17b-tiny"].__dict__, "store": str(tmp_path / "no-store"), "out": str(tmp_path / "o"),
            "freeze_base": True}
    with pytest.raises(ValueError, match="use ZeRO stage 0"):
        Trainer(CONFIGS["moe17b-tiny"].__class__(**base), echo=lambda *_: None)
    with pytest.raises(ValueError, match="carry none"):
        Trainer(CONFIGS["moe17b-tiny"].__class__(**{**base, "deepspeed_config": "ds_cpu_tiny_adapters.json"}),
                echo=lambda *_: None)
