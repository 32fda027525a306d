"""In-silico knockdown: the arithmetic against hand computations, and the read-out of a model whose
answer is known."""

import math

import numpy as np
import pytest
import torch

from scmodel.diffusion import DiffusionConfig
from scmodel.knockdown import (
    InSilicoKnockdown,
    KnockdownConfig,
    calibrate,
    calibrate_errors_in_variables,
    knocked_value,
    time_for_mask_rate,
)
from scmodel.tokenize import BinnedTokenizer


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_time_gives_the_mask_rate(schedule):
    config = DiffusionConfig(schedule=schedule)
    for rate in (0.1, 0.5, 0.9, 255 / 256):
        t = time_for_mask_rate(rate, schedule)
        assert float(config.mask_rate(torch.tensor([t]))[0]) == pytest.approx(rate, abs=1e-6)


def test_knocked_value_keeps_the_fraction_of_mrna():
    values = np.log1p(np.array([0.0, 1.0, 9.0, 99.0]))
    assert np.allclose(np.expm1(knocked_value(values, 0.2)), [0.0, 0.2, 1.8, 19.8])


def test_calibrate_is_least_squares_through_the_origin():
    predicted = np.array([[1.0, 2.0, np.nan], [0.5, -1.0, 3.0]])
    observed = 0.7 * np.nan_to_num(predicted) + np.array([[0.1, -0.1, 5.0], [0.0, 0.05, np.nan]])
    keep = np.isfinite(predicted) & np.isfinite(observed)
    p, o = predicted[keep], observed[keep]
    assert calibrate(predicted, observed) == pytest.approx(float(p @ o / (p @ p)))
    assert calibrate(np.zeros((2, 2)), np.ones((2, 2))) == 1.0
    assert calibrate(np.ones((1, 3)), 10 * np.ones((1, 3))) == 4.0  # clipped


class _Follower(torch.nn.Module):
    """A 'model' whose prediction for every masked gene is the visible target's token, or token 0
    when the target itself is masked: the expected value of a gene is then the target's level."""

    def __init__(self, n_tokens: int):
        super().__init__()
        self.n_tokens = n_tokens
        self.calls = []

    def forward(self, tokens, t, gene_index=None, **_):
        self.calls.append((tokens.clone(), t.clone(), gene_index.clone()))
        target = tokens[:, :1].clamp(max=self.n_tokens - 1)  # (B, 1): the visible target's token
        logits = torch.full((*tokens.shape, self.n_tokens), -1e9)
        logits.scatter_(2, target.unsqueeze(-1).expand(-1, tokens.shape[1], 1), 0.0)
        return logits


def test_errors_in_variables_recovers_the_gain_that_least_squares_shrinks():
    rng = np.random.default_rng(7)
    truth = rng.normal(0, 0.3, size=(20, 400)) * (rng.random((20, 400)) < 0.1)  # sparse true effects
    predicted = truth + rng.normal(0, 0.05, size=truth.shape)  # the in-silico effects: the truth plus noise
    noise = np.full(truth.shape, 0.02**2)  # the measured effects' known sampling variances
    observed = 2.0 * truth + rng.normal(0, 0.02, size=truth.shape)  # measured: twice the in-silico scale
    predicted[0, 0] = observed[3, 5] = np.nan  # excluded entries (the targets' own genes)
    assert calibrate(predicted, observed) < 1.7  # least squares: diluted by the predicted noise
    assert calibrate_errors_in_variables(predicted, observed, noise) == pytest.approx(2.0, rel=0.05)
    p, o, v = np.array([[1.0, 2.0]]), np.array([[2.0, 5.0]]), np.array([[0.5, 0.5]])
    assert calibrate_errors_in_variables(p, o, v) == pytest.approx((4 + 25 - 1) / (2 + 10))  # by hand
    assert calibrate_errors_in_variables(p, -o, v) == 1.0  # no positive agreement: left alone
    assert calibrate_errors_in_variables(p, 100 * o, v) == 4.0 and calibrate_errors_in_variables(p, 0.01 * o, v) == 0.25


def test_only_the_target_is_visible_and_genes_follow_it():
    tokenizer = BinnedTokenizer(n_tokens=16, max_value=8.0)
    rng = np.random.default_rng(0)
    values = np.log1p(rng.gamma(2.0, 20.0, size=(40, 9))).astype(np.float32)
    model = _Follower(16)
    knock = InSilicoKnockdown(model, tokenizer, values, lambda n: {}, "cosine",
                              KnockdownConfig(cells=40, context=4, batch=16))
    ratio = knock.ratio(target=3, fold=0.1)
    # every call: the target first and visible, all else masked, the time of 3 masked out of 4
    for tokens, t, index in model.calls:
        assert int(index[0]) == 3 and (tokens[:, 1:] == 16).all() and (tokens[:, 0] < 16).all()
        assert float(t[0]) == pytest.approx(2 / math.pi * math.acos(1 - (len(index) - 1) / len(index)))
    first_pass = model.calls[: len(model.calls) // 2][::3]  # the control pass, first batch of each group
    assert sorted(int(i) for _, _, idx in first_pass for i in idx[1:]) == [0, 1, 2, 4, 5, 6, 7, 8]
    centres = torch.expm1(tokenizer.detokenize(torch.arange(16))).numpy()
    level = lambda v: centres[tokenizer.tokenize(torch.from_numpy(v)).numpy()].mean()  # noqa: E731
    expected = (level(knocked_value(values[:, 3], 0.1)) + 1e-2) / (level(values[:, 3]) + 1e-2)
    others = np.delete(ratio, 3)
    assert np.allclose(others, expected) and expected < 0.5
    assert ratio[3] == pytest.approx(0.1)
