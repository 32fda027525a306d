"""The generative-model protocol's metrics against reference implementations (POT's exact optimal
transport, the ``prdc`` package of Naeem et al.) and hand computations on small sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scmodel.evaluate.distribution import mmd_rbf_mix, nn1_accuracy, prdc, protocol_metrics, protocol_space, wasserstein


@pytest.fixture
def sets():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 3)), rng.normal(loc=0.7, size=(40, 3))


@pytest.mark.parametrize("power", [1, 2])
def test_wasserstein_matches_pot_exact_transport(sets, power):
    import ot

    x, y = sets
    cost = ot.dist(x, y, metric="sqeuclidean" if power == 2 else "euclidean")
    expected = ot.emd2(ot.unif(len(x)), ot.unif(len(y)), cost)
    expected = np.sqrt(expected) if power == 2 else expected
    assert wasserstein(x, y, power) == pytest.approx(expected, rel=1e-9)


def test_wasserstein_on_the_line_is_the_sorted_matching():
    x, y = np.array([[0.0], [3.0], [1.0]]), np.array([[2.0], [-1.0], [5.0]])
    # sorted: (0,1,3) against (-1,2,5): distances 1,1,2
    assert wasserstein(x, y, 1) == pytest.approx(4 / 3)
    assert wasserstein(x, y, 2) == pytest.approx(np.sqrt((1 + 1 + 4) / 3))
    brute = min(np.abs(x[:, 0] - y[list(p), 0]).mean() for p in itertools.permutations(range(3)))
    assert wasserstein(x, y, 1) == pytest.approx(brute)


def test_wasserstein_refuses_unequal_sets():
    with pytest.raises(ValueError, match="equal size"):
        wasserstein(np.zeros((3, 2)), np.zeros((4, 2)))


def test_mmd_rbf_mix_by_hand():
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [3.0]])
    sigmas = (1.0, 2.0)

    def k(a, b):
        return sum(np.exp(-((a - b) ** 2) / (2 * s * s)) for s in sigmas)

    kxx = np.mean([k(a, b) for a in (0, 1) for b in (0, 1)])
    kyy = np.mean([k(a, b) for a in (0, 3) for b in (0, 3)])
    kxy = np.mean([k(a, b) for a in (0, 1) for b in (0, 3)])
    assert mmd_rbf_mix(x, y, sigmas) == pytest.approx(kxx + kyy - 2 * kxy)
    assert mmd_rbf_mix(x, x, sigmas) == pytest.approx(0.0, abs=1e-12)


def test_nn1_accuracy_by_hand():
    real = np.array([[0.0], [0.1], [5.0]])
    other = np.array([[10.0], [10.2], [5.2]])
    # nearest others: 0->0.1 (real, right), 0.1->0 (right), 5->5.2 (other, wrong),
    # 10->10.2 (right), 10.2->10 (right), 5.2->5 (real, wrong): 4 of 6
    assert nn1_accuracy(real, other) == pytest.approx(4 / 6)
    far = other + 100
    assert nn1_accuracy(real, far) == 1.0


def test_nn1_accuracy_of_one_distribution_is_near_a_half():
    rng = np.random.default_rng(1)
    values = [nn1_accuracy(rng.normal(size=(300, 5)), rng.normal(size=(300, 5))) for _ in range(3)]
    assert 0.44 < np.mean(values) < 0.56


def test_prdc_matches_the_reference_package(sets):
    from prdc import compute_prdc

    x, y = sets
    expected = compute_prdc(real_features=x, fake_features=y, nearest_k=5)
    ours = prdc(x, y, k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(expected[key])), key


def test_protocol_metrics_separate_a_shifted_set_from_a_resample():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(500, 40))
    reference, resample = rng.normal(size=(200, 40)), rng.normal(size=(200, 40))
    shifted = rng.normal(size=(200, 40)) + 1.0
    space = protocol_space(train)
    assert space.components.shape == (40, 30)
    same, moved = protocol_metrics(space, reference, resample), protocol_metrics(space, reference, shifted)
    assert same["nn1_accuracy"] < 0.6 < 0.9 < moved["nn1_accuracy"]
    for key in ("w1", "w2", "mmd_rbf"):
        assert moved[key] > same[key], key
    assert moved["precision"] < same["precision"] and moved["coverage"] < same["coverage"]
