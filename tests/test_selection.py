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


class _Fixed:
    """A fusion whose outputs are given in advance per row (``rows`` of the whole matrix: it ignores its fit)."""

    def __init__(self, outputs, x_all):
        self.by_row = {row.tobytes(): out for row, out in zip(x_all, outputs)}

    def predict(self, x):
        return np.stack([self.by_row[row.tobytes()] for row in x])


def _two_noisy_views(n: int, seed: int = 3):
    """Probabilities from two fusions that are each right about 75 % of the time, wrong on different rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=n)

    def view():
        p = rng.dirichlet(np.ones(N_CLASSES), size=n) * 0.4
        right = rng.random(n) < 0.75
        p[np.arange(n), np.where(right, y, (y + 1) % N_CLASSES)] += 0.6
        return p / p.sum(axis=1, keepdims=True)

    return np.arange(n, dtype=float)[:, None], y, view(), view()


def test_the_blend_is_scored_out_of_fold_as_the_mean_of_the_two_candidates_outputs():
    """Two fusions wrong on different rows: their mean's log-loss is below either's (the loss is convex), and the
    comparison reports it per row as if it were a third candidate, with its paired difference to the ensemble."""
    x, y, a, b = _two_noisy_views(600)
    result = compare_by_cross_validation(
        x, y, CLASSES, {"network": lambda xs, ys: _Fixed(a, x), "ensemble": lambda xs, ys: _Fixed(b, x)},
        choice_folds(y, CLASSES, seed=0))
    mean = (a + b) / 2
    assert result["loss"]["blend"] == pytest.approx(loss(mean, y, CLASSES), rel=1e-5)
    assert result["loss"]["blend"] < min(result["loss"]["network"], result["loss"]["ensemble"])
    assert result["reference"] == "ensemble"
    blend = result["versus_reference"]["blend"]
    assert blend["difference"] == pytest.approx(result["loss"]["blend"] - result["loss"]["ensemble"], rel=1e-5)
    assert blend["difference"] + blend["standard_error"] < 0  # clearly better than the ensemble alone
    # the first candidate's comparison stays where earlier readers of metrics_ find it
    assert result["difference"] == result["versus_reference"]["network"]["difference"]
    network_blend = result["versus_blend"]["network"]
    assert network_blend["difference"] == pytest.approx(result["loss"]["network"] - result["loss"]["blend"], rel=1e-5)
    assert network_blend["difference"] > 0 and network_blend["standard_error"] > 0


def _comparison(network: tuple[float, float], blend: tuple[float, float],
                network_blend: tuple[float, float]) -> dict:
    """A cross-validation result: (mean loss difference, its standard error) of each candidate to the ensemble,
    and of the network to the blend."""
    versus = {"network": {"difference": network[0], "standard_error": network[1]},
              "blend": {"difference": blend[0], "standard_error": blend[1]}}
    return {"folds": 5, "rows": 500, "reference": "ensemble", "versus_reference": versus,
            "versus_blend": {"network": {"difference": network_blend[0], "standard_error": network_blend[1]}},
            "loss": {"ensemble": 0.5, "network": 0.5 + network[0], "blend": 0.5 + blend[0]}, **versus["network"]}


@pytest.mark.parametrize("network, blend, network_blend, chosen", [
    # clothing at toy: the network not clearly better than the ensemble, the blend is
    ((-0.008, 0.009), (-0.021, 0.005), (+0.013, 0.006), "blend"),
    # films_rating at best: both clearly better than the ensemble, the network no better than the blend (it was
    # worse on the test rows): the simpler of the two
    ((-0.0062, 0.0034), (-0.0062, 0.0017), (-0.00001, 0.0018), "blend"),
    ((-0.045, 0.011), (-0.043, 0.004), (-0.0025, 0.007), "blend"),
    ((-0.090, 0.008), (-0.050, 0.004), (-0.040, 0.006), "network"),  # clearly better than the blend too
    ((-0.020, 0.008), (-0.004, 0.005), (-0.016, 0.005), "network"),  # the blend not clearly better: vs the ensemble
    ((-0.002, 0.003), (-0.001, 0.001), (-0.001, 0.002), "ensemble"),  # neither: the ensemble
    ((+0.011, 0.005), (-0.002, 0.002), (+0.013, 0.004), "ensemble"),  # exactly one standard error is not "more than"
])
def test_the_choice_climbs_from_the_ensemble_to_the_blend_to_the_network_when_each_is_clearly_better(
        network, blend, network_blend, chosen):
    from multimodal.core.selection import Blend, choose_fusion
    x, y, layout = _experts(300)
    ensemble = WeightedEnsemble.fit(x, y, layout, CLASSES)
    stand_in = _Fixed(np.full((len(x), N_CLASSES), 1 / N_CLASSES), x)
    fused, choice = choose_fusion(stand_in, ensemble, _comparison(network, blend, network_blend), x, y, CLASSES,
                                  ["good", "noise"])
    assert choice["chosen"] == chosen
    assert isinstance(fused, {"network": _Fixed, "ensemble": WeightedEnsemble, "blend": Blend}[chosen])
    assert set(choice["validation_loss"]) == {"network", "ensemble", "blend"}


def test_a_saved_blend_loads_as_the_fusion_and_predicts_the_same(tmp_path):
    from multimodal import MultimodalClassifier
    from multimodal.core.selection import Blend, train_network
    x, y, layout = _experts(300)
    settings = FusionSettings.from_params(MultimodalClassifier(n_epochs=3, hidden_units=8).get_params())
    network, _ = train_network(x, y, CLASSES, settings, 30.0, quiet=True)
    fused = Blend(network, WeightedEnsemble.fit(x, y, layout, CLASSES))
    expected = (network.predict(x).astype(np.float64) + fused.ensemble.predict(x)) / 2
    np.testing.assert_allclose(fused.predict(x), expected, rtol=1e-6)
    np.testing.assert_allclose(fused.predict(x).sum(axis=1), 1.0, rtol=1e-5)
    fused.save(tmp_path)
    loaded = load_fusion(tmp_path)
    assert isinstance(loaded, Blend)
    np.testing.assert_array_equal(loaded.predict(x), fused.predict(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blend.json", "ensemble", "fusion.keras"]
