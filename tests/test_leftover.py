"""use_leftover_time: the joint expert fitted again at a stronger quality with the time the toy experts leave,
kept only when its out-of-fold loss is lower."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from multimodal.core import leftover
from multimodal.core.estimator import MultimodalClassifier
from multimodal.core.experts import ExpertJob, ExpertSpec
from multimodal.core.targets import ClassTarget, NumberTarget
from multimodal.core.timebudget import TimeBudget
from multimodal.tools.synthetic import make_dataset


def test_out_of_fold_loss_reads_each_row_s_true_class_in_the_expert_s_own_columns():
    # an expert whose classes skip 1 (no row of class 1 had this modality): its column 1 is class 2
    oof = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    target = np.array([0, 2, 3])
    classes = ClassTarget("multiclass", ["a", "b", "c"])
    assert leftover.out_of_fold_loss(oof, target, [0, 2, 3], classes) == pytest.approx(-np.log([0.7, 0.8, 0.6]).mean())
    # a regressor's outputs are its predictions: the mean squared error
    number = NumberTarget(2.0, 1.0)
    assert leftover.out_of_fold_loss(np.array([[1.0], [3.0]]), np.array([2.0, 2.0]), [], number) == pytest.approx(1.0)


TWO = ClassTarget("binary", ["no", "yes"])  # the fitted model's target: two classes


def _jobs(modalities=("text", "num", "joint")):
    target = np.array([0, 1, 0, 1])
    return [ExpertJob(ExpertSpec(m, m, [m]), target, 0) for m in modalities]


def _expert(name, p_true):
    """An expert of two classes whose out-of-fold outputs give every row's true class ``p_true``."""
    oof = np.array([[p_true, 1 - p_true], [1 - p_true, p_true]] * 2)
    return SimpleNamespace(name=name, classes=[0, 1]), oof


class _Fit:
    """Stands in for the estimator's fit of experts: records what it was asked and returns a prepared expert."""

    def __init__(self, p_true):
        self.p_true, self.calls = p_true, []

    def __call__(self, jobs, *, options, budget, stage):
        self.calls.append((jobs, options(jobs[0].spec), budget, stage))
        return [_expert("joint-again", self.p_true)], ["key-again"]


def _options(spec):
    return {"quality": "toy", "n_folds": 3}


def test_the_joint_expert_is_fitted_again_at_light_and_kept_when_its_out_of_fold_loss_is_lower():
    jobs, results = _jobs(), [_expert("text", 0.6), _expert("num", 0.6), _expert("joint", 0.7)]
    budget = TimeBudget(600)
    fit = _Fit(p_true=0.9)
    experts, keys, report = leftover.spend(jobs, results, ["k1", "k2", "k3"], TWO, budget, _options, fit)
    (fitted, options, held, stage), = fit.calls
    assert [j.spec.name for j in fitted] == ["joint"] and stage == "leftover"
    assert options == {"quality": "light", "n_folds": 3}  # only the quality changes
    # the fusion keeps twice its reserve, on the same clock
    assert held.fusion_reserve == 2 * budget.fusion_reserve and held.started == budget.started
    assert [e.name for e, _ in experts] == ["text", "num", "joint-again"] and keys == ["k1", "k2", "key-again"]
    assert report["kept"] == "light" and report["quality"] == "light"
    assert report["out_of_fold_loss"]["light"] < report["out_of_fold_loss"]["toy"]
    json.dumps(report)  # it goes into metrics.json


def test_a_joint_expert_refitted_no_better_out_of_fold_is_dropped():
    jobs, results = _jobs(), [_expert("text", 0.6), _expert("num", 0.6), _expert("joint", 0.8)]
    experts, keys, report = leftover.spend(jobs, results, ["k1", "k2", "k3"], TWO, TimeBudget(600), _options,
                                            _Fit(0.75))
    assert experts == results and keys == ["k1", "k2", "k3"] and report["kept"] == "toy"


@pytest.mark.parametrize("case", ["no joint expert", "quality light", "budget spent"])
def test_nothing_is_fitted_again_without_a_joint_expert_above_toy_or_without_a_minute_to_spare(case):
    jobs = _jobs(("text", "num")) if case == "no joint expert" else _jobs()
    results = [_expert(j.spec.name, 0.7) for j in jobs]
    options = (lambda spec: {"quality": "light"}) if case == "quality light" else _options
    # 600 s with 470 spent: 130 s left, less twice the 60-s reserve: 10 s to spare
    budget = TimeBudget(600, spent=470 if case == "budget spent" else 0)
    fit = _Fit(0.99)
    nothing = [None] * len(jobs)
    assert leftover.spend(jobs, results, nothing, TWO, budget, options, fit) == (results, nothing, None)
    assert fit.calls == []


def test_the_time_to_spare_is_what_the_budget_leaves_after_twice_the_fusion_s_reserve():
    # 200 s budget, 20 s reserve, 100 s spent: 200 - 100 - 40 = 60 s to spare, just enough
    fit = _Fit(0.9)
    budget = TimeBudget(200, spent=99)
    experts = [_expert(n, 0.7) for n in ("text", "num", "joint")]
    leftover.spend(_jobs(), experts, [None] * 3, TWO, budget, _options, fit)
    (_, _, held, _), = fit.calls
    assert held.left() - held.fusion_reserve == pytest.approx(61, abs=1)
    fit = _Fit(0.9)
    leftover.spend(_jobs(), experts, [None] * 3, TWO,
                   TimeBudget(200, spent=102), _options, fit)
    assert fit.calls == []


@pytest.mark.slow
def test_a_toy_fit_spends_the_leftover_on_a_stronger_joint_expert_and_still_ends_within_its_budget(tmp_path):
    """What a user of quality=toy with a few minutes' budget gets: the fit uses the minutes it was given (within
    budget + 10 %), metrics.json says what the leftover bought, and the model predicts the same after a reload."""
    data, test = make_dataset(400, seed=3, with_images=False), make_dataset(120, seed=4, with_images=False)
    # the leftover is fitted when the toy experts end within 60 s (150 - 2 × 15 - 60), a wide margin on 400 rows
    hyperparameters = dict(quality="toy", n_folds=3, n_mins=0, n_secs=150, n_epochs=40)
    started = time.monotonic()
    model = MultimodalClassifier(**hyperparameters).fit(data)
    seconds = time.monotonic() - started
    report = model.metrics_["leftover"]
    assert report["quality"] == "light" and report["seconds"] >= leftover.MIN_SECONDS
    assert seconds <= 1.1 * 150, seconds
    joint = model.leaderboards_["joint"]["model"]
    # light's forests are in the kept joint expert's leaderboard; toy has none
    assert any(("RandomForest" in m or "ExtraTrees" in m) for m in joint) == (report["kept"] == "light")
    model.save(tmp_path)
    rows = test.drop(columns="label")
    assert (MultimodalClassifier.load(tmp_path).predict(rows) == model.predict(rows)).all()
    # false: the same toy fit ends early and says nothing of a leftover
    started = time.monotonic()
    early = MultimodalClassifier(**hyperparameters, use_leftover_time=False).fit(data)
    assert "leftover" not in early.metrics_ and time.monotonic() - started < seconds


def test_a_model_saved_before_use_leftover_time_existed_says_it_did_not_use_it():
    """Its get_params() (and so a refit with them, or the registration of its settings) must say what it did."""
    saved = Path(__file__).parent / "data" / "saved-before-issue-20" / "classifier"
    assert "use_leftover_time" not in json.loads((saved / "model_config.json").read_text())["hyperparameters"]
    assert MultimodalClassifier.load(saved).get_params()["use_leftover_time"] is False
