"""Atlas gene programs and in-silico knockdowns through co-variation, against hand computations."""

import numpy as np
import pytest
from scipy.stats import poisson

from scmodel.coexpression import AtlasPrograms, ProgramsConfig, fit_programs, knockdown_ratio


def test_knockdown_moves_genes_by_their_slope_on_the_target():
    rng = np.random.default_rng(0)
    target = rng.normal(1.5, 0.4, size=400).clip(0.2)
    follower = 0.5 * target + rng.normal(0, 0.05, size=400) + 1.0  # slope 0.5 on the target
    opposed = -0.25 * target + 2.0 + rng.normal(0, 0.05, size=400)
    unrelated = rng.normal(1.0, 0.3, size=400).clip(0)
    controls = np.column_stack([target, follower, opposed, unrelated])
    ratio = knockdown_ratio(controls, 0, 0.2)
    c = controls - controls.mean(0)
    slope = c.T @ c[:, 0] / (c[:, 0] @ c[:, 0])
    change = np.log1p(np.expm1(controls[:, 0]) * 0.2) - controls[:, 0]
    moved = np.clip(controls + change[:, None] * slope[None, :], 0, None)
    expected = (np.expm1(moved).mean(0) + 1e-2) / (np.expm1(controls).mean(0) + 1e-2)
    assert ratio[0] == 0.2
    assert np.allclose(ratio[1:], expected[1:])
    assert ratio[1] < 0.8 and ratio[2] > 1.05 and abs(ratio[3] - 1) < 0.05


def test_programs_keep_only_the_shared_part_of_the_co_variation():
    basis = np.zeros((4, 1))
    basis[:2, 0] = np.sqrt(0.5)  # one program: genes 0 and 1 together
    programs = AtlasPrograms(basis=basis, variance=np.ones(1), cells=10)
    assert np.allclose(programs.project(np.array([1.0, 0.0, 3.0, -2.0])), [0.5, 0.5, 0.0, 0.0])
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 0.5, size=300)
    controls = np.column_stack([1.5 + shared, 1.0 + shared + rng.normal(0, 0.1, 300),
                                1.0 + 0.8 * shared + rng.normal(0, 0.1, 300), rng.normal(1, 0.2, 300)]).clip(0)
    with_programs = knockdown_ratio(controls, 0, 0.2, programs)
    without = knockdown_ratio(controls, 0, 0.2)
    assert with_programs[1] < 0.9 and without[2] < 0.9  # gene 2 follows in the controls...
    assert abs(with_programs[2] - 1) < 1e-9  # ...but lies outside the atlas's program: kept still


def test_fit_finds_programs_within_cell_states_not_between_them():
    rng = np.random.default_rng(2)
    n, genes = 3000, 30
    state = rng.integers(0, 3, size=n)
    state_means = rng.normal(0, 3.0, size=(3, genes))  # cell states differ in every gene
    program = np.zeros(genes)
    program[[3, 7, 11, 19]] = 1.0  # within every state, these four genes move together
    activity = rng.normal(0, 1.0, size=n)
    values = state_means[state] + np.outer(activity, program) + rng.normal(0, 0.2, size=(n, genes))
    programs = fit_programs(values, ProgramsConfig(components=2, clusters=3, pca=5))
    top = programs.basis[:, 0]
    assert np.abs(top[[3, 7, 11, 19]]).min() > 0.4 and np.abs(np.delete(top, [3, 7, 11, 19])).max() < 0.15
    assert programs.variance[0] == pytest.approx(4.0, rel=0.15)  # the program's variance, not the states'
    state_back = AtlasPrograms.from_state(programs.to_state())
    assert np.allclose(state_back.basis, programs.basis, atol=1e-6) and state_back.cells == n


def _log1p_cp10k(counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    return np.log1p(counts * (1e4 / totals))


def test_reliability_of_pure_counting_noise_is_the_floor_and_of_a_varying_gene_its_signal_share():
    from scmodel.coexpression import MIN_RELIABILITY, measurement_reliability

    rng = np.random.default_rng(3)
    totals = rng.integers(4000, 12000, size=4000).astype(float)
    flat = _log1p_cp10k(rng.poisson(2e-3 * totals), totals)  # one rate in every cell: all variance is noise
    assert measurement_reliability(flat, totals) == MIN_RELIABILITY
    level = np.exp(rng.normal(0, 0.8, size=4000))  # the gene's own level varies between cells
    counts = rng.poisson(2e-3 * totals * level)
    values = _log1p_cp10k(counts, totals)
    # by hand, from the definition: each cell's exact Poisson variance of log1p(counts per 10k) at its
    # own (here known) rate is its noise; one minus their mean over the measured variance
    k = np.arange(200)
    noise = []
    for rate, total in zip(2e-3 * totals * level, totals):
        p = poisson.pmf(k, rate)
        v = np.log1p(k * 1e4 / total)
        noise.append((p * v * v).sum() - (p * v).sum() ** 2)
    assert measurement_reliability(values, totals) == pytest.approx(1 - np.mean(noise) / values.var(ddof=1), abs=0.05)


def test_the_attenuation_correction_recovers_the_slope_on_the_true_level():
    rng = np.random.default_rng(4)
    n = 3000
    totals = np.full(n, 8000.0)
    level = np.exp(rng.normal(0, 0.5, size=n))
    target = _log1p_cp10k(rng.poisson(5e-4 * totals * level), totals)  # a sparse, noisy regulator
    follower = 0.8 * np.log1p(5 * level) + 1.0 + rng.normal(0, 0.05, size=n)  # slope 0.8 on its true level
    controls = np.column_stack([target, follower])
    diluted = np.log(knockdown_ratio(controls, 0, 0.3))[1]
    corrected = np.log(knockdown_ratio(controls, 0, 0.3, totals=totals))[1]
    change = np.log1p(5 * level * 0.3) - np.log1p(5 * level)  # the true level knocked down to 30%
    truth = np.log(np.expm1(np.clip(follower + 0.8 * change, 0, None)).mean() / np.expm1(follower).mean())
    assert abs(corrected - truth) < abs(diluted - truth) / 2
    assert corrected == pytest.approx(truth, rel=0.35)



def test_blockwise_within_state_covariance_equals_the_one_pass_computation():
    from scmodel.coexpression import WithinStateCovariance

    rng = np.random.default_rng(4)
    values = rng.normal(size=(500, 6)) + rng.integers(0, 3, size=500)[:, None]
    states = rng.integers(0, 3, size=500)
    covariance = WithinStateCovariance(6)
    for start in range(0, 500, 128):  # blocks that split the states
        covariance.add(values[start:start + 128], states[start:start + 128])
    centred = values.copy()
    for s in range(3):
        centred[states == s] -= values[states == s].mean(0)
    by_hand = centred.T @ centred / (500 - 3)
    assert covariance.cells == 500
    assert np.allclose(covariance.covariance(), by_hand, atol=1e-5)
    programs = covariance.programs(2, genes=np.array(list("abcdef")))
    eigenvalues, vectors = np.linalg.eigh(by_hand)
    assert np.allclose(programs.variance, eigenvalues[::-1][:2], rtol=1e-4)
    assert np.allclose(np.abs(programs.basis.T @ vectors[:, ::-1][:, :2]), np.eye(2), atol=1e-3)
    back = AtlasPrograms.from_state(programs.to_state())
    assert back.genes.tolist() == list("abcdef")


def test_programs_seen_from_another_gene_list():
    """Matched by gene ID: covered genes are fitted on the programs' rows, the others keep their value."""
    rng = np.random.default_rng(5)
    basis, _ = np.linalg.qr(rng.normal(size=(8, 2)))
    programs = AtlasPrograms(basis=basis, variance=np.ones(2), cells=100, genes=np.array([f"G{i}" for i in range(8)]))
    vector = rng.normal(size=8)
    whole = programs.on([f"G{i}" for i in range(8)])  # every gene: the orthogonal projection
    assert np.allclose(whole.project(vector), programs.project(vector))
    listed = ["X1", "G2", "G0", "G5", "G7", "G6", "X2"]  # another order, two genes the atlas never had
    rows = [2, 0, 5, 7, 6]
    view = programs.on(listed)
    assert view.covered.tolist() == [False, True, True, True, True, True, False]
    other = np.array([9.0, *vector[rows], -4.0])
    projected = view.project(other)
    assert projected[0] == 9.0 and projected[-1] == -4.0
    coef, *_ = np.linalg.lstsq(basis[rows], vector[rows], rcond=None)
    assert np.allclose(projected[1:-1], basis[rows] @ coef)
    in_programs = basis @ np.array([1.5, -0.5])  # a vector in the programs comes back unchanged
    assert np.allclose(view.project(np.array([0.0, *in_programs[rows], 0.0]))[1:-1], in_programs[rows])
    with pytest.raises(ValueError, match="no gene IDs"):
        AtlasPrograms(basis=basis, variance=np.ones(2), cells=100).on(listed)
