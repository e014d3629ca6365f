"""Greedy ensemble selection over the experts' outputs (multimodal.core.selection)."""
import numpy as np
import pytest

from multimodal.core.selection import (
    FusionSettings,
    WeightedEnsemble,
    choice_folds,
    compare_by_cross_validation,
    hold_out,
    load_fusion,
    loss,
)
from multimodal.core.targets import ClassTarget, NumberTarget, real_class_probabilities

N_CLASSES = 3
CLASSES = ClassTarget("multiclass", list(range(N_CLASSES)))
NUMBER = NumberTarget(0.0, 1.0)


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
    ensemble = WeightedEnsemble.fit(x[:400], y[:400], layout, CLASSES)
    assert ensemble.weights[0] > 0.7 and ensemble.weights.sum() == pytest.approx(1.0)
    good_alone = real_class_probabilities(x[400:, :4], layout[0], N_CLASSES)
    # on rows it was not fitted on, within a hair of the good expert (weight 1 on it is one of its candidates)
    assert loss(ensemble.predict(x[400:]), y[400:], CLASSES) <= loss(good_alone, y[400:], CLASSES) + 0.01
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
    ensemble = WeightedEnsemble.fit(x, y, [[], [], []], NUMBER)
    assert ensemble.weights[2] < 0.1 and abs(ensemble.weights[0] - ensemble.weights[1]) < 0.3
    # two independent errors averaged: about half the variance of either
    assert loss(ensemble.predict(x), y, NUMBER) < 0.7 * loss(x[:, [0]], y, NUMBER)
    assert ensemble.predict(x).shape == (500, 1)


def test_a_saved_ensemble_loads_as_the_fusion_and_predicts_the_same(tmp_path):
    x, y, layout = _experts(300)
    ensemble = WeightedEnsemble.fit(x, y, layout, CLASSES)
    ensemble.save(tmp_path)
    loaded = load_fusion(tmp_path)
    assert isinstance(loaded, WeightedEnsemble)
    np.testing.assert_array_equal(loaded.predict(x), ensemble.predict(x))
    assert not list(tmp_path.glob("*.tmp"))


class _Memoriser:
    """A stand-in for an overfitting network: perfect on the rows it was fitted on, uniform elsewhere."""

    def __init__(self, x, y):
        self.known = {row.tobytes(): label for row, label in zip(x, y)}

    def predict(self, x):
        out = np.full((len(x), N_CLASSES), 1 / N_CLASSES)
        for i, row in enumerate(x):
            if row.tobytes() in self.known:
                out[i] = 0.0
                out[i, self.known[row.tobytes()]] = 1.0
        return out


def test_cross_validation_scores_every_row_out_of_fold_and_exposes_an_overfitting_candidate():
    """On the rows it was fitted on the memoriser's loss is 0 (it would win a choice made there); out of fold it
    is log(3) per row, while the ensemble keeps the good expert's loss: the comparison must say so, with a
    difference far beyond its standard error."""
    x, y, layout = _experts(500)
    seen = []

    def memorise(xs, ys):
        seen.append(len(ys))
        return _Memoriser(xs, ys)

    result = compare_by_cross_validation(
        x, y, CLASSES, {"network": memorise, "ensemble": lambda xs, ys: WeightedEnsemble.fit(xs, ys, layout, CLASSES)},
        choice_folds(y, CLASSES, seed=0))
    assert result["folds"] == 5 and seen == [400] * 5  # each fit saw 4 folds of 100 rows
    assert result["loss"]["network"] == pytest.approx(np.log(N_CLASSES))
    good_alone = loss(real_class_probabilities(x[:, :4], layout[0], N_CLASSES), y, CLASSES)
    assert result["loss"]["ensemble"] <= good_alone + 0.01
    assert result["difference"] > 10 * result["standard_error"] > 0


def test_choice_folds_stratify_classes_and_need_enough_rows():
    y = np.array([0] * 90 + [1] * 10)
    folds = choice_folds(y, ClassTarget("binary", [0, 1]), seed=0)
    assert len(folds) == 5
    for fit_rows, scored in folds:
        assert len(set(fit_rows) | set(scored)) == 100 and not set(fit_rows) & set(scored)
        assert (y[scored] == 1).sum() == 2  # stratified: each fold holds its share of the rare class
    assert choice_folds(np.arange(39.0), NUMBER, seed=0) == []  # fewer than 2 folds of 20 rows
    assert len(choice_folds(np.arange(60.0), NUMBER, seed=0)) == 3


@pytest.mark.parametrize("n_classes, rows, fraction", [(25, 80, 0.2), (45, 800, 0.05), (3, 9, 0.2)])
def test_the_fusion_holdout_splits_many_classes_that_cannot_be_stratified(n_classes, rows, fraction):
    """A fold of the fusion choice holds 4/5 of the rows: with many classes ``validation_fraction`` of them can be
    fewer rows than there are classes, where a stratified split is impossible (scikit-learn raises). The split
    is then made without stratifying rather than failing a fit whose experts are already trained."""
    from multimodal import MultimodalClassifier
    settings = FusionSettings.from_params(MultimodalClassifier(validation_fraction=fraction).get_params())
    y = np.arange(rows) % n_classes
    fit_rows, held_out = hold_out(y, ClassTarget("multiclass", list(range(n_classes))), settings)
    assert len(held_out) == int(np.ceil(fraction * rows)) and len(fit_rows) + len(held_out) == rows
    assert not set(fit_rows) & set(held_out)


def test_the_fusion_holdout_stratifies_when_it_can():
    from multimodal import MultimodalClassifier
    settings = FusionSettings.from_params(MultimodalClassifier(validation_fraction=0.2).get_params())
    y = np.array([0] * 90 + [1] * 10)
    _, held_out = hold_out(y, ClassTarget("binary", [0, 1]), settings)
    assert len(held_out) == 20 and (y[held_out] == 1).sum() == 2


def test_the_fusion_hands_every_fit_over_before_asking_for_any_result_and_chooses_as_one_process_does():
    """A cluster runs the fusion's networks side by side only if all of them (the final one and the five of the
    choice) are handed over before the first result is awaited; and where they run must not change the fit."""
    from multimodal import MultimodalClassifier
    from multimodal.core.selection import fit_fusion
    x, y, layout = _experts(200)
    events = []

    class Later:  # a submit that runs each function only when its result is asked for
        def __init__(self, function, what):
            self.function, self.what = function, what
            events.append("submit")

        def result(self):
            events.append("result")
            return self.function()

    settings = FusionSettings.from_params(MultimodalClassifier(n_epochs=2, hidden_units=8).get_params())
    args = (x, y, None, CLASSES, settings, layout, ["good", "noise"], 30.0, lambda: 30.0)
    later, now = fit_fusion(*args, submit=Later), fit_fusion(*args)
    assert events == ["submit"] * 11 + ["result"] * 11  # the final network, then 5 folds × 2 candidates
    assert later.choice["cross_validation"] == now.choice["cross_validation"]
    np.testing.assert_allclose(later.fusion.predict(x[:20]), now.fusion.predict(x[:20]), rtol=1e-5)
