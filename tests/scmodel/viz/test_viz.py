"""Model visualizations: every file is written, and the numbers in them are the module tree's and
the flop counter's (checked here against ``count_parameters`` and a FlopCounterMode of our own)."""

import json
import os
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scmodel.models import MODELS, count_parameters
from scmodel.viz import FILES, ROUTED_FILES, TRAINED_FILES, visualize
from scmodel.viz.__main__ import main
from scmodel.viz.inspect import components, example_inputs, trace

GENES = 24  # gene positions of the measured step: small, so a test takes seconds


def _number(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    assert match, pattern
    return int(match.group(1).replace(",", ""))


def _reference_flops(model: nn.Module, batch: int, genes: int) -> tuple[int, int]:
    """Forward and forward+backward FLOPs counted here, independently of scmodel.viz.compute."""
    args, kwargs = example_inputs(model, batch, genes)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fwd:
        model(*args, **kwargs)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as both:
        model(*args, **kwargs).float().logsumexp(-1).mean().backward()
    return fwd.get_total_flops(), both.get_total_flops()


@pytest.mark.parametrize("name", ["mini-tiny", "conditional-tiny"])
def test_all_files_and_their_numbers(name, tmp_path):
    out = str(tmp_path / name)
    assert main(["--config", name, "--out", out, "--genes", str(GENES), "--sample-genes", "16",
                 "--sample-cells", "2", "--no-sweeps"]) == 0  # the sweeps run in the toy model's test
    assert sorted(os.listdir(out)) == sorted(FILES)
    for f in FILES:
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    config = json.load(open(os.path.join(out, "model_config.json")))
    model = MODELS[name]()
    n = count_parameters(model)
    assert config["parameters"] == n and config["name"] == name
    assert sum(c["parameters"] for c in config["components"]) == n  # the components cover the whole tree
    params_txt = open(os.path.join(out, "parameter_breakdown.txt")).read()
    assert _number(params_txt, r"Total: ([\d,]+) parameters") == n
    assert _number(params_txt, r"\n  sum\s+([\d,]+)") == n
    assert _number(open(os.path.join(out, "model_config.txt")).read(), r"Parameters: ([\d,]+)") == n
    compute_txt = open(os.path.join(out, "computational_analysis.txt")).read()
    forward, total = _reference_flops(model, 1, GENES)
    assert _number(compute_txt, r"Forward FLOPs:\s+([\d,]+)") == forward
    assert _number(compute_txt, r"Total FLOPs:\s+([\d,]+)") == total
    assert _number(compute_txt, r"Backward FLOPs:\s+([\d,]+)") == total - forward
    assert forward > 0 and total > 2 * forward - 1  # backward costs about twice the forward


def test_attention_flops_are_counted():
    """The fused CPU attention kernel is invisible to the flop counter; the reports must include QK^T and AV."""
    model = MODELS["mini-tiny"]()
    args, kwargs = example_inputs(model, 1, GENES)
    with FlopCounterMode(display=False) as default:
        model(*args, **kwargs)
    forward, _ = _reference_flops(model, 1, GENES)
    cfg = model.cfg
    scores = 2 * 2 * cfg.n_layers * cfg.n_heads * GENES * GENES * (cfg.dim // cfg.n_heads)  # QK^T and AV per layer
    assert forward - default.get_total_flops() in (0, scores)
    assert forward >= scores


@dataclass(frozen=True)
class ToyConfig:
    n_genes: int = 16
    n_tokens: int = 8
    dim: int = 16


class ToyExperts(nn.Module):
    """A model none of whose submodule names the visualizer knows (a router and experts, as in MoE)."""

    def __init__(self, n_genes: int = 16, n_tokens: int = 8):
        super().__init__()
        self.cfg = ToyConfig(n_genes, n_tokens)
        d = self.cfg.dim
        self.values = nn.Embedding(n_tokens + 1, d)
        self.clock = nn.Linear(1, d)
        self.layers = nn.ModuleList(nn.ModuleDict({"router": nn.Linear(d, 2), "experts": nn.ModuleList(
            nn.Linear(d, d) for _ in range(2))}) for _ in range(2))
        self.readout = nn.Linear(d, n_tokens)

    def forward(self, tokens, t, **_):
        x = self.values(tokens) + self.clock(t[:, None, None].float())
        for layer in self.layers:
            gate = layer["router"](x).softmax(-1)
            x = x + sum(gate[..., i:i + 1] * expert(x) for i, expert in enumerate(layer["experts"]))
        return self.readout(x)


def test_an_unknown_model_is_drawn_from_its_tree(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "toy", ToyExperts)
    model = ToyExperts()
    parts = components(model)
    assert [m for _, ms in parts.groups for m in ms] == [
        "values", "clock", "layers.0.router", "layers.0.experts.0", "layers.0.experts.1", "layers.1.router",
        "layers.1.experts.0", "layers.1.experts.1", "readout"]
    calls = {c.name: c for c in trace(model, *example_inputs(model, 2, 16))}
    assert calls["layers.0.router"].sources == frozenset({"values", "clock"})
    assert {"layers.1.router", "layers.1.experts.0", "layers.1.experts.1"} <= calls["readout"].sources
    assert calls["layers.0.router"].output == (2, 16, 2)
    paths = visualize("toy", str(tmp_path), genes=16, sample_genes=16, sample_cells=2, echo=lambda *_: None)
    assert sorted(map(os.path.basename, paths)) == sorted(FILES)
    text = open(tmp_path / "parameter_breakdown.txt").read()
    assert _number(text, r"Total: ([\d,]+) parameters") == count_parameters(model)


def test_checkpoint_of_a_routed_model(tmp_path, monkeypatch):
    """A checkpoint in train.py's format (``model`` state dict + ``config``): its weights are loaded, and
    the trained-model figures include the experts' load."""
    monkeypatch.setitem(MODELS, "toy", ToyExperts)
    trained = ToyExperts()
    with torch.no_grad():
        trained.layers[0]["router"].bias.copy_(torch.tensor([5.0, -5.0]))  # layer 0 sends every token to expert 0
    path = str(tmp_path / "checkpoint.pt")
    torch.save({"model": trained.state_dict(), "config": {"model": "toy", "n_tokens": 8}, "step": 7}, path)
    out = str(tmp_path / "out")
    paths = visualize(None, out, checkpoint=path, genes=16, sample_genes=16, sample_cells=2, sweeps=False,
                      echo=lambda *_: None)
    assert sorted(map(os.path.basename, paths)) == sorted(FILES + TRAINED_FILES + ROUTED_FILES)
    assert json.load(open(os.path.join(out, "model_config.json")))["checkpoint"]["step"] == 7
    from scmodel.viz import load_model
    from scmodel.viz.trained import _expert_counts

    loaded = load_model(None, path).model
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    logits = loaded.layers[0]["router"](torch.randn(3, 5, 16))
    assert _expert_counts("layers.0.router", loaded.layers[0]["router"], logits).tolist() == [15, 0]


def test_conditional_seed_preset_is_near_the_seed():
    with torch.device("meta"):
        n = count_parameters(MODELS["conditional-seed"]())
    assert abs(n - 24_752_265) / 24_752_265 < 0.01


@pytest.fixture(scope="module")
def trained(demo_bucket, tmp_path_factory):
    """A materialized store and a two-step mini-tiny checkpoint (held-out cells of every experiment,
    not the loader's default split: the figures must show the run's own held-out cells)."""
    from scmodel.train import main as train
    from tests.conftest import materialized_store

    root = tmp_path_factory.mktemp("viz")
    store = materialized_store(demo_bucket, root, n_hvgs=32)
    run = str(root / "run")
    assert train(["--config", "mini-tiny", "--store", store, "--max-steps", "2", "--out", run, "--batch-size", "8",
                  "--set", "eval_every=100", "--set", "split_by=cell", "--set", "val_fraction=0.3"]) == 0
    return store, os.path.join(run, "checkpoint.pt")


# the fixture ingests a store and trains two steps (~20-40 s); in the default suite: viz with a store has no other test
def test_checkpoint_and_store(trained, tmp_path):
    store, checkpoint = trained
    out = str(tmp_path / "trained")
    assert main(["--checkpoint", checkpoint, "--store", store, "--out", out, "--sample-cells", "2", "--no-sweeps"]) == 0
    assert sorted(os.listdir(out)) == sorted(FILES + TRAINED_FILES)
    config = json.load(open(os.path.join(out, "model_config.json")))
    state = torch.load(checkpoint, weights_only=False)
    assert config["config"]["n_genes"] == state["model"]["backbone.gene_emb.weight"].shape[0] == 32
    assert config["checkpoint"]["step"] == 2 and config["store"]["gene_positions"] == 32
    assert len(config["store"]["cells_shown"]) == 2
    from scmodel.data import LoaderConfig, StoreDataset

    held_out = StoreDataset(LoaderConfig(store=store, features="hvg", split="val", split_by="cell", val_fraction=0.3))
    assert set(config["store"]["cells_shown"]) <= {str(i) for i in held_out.cell_ids(held_out.rows)}
    with pytest.raises(SystemExit):
        main(["--config", "conditional-tiny", "--checkpoint", checkpoint, "--out", out])
