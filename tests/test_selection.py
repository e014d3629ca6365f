"""Greedy ensemble selection over the experts' outputs (multimodal.core.selection)."""
import numpy as np
import pytest

from multimodal.core.selection import WeightedEnsemble, load_fusion, loss, real_class_probabilities

N_CLASSES = 3


def _experts(n: int, seed: int = 0):
    """A good expert (with an 'insufficient information' column), a coin-flipping one, and the labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=n)
    good = np.full((n, N_CLASSES + 1), 0.05)
    good[np.arange(n), y] = 0.85
    wrong = rng.random(n) < 0.2
    good[wrong] = 0.05
    good[wrong, rng.integers(0, N_CLASSES, size=wrong.sum())] = 0.85
    noise = rng.dirichlet(np.ones(N_CLASSES), size=n)
    return np.hstack([good, noise]), y, [[0, 1, 2, 3], [0, 1, 2]]


def test_the_ensemble_weights_the_informative_expert_and_is_no_worse_than_it():
    x, y, layout = _experts(600)
    ensemble = WeightedEnsemble.fit(x[:400], y[:400], layout, N_CLASSES)
    assert ensemble.weights[0] > 0.7 and ensemble.weights.sum() == pytest.approx(1.0)
    good_alone = real_class_probabilities(x[400:, :4], layout[0], N_CLASSES)
    # on rows it was not fitted on, within a hair of the good expert (weight 1 on it is one of its candidates)
    assert loss(ensemble.predict(x[400:]), y[400:], False) <= loss(good_alone, y[400:], False) + 0.01
    proba = ensemble.predict(x[400:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_an_abstaining_expert_contributes_uniform_probabilities():
    proba = real_class_probabilities(np.array([[0.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.0, 0.6]]), [0, 1, 2, 3], 3)
    np.testing.assert_allclose(proba, [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])


def test_a_regression_ensemble_averages_the_experts_predictions_and_ignores_other_inputs():
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    x = np.stack([y + rng.normal(scale=0.3, size=500), y + rng.normal(scale=0.3, size=500),
                  rng.normal(size=500), rng.random(500)], axis=1)  # 3 experts, then a missing fraction
    ensemble = WeightedEnsemble.fit(x, y, [[], [], []], None)
    assert ensemble.weights[2] < 0.1 and abs(ensemble.weights[0] - ensemble.weights[1]) < 0.3
    # two independent errors averaged: about half the variance of either
    assert loss(ensemble.predict(x), y, True) < 0.7 * loss(x[:, [0]], y, True)
    assert ensemble.predict(x).shape == (500, 1)


def test_a_saved_ensemble_loads_as_the_fusion_and_predicts_the_same(tmp_path):
    x, y, layout = _experts(300)
    ensemble = WeightedEnsemble.fit(x, y, layout, N_CLASSES)
    ensemble.save(tmp_path)
    loaded = load_fusion(tmp_path)
    assert isinstance(loaded, WeightedEnsemble)
    np.testing.assert_array_equal(loaded.predict(x), ensemble.predict(x))
    assert not list(tmp_path.glob("*.tmp"))
