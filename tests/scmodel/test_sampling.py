"""The reverse-process sampler and the sample-quality metrics, against known answers."""

import numpy as np
import pytest
import torch

from scmodel.diffusion import DiffusionConfig, _guided_logits, sample, token_probs
from scmodel.evaluate.metrics import (
    classifier_auc,
    fit_pca,
    gene_shuffled,
    marginal_agreement,
    mmd_permutation_pvalue,
    mmd_unbiased,
)

N_TOKENS, MASK = 4, 4


class FixedMarginals(torch.nn.Module):
    """Predicts the same distribution for a gene whatever the cell: the samples of an exact
    sampler must then have exactly these per-gene marginals."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.logits = torch.log(probs)
        self.masked_fractions: list[float] = []

    def forward(self, tokens, t, **_):
        self.masked_fractions.append(float((tokens == MASK).float().mean()))
        return self.logits.expand(tokens.shape[0], -1, -1)


def _probs() -> torch.Tensor:
    return torch.tensor([[0.7, 0.2, 0.05, 0.05], [0.1, 0.1, 0.1, 0.7], [0.25, 0.25, 0.25, 0.25]])


def _frequencies(tokens: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.bincount(tokens[:, g], minlength=N_TOKENS) for g in range(tokens.shape[1])]).float() / len(tokens)


@pytest.mark.parametrize("steps", [1, 5, 40])
def test_ancestral_sampler_reproduces_known_marginals(steps):
    probs = _probs()
    n = 6000
    cells = sample(FixedMarginals(probs), n, 3, steps, MASK, generator=torch.Generator().manual_seed(0))
    assert int(cells.max()) < N_TOKENS
    sigma = torch.sqrt(probs * (1 - probs) / n)
    assert torch.all((_frequencies(cells) - probs).abs() <= 4.5 * sigma), (_frequencies(cells), probs)


def test_confidence_order_distorts_marginals_the_ancestral_sampler_keeps():
    probs = _probs()
    cells = sample(FixedMarginals(probs), 4000, 3, 3, MASK, generator=torch.Generator().manual_seed(0), order="confidence")
    # revealing the most confident draws first over-represents each gene's mode
    assert float(_frequencies(cells)[0, 0]) > 0.75 > float(probs[0, 0])


def test_reveals_follow_the_schedule():
    schedule = DiffusionConfig(schedule="cosine")
    model = FixedMarginals(_probs())
    steps = 8
    sample(model, 4000, 3, steps, MASK, generator=torch.Generator().manual_seed(1), schedule=schedule)
    expected = schedule.mask_rate(torch.linspace(1, 0, steps + 1))[:-1]
    observed = torch.tensor(model.masked_fractions)
    assert len(observed) == steps
    torch.testing.assert_close(observed, expected / expected[0], atol=0.02, rtol=0)


def test_init_keeps_observed_tokens_and_bad_arguments_are_refused():
    init = torch.full((5, 3), MASK)
    init[:, 1] = 2
    out = sample(FixedMarginals(_probs()), 5, 3, 4, MASK, generator=torch.Generator().manual_seed(0), init=init)
    assert torch.equal(out[:, 1], torch.full((5,), 2)) and bool((out != MASK).all())
    with pytest.raises(ValueError, match="order"):
        sample(FixedMarginals(_probs()), 5, 3, 4, MASK, order="best-first")
    with pytest.raises(ValueError, match="shape"):
        sample(FixedMarginals(_probs()), 5, 3, 4, MASK, init=torch.zeros(2, 3, dtype=torch.long))


def test_token_probs_top_p_keeps_the_smallest_head_holding_p_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.9]]))  # the last is the mask token
    # the mask is excluded first: [0.5, 0.3, 0.15, 0.05] / 1; top_p 0.7 keeps 0.5 and 0.3
    torch.testing.assert_close(token_probs(logits.clone(), MASK, top_p=0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(token_probs(logits.clone(), MASK, top_p=0.5), torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(token_probs(logits.clone(), MASK), torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]]))
    # temperature divides the log-probabilities: t=0.5 squares them before renormalizing
    p = torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2
    torch.testing.assert_close(token_probs(logits.clone(), MASK, temperature=0.5)[0, :4], p / p.sum())
    assert token_probs(logits.clone(), MASK, float64=True).dtype == torch.float64
    kept = logits.clone()
    token_probs(logits, MASK)
    assert torch.equal(logits, kept)  # the caller's logits are not changed


class StateLogits(torch.nn.Module):
    """Logits that depend on the state (a fixed table per state; "no state" = index 2)."""

    def __init__(self):
        super().__init__()
        self.table = torch.log(torch.tensor([[0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6], [0.25, 0.25, 0.25, 0.25]]))

    def forward(self, tokens, t, state=None, **_):
        index = torch.full((tokens.shape[0],), 2) if state is None else state
        return self.table[index].unsqueeze(1).expand(-1, tokens.shape[1], -1)


def test_guidance_is_the_classifier_free_combination_by_hand():
    model, tokens, t = StateLogits(), torch.full((2, 3), MASK), torch.ones(2)
    state = torch.tensor([0, 1])
    plain = _guided_logits(model, tokens, t, 0.0, {"state": state})
    torch.testing.assert_close(plain, model.table[state].unsqueeze(1).expand(-1, 3, -1))
    guided = _guided_logits(model, tokens, t, 1.0, {"state": state})
    log_c, log_u = torch.log_softmax(model.table[0], -1), torch.log_softmax(model.table[2], -1)
    torch.testing.assert_close(guided[0, 0], log_u + 2.0 * (log_c - log_u))
    # guidance sharpens a state's distribution: its most likely token gains
    assert float(torch.softmax(guided[0, 0], -1)[0]) > 0.6
    with pytest.raises(ValueError, match="cell states"):
        sample(FixedMarginals(_probs()), 4, 3, 2, MASK, guidance=1.0)


def test_remasking_keeps_the_schedule_and_the_marginals_and_corrects_revealed_tokens():
    probs = _probs()
    model = FixedMarginals(probs)
    steps, n = 10, 6000
    remasked = []

    class Watch(torch.nn.Module):  # records which revealed tokens come back masked
        def __init__(self):
            super().__init__()
            self.last = None

        def forward(self, tokens, t, **kw):
            if self.last is not None:
                remasked.append(int(((self.last != MASK) & (tokens == MASK)).sum()))
            self.last = tokens.clone()
            return model(tokens, t)

    cells = sample(Watch(), n, 3, steps, MASK, generator=torch.Generator().manual_seed(2), remask=0.05)
    assert bool((cells != MASK).all()) and sum(remasked) > 0.01 * n * 3
    # ReMDM's reveal probability keeps the share masked at each step on the schedule
    expected = torch.linspace(1, 0, steps + 1)[:-1]
    torch.testing.assert_close(torch.tensor(model.masked_fractions), expected, atol=0.02, rtol=0)
    sigma = torch.sqrt(probs * (1 - probs) / n)
    assert torch.all((_frequencies(cells) - probs).abs() <= 4.5 * sigma)
    # given tokens are never remasked
    init = torch.full((50, 3), MASK)
    init[:, 0] = 3
    out = sample(FixedMarginals(probs), 50, 3, steps, MASK, generator=torch.Generator().manual_seed(0), init=init,
                 remask=0.2)
    assert torch.equal(out[:, 0], init[:, 0])
    with pytest.raises(ValueError, match="random"):
        sample(FixedMarginals(probs), 5, 3, 4, MASK, remask=0.1, order="confidence")
    with pytest.raises(ValueError, match="top_p"):
        sample(FixedMarginals(probs), 5, 3, 4, MASK, top_p=0.0)


def _mmd_by_loops(x, y, bandwidth):
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / bandwidth)  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_equals_the_hand_computed_u_statistic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 2)), rng.normal(1.0, size=(5, 2))
    assert mmd_unbiased(x, y, 2.0) == pytest.approx(_mmd_by_loops(x, y, 2.0), rel=1e-12)
    # two identical two-point sets: k(0,1) = 1/e, so xx = yy = 1/e and xy = (1 + 1/e) / 2
    assert mmd_unbiased(np.array([[0.0], [1.0]]), np.array([[0.0], [1.0]]), 1.0) == pytest.approx(np.exp(-1) - 1)


def test_mmd_is_unbiased_and_detects_a_difference():
    rng = np.random.default_rng(1)
    same = [mmd_unbiased(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), 6.0) for _ in range(400)]
    mean, err = np.mean(same), np.std(same) / np.sqrt(len(same))
    assert abs(mean) < 3 * err, (mean, err)
    shifted = mmd_unbiased(rng.normal(size=(200, 3)), rng.normal(0.7, size=(200, 3)), 6.0)
    assert shifted > 20 * np.std(same) / np.sqrt(100)
    assert mmd_permutation_pvalue(rng.normal(size=(60, 3)), rng.normal(0.8, size=(60, 3)), 6.0, 99) == pytest.approx(0.01)
    assert mmd_permutation_pvalue(rng.normal(size=(60, 3)), rng.normal(size=(60, 3)), 6.0, 99, seed=3) > 0.01


def test_classifier_auc_from_indistinguishable_to_separate():
    rng = np.random.default_rng(2)
    assert abs(classifier_auc(rng.normal(size=(300, 2)), rng.normal(size=(300, 2))) - 0.5) < 0.08
    assert classifier_auc(rng.normal(size=(100, 2)), rng.normal(5.0, size=(100, 2))) > 0.99
    # shuffling genes keeps every mean but breaks correlation: the (non-linear) classifier sees it
    z = rng.normal(size=(600, 1))
    correlated = np.hstack([z, z + 0.1 * rng.normal(size=(600, 1))])
    assert classifier_auc(correlated[:300], gene_shuffled(correlated[300:], seed=0)) > 0.75


def test_marginal_agreement_on_a_hand_computed_case():
    real = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 4.0], [2.0, 0.0, 0.0]])
    other = np.array([[0.0, 2.0, 2.0], [0.0, 0.0, 4.0], [3.0, 0.0, 0.0]])
    got = marginal_agreement(real, other, top_genes=3)
    assert got["mean_corr"] == pytest.approx(np.corrcoef([1, 1 / 3, 2], [1, 2 / 3, 2])[0, 1])
    assert got["var_corr"] == pytest.approx(np.corrcoef(real.var(0), other.var(0))[0, 1])
    assert got["zero_fraction_error"] == pytest.approx((abs(1 / 3 - 2 / 3) + 0 + 0) / 3)
    r, o = np.corrcoef(real.T), np.corrcoef(other.T)
    iu = np.triu_indices(3, 1)
    assert got["gene_corr_error"] == pytest.approx(np.abs(r[iu] - o[iu]).mean())
    assert marginal_agreement(real, real)["gene_corr_error"] == 0.0


def test_gene_shuffled_keeps_each_gene_and_pca_projects():
    rng = np.random.default_rng(3)
    x = rng.poisson(2.0, size=(50, 6)).astype(float)
    shuffled = gene_shuffled(x, seed=1)
    assert np.array_equal(np.sort(shuffled, 0), np.sort(x, 0)) and not np.array_equal(shuffled, x)
    pca = fit_pca(x, n_components=3)
    assert pca.project(x).shape == (50, 3) and pca.bandwidth > 0


def test_sampling_with_perturbation_inputs_and_gene_subsets():
    from scmodel.models import ConditionalConfig, ConditionalDiffusionModel, MiniConfig

    torch.manual_seed(0)
    backbone = MiniConfig(n_genes=32, n_tokens=8, dim=32, n_heads=4, n_kv_heads=1, n_layers=1, mlp_ratio=2.0)
    model = ConditionalDiffusionModel(ConditionalConfig(backbone=backbone, gene_vocab=50, n_control_tokens=2)).eval()
    for p in model.parameters():  # zero-initialized paths would make conditioning invisible
        torch.nn.init.normal_(p, std=0.2)
    subset = torch.tensor([1, 5, 9, 30])
    common = dict(steps=6, mask_id=backbone.mask_id, gene_index=subset)
    plain = sample(model, 16, 4, generator=torch.Generator().manual_seed(0), **common)
    perturbed = sample(model, 16, 4, generator=torch.Generator().manual_seed(0), target_gene=torch.full((16,), 3),
                       sign=torch.full((16,), -1), log2fc=torch.full((16,), -2.0), control=torch.rand(16, 3, 32), **common)
    for cells in (plain, perturbed):
        assert cells.shape == (16, 4) and int(cells.min()) >= 0 and int(cells.max()) < backbone.n_tokens
    assert not torch.equal(plain, perturbed)  # same random stream, different conditioning, different cells
