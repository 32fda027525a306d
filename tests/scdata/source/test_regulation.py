"""The gene-regulatory model behind the demo atlas and screen, against hand computations."""

import numpy as np
import pytest

from scdata.source.regulation import Regulation, RegulationConfig, make_regulation


def _tiny() -> Regulation:
    """Two regulators (genes 0 and 1); regulator 1 follows regulator 0 with coupling 0.5; programs:
    regulator 0 moves gene 2 by +1, regulator 1 moves genes 2 and 3 by -2 and +0.5."""
    return Regulation(regulators=np.array([0, 1]), type_mean=np.array([[0.0, 0.0], [1.0, -1.0]]),
                      activity_sd=np.array([0.0, 0.0]), parent=np.array([-1, 0]), coupling=np.array([0.0, 0.5]),
                      centre=np.array([0.5, -0.5]), targets=[np.array([2]), np.array([2, 3])],
                      amplitudes=[np.array([1.0]), np.array([-2.0, 0.5])], scale=1.0)


def test_activities_follow_the_cell_type_and_the_parent():
    reg = _tiny()
    activity = reg.activities(np.random.default_rng(0), np.array([0, 1]))
    assert np.allclose(activity, [[0.0, 0.0], [1.0, -1.0]])  # no noise, parents at their type's mean
    moved = reg.propagate(np.array([[0.4, 0.0]]), np.array([0]))
    assert np.allclose(moved, [[0.4, 0.2]])  # the child follows half its parent's deviation


def test_knockdown_moves_the_regulator_and_its_children():
    reg = _tiny()
    start = np.array([[0.0, 0.0]])
    knocked = reg.knock_down(start, 0, 0.25)
    assert np.allclose(knocked, [[np.log(0.25), 0.5 * np.log(0.25)]])
    assert np.allclose(reg.knock_down(start, 1, 0.25), [[0.0, np.log(0.25)]])  # a child does not move its parent
    per_cell = reg.knock_down(np.zeros((2, 2)), 0, np.array([0.5, 0.25]))
    assert np.allclose(per_cell[:, 0], np.log([0.5, 0.25]))


def test_log_shift_is_the_regulators_own_level_plus_saturating_programs():
    reg = _tiny()
    activity = np.array([[1.5, 0.5]])  # deviations from the centres: +1, +1
    shift = reg.log_shift(activity, np.array([0, 1, 2, 3]), 4)
    expected = [1.0, 1.0, np.tanh(1.0) * 1.0 + np.tanh(1.0) * -2.0, np.tanh(1.0) * 0.5]
    assert np.allclose(shift[0], expected)
    some = reg.log_shift(activity, np.array([3, 0]), 4)  # any subset, in any order
    assert np.allclose(some[0], [expected[3], expected[0]])
    far = reg.log_shift(np.array([[50.5, -0.5]]), np.array([2]), 4)
    assert far[0, 0] == pytest.approx(1.0)  # saturated: at most the amplitude


def test_made_regulation_is_a_dag_over_expressed_genes():
    rng = np.random.default_rng(3)
    expressed = np.arange(100, 600)
    reg = make_regulation(rng, expressed, n_types=4, config=RegulationConfig(n_regulators=30))
    assert reg.n_regulators == 30 and set(reg.regulators) <= set(expressed)
    assert all(p < r for r, p in enumerate(reg.parent) if p >= 0)
    for targets in reg.targets:
        assert set(targets) <= set(expressed) and not set(targets) & set(reg.regulators)
    assert np.allclose(reg.centre, reg.type_mean.mean(axis=0))
