"""Cell states (``scmodel.models.states``): the codebook finds planted cell types, a cell's state
comes from its own tokens, states are drawn in proportion to the training cells of each, and the
model is conditioned on them (with a learned "no state" for calls without)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scmodel.diffusion import sample
from scmodel.models import build_model
from scmodel.models.states import CellStates, fit_states
from scmodel.tokenize import BinnedTokenizer

N_GENES, N_TOKENS, MAX = 24, 8, 7.0  # bins of width 1: token k covers [k - 1, k)


def planted_tokens(counts=(60, 30, 10), seed=0) -> tuple[torch.Tensor, np.ndarray]:
    """Three cell types, each expressing its own third of the genes at a high level."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    values = rng.uniform(0, 0.9, size=(len(labels), N_GENES))
    for k in range(len(counts)):
        values[labels == k, k * 8:(k + 1) * 8] += 4.0
    tokenizer = BinnedTokenizer(n_tokens=N_TOKENS, max_value=MAX)
    return tokenizer.tokenize(torch.from_numpy(values)), labels


def fitted(tokens: torch.Tensor, n_states: int = 3) -> CellStates:
    states = CellStates(n_states, N_GENES, N_TOKENS, MAX, n_components=5)
    values = BinnedTokenizer(n_tokens=N_TOKENS, max_value=MAX).detokenize(tokens).numpy()
    states.load_codebook(fit_states(values, n_states, n_components=5))
    return states


def test_the_codebook_finds_planted_cell_types_and_assigns_each_cell_by_its_own_tokens():
    tokens, labels = planted_tokens()
    states = fitted(tokens)
    assigned = states.assign(tokens).numpy()
    # one state per planted type (the numbering is k-means'), every cell in its type's state
    mapping = {k: set(assigned[labels == k]) for k in range(3)}
    assert all(len(v) == 1 for v in mapping.values()) and len(set.union(*mapping.values())) == 3
    np.testing.assert_array_equal(np.sort(states.counts.numpy()), [10, 30, 60])


def test_states_are_drawn_in_proportion_to_their_training_cells():
    states = fitted(planted_tokens()[0])
    drawn = states.draw(30_000, torch.Generator().manual_seed(0)).numpy()
    share = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(share, states.counts.numpy() / 100, atol=0.01)
    again = states.draw(50, torch.Generator().manual_seed(0))
    assert torch.equal(again, states.draw(50, torch.Generator().manual_seed(0)))


def test_a_codebook_of_another_shape_or_too_few_cells_is_refused():
    states = CellStates(3, N_GENES, N_TOKENS, MAX)
    with pytest.raises(RuntimeError, match="codebook is empty"):
        states.assign(torch.zeros(2, N_GENES, dtype=torch.long))
    codebook = fit_states(np.random.default_rng(0).random((40, N_GENES + 1)), 3, n_components=5)
    with pytest.raises(ValueError, match="mean has shape"):
        CellStates(3, N_GENES, N_TOKENS, MAX, n_components=5).load_codebook(codebook)
    with pytest.raises(ValueError, match="need at least 40 training cells"):
        fit_states(np.zeros((39, N_GENES)), 4)


def test_the_model_is_conditioned_on_the_state_and_has_a_no_state_mode():
    torch.manual_seed(0)
    model = build_model("mini-tiny", N_GENES, N_TOKENS, n_states=3, tokenizer_max=MAX).eval()
    with torch.no_grad():  # as after training: adaLN's zero-initialized modulation would hide the condition
        for p in model.parameters():
            p.normal_(0, 0.1)
    tokens, t = torch.full((2, N_GENES), N_TOKENS), torch.full((2,), 0.5)
    with torch.no_grad():
        a = model(tokens, t, state=torch.tensor([0, 0]))
        b = model(tokens, t, state=torch.tensor([1, 1]))
        none = model(tokens, t)
        explicit_none = model(tokens, t, state=torch.tensor([3, 3]))
    assert not torch.allclose(a, b) and not torch.allclose(a, none)
    assert torch.equal(none, explicit_none)  # no state is the last embedding
    with pytest.raises(ValueError, match="takes no state"):
        build_model("mini-tiny", N_GENES, N_TOKENS)(tokens, t, state=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="takes no cell states"):
        build_model("conditional-tiny", N_GENES, N_TOKENS, n_states=3)


class Recording(torch.nn.Module):
    """Uniform predictions; records the states each step is given."""

    def __init__(self, states: CellStates):
        super().__init__()
        self.cell_states, self.seen = states, []

    def forward(self, tokens, t, state=None, **_):
        self.seen.append(state)
        return torch.zeros(*tokens.shape, N_TOKENS + 1)


def test_the_sampler_draws_one_state_per_cell_and_keeps_it_through_every_step():
    states = fitted(planted_tokens()[0])
    model = Recording(states)
    sample(model, 7, N_GENES, 5, N_TOKENS, generator=torch.Generator().manual_seed(2))
    assert len(model.seen) == 5 and all(torch.equal(s, model.seen[0]) for s in model.seen)
    assert torch.equal(model.seen[0], states.draw(7, torch.Generator().manual_seed(2)))  # the sampler's first draw
    model.seen.clear()
    given = torch.tensor([2, 2, 1])
    sample(model, 3, N_GENES, 2, N_TOKENS, state=given)
    assert all(torch.equal(s, given) for s in model.seen)
    model.seen.clear()
    sample(model, 3, N_GENES, 2, N_TOKENS, init=torch.full((3, N_GENES), N_TOKENS))  # completing: no state
    assert all(s is None for s in model.seen)


def test_depth_bins_split_each_cluster_by_the_genes_a_cell_expresses():
    tokens, labels = planted_tokens()
    tokens[::2, 16:] = 0  # every other cell expresses fewer genes: a shallower cell
    states = CellStates(3, N_GENES, N_TOKENS, MAX, n_components=5, depth_bins=2)
    values = BinnedTokenizer(n_tokens=N_TOKENS, max_value=MAX).detokenize(tokens).numpy()
    states.load_codebook(fit_states(values, 3, n_components=5, depth_bins=2))
    assert states.n_states == 6
    detected = (tokens > 0).sum(1)
    assert float(states.depth_edges[0]) == float(np.median(detected.numpy()))  # the quantile edge
    assigned = states.assign(tokens)
    np.testing.assert_array_equal((assigned % 2).numpy(), (detected >= states.depth_edges[0]).long().numpy())
    assert torch.equal(states.counts, torch.bincount(assigned, minlength=6).float())  # joint frequencies
    # the model embeds a state's cluster and depth bin, and "no state" (the index after the last) for each
    model = build_model("mini-tiny", N_GENES, N_TOKENS, n_states=3, depth_bins=2, tokenizer_max=MAX).eval()
    assert model.cluster_emb.num_embeddings == 4 and model.depth_emb.num_embeddings == 3
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
        t = torch.full((6,), 0.5)
        out = model(torch.full((6, N_GENES), N_TOKENS), t, state=torch.arange(6))
        assert all(not torch.allclose(out[i], out[j]) for i in range(6) for j in range(i))
        assert torch.equal(model(tokens[:1], t[:1]), model(tokens[:1], t[:1], state=torch.tensor([6])))


def test_a_codebook_saved_before_depth_bins_loads_as_one_bin():
    states = fitted(planted_tokens()[0])
    saved = {k: v for k, v in states.state_dict().items() if k != "depth_edges"}
    again = CellStates(3, N_GENES, N_TOKENS, MAX, n_components=5)
    again.load_state_dict(saved)
    tokens = planted_tokens(seed=1)[0]
    assert torch.equal(again.assign(tokens), states.assign(tokens))
    with pytest.raises(RuntimeError, match="depth_edges"):
        CellStates(3, N_GENES, N_TOKENS, MAX, n_components=5, depth_bins=2).load_state_dict(saved)


def test_the_codebook_reads_tokens_as_the_tokenizer_detokenizes_them():
    states = CellStates(2, N_GENES, N_TOKENS, MAX)
    tokens = torch.arange(N_TOKENS)
    np.testing.assert_allclose(states.centres[tokens].numpy(),
                               BinnedTokenizer(n_tokens=N_TOKENS, max_value=MAX).detokenize(tokens).numpy())


def test_token_log_prior_is_each_state_s_smoothed_token_frequency_by_hand():
    from scmodel.models.states import token_log_prior

    tokens = np.array([[0, 1], [0, 1], [1, 1], [2, 0]])  # 4 cells, 2 genes, tokens < 3
    labels = np.array([0, 0, 0, 1])
    prior = np.exp(token_log_prior(tokens, labels, n_states=2, n_tokens=3, pseudocells=1.0))
    overall_gene0 = np.array([2, 1, 1]) / 4
    # state 0, gene 0: counts (2, 1, 0) of 3 cells, plus one pseudo-cell of the overall frequencies
    np.testing.assert_allclose(prior[0, 0], (np.array([2, 1, 0]) + overall_gene0) / 4, rtol=1e-6)
    np.testing.assert_allclose(prior[1, 0], (np.array([0, 0, 1]) + overall_gene0) / 2, rtol=1e-6)
    np.testing.assert_allclose(prior[2, 0], overall_gene0, rtol=1e-6)  # the last row: no state
    np.testing.assert_allclose(prior.sum(axis=2), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 3\)"):
        token_log_prior(tokens + 1, labels, 2, 3)


def test_a_state_prior_model_adds_its_state_s_log_frequencies_to_the_network_s_logits():
    tokens, _ = planted_tokens()
    values = BinnedTokenizer(n_tokens=N_TOKENS, max_value=MAX).detokenize(tokens).numpy()
    model = build_model("mini-tiny", N_GENES, N_TOKENS, n_states=3, tokenizer_max=MAX, state_prior=True).eval()
    codebook = fit_states(values, 3, n_components=30, tokens=tokens.numpy(), n_tokens=N_TOKENS)
    model.cell_states.load_codebook(codebook)
    with torch.no_grad():  # a network that says nothing: the logits are the prior
        model.backbone.head.weight.zero_()
        model.backbone.head.bias.zero_()
        x, t = torch.full((2, N_GENES), N_TOKENS), torch.full((2,), 0.5)
        state = model.cell_states.assign(tokens[:2])
        torch.testing.assert_close(model(x, t, state=state), model.cell_states.token_log_prior[state])
        torch.testing.assert_close(model(x, t)[0], model.cell_states.token_log_prior[-1])  # no state: all cells'
        subset = torch.tensor([3, 9])
        torch.testing.assert_close(model(x[:, :2], t, state=state, gene_index=subset),
                                   model.cell_states.token_log_prior[state][:, subset])
    # a state's type shows in its prior: its own genes are high, the others low
    s = int(state[0])
    high = model.cell_states.token_log_prior[s].argmax(dim=1)
    assert int((high >= 4).sum()) == 8
    with pytest.raises(ValueError, match="needs the cells' tokens"):
        model.cell_states.load_codebook(fit_states(values, 3, n_components=30))
    with pytest.raises(ValueError, match="state_prior needs cell states"):
        build_model("mini-tiny", N_GENES, N_TOKENS, state_prior=True)


def test_fitted_is_known_without_reading_the_buffers_and_follows_a_loaded_state_dict():
    states = fitted(planted_tokens()[0])
    assert states.fitted
    blank = CellStates(3, N_GENES, N_TOKENS, MAX, n_components=5)
    assert not blank.fitted
    blank.load_state_dict(states.state_dict())
    assert blank.fitted and torch.equal(blank.assign(planted_tokens()[0]), states.assign(planted_tokens()[0]))
    blank.load_state_dict(CellStates(3, N_GENES, N_TOKENS, MAX, n_components=5).state_dict())
    assert not blank.fitted
