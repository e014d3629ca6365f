"""Regression: problem_type, numeric targets, MultimodalRegressor end to end on generated data."""
import json
import logging

import numpy as np
import pandas as pd
import pytest

from multimodal import (
    DataError,
    HyperparameterError,
    MultimodalClassifier,
    MultimodalEstimator,
    MultimodalRegressor,
    NotFittedError,
)
from multimodal.core.artifact import CONFIG_FILE
from multimodal.core.targets import REGRESSION_MIN_DISTINCT, choose_problem_type
from multimodal.tools.synthetic import make_dataset, make_regression_dataset


def small(n: int = 60, seed: int = 0) -> pd.DataFrame:
    return make_regression_dataset(n, seed=seed, with_images=False)


# ---------------------------------------------------------------------------------------------- problem type

@pytest.mark.parametrize("labels, expected", [
    ([f"{v:.2f}" for v in np.linspace(0, 10, 50)], "regression"),
    ([str(v) for v in range(REGRESSION_MIN_DISTINCT)], "regression"),
    ([str(v % (REGRESSION_MIN_DISTINCT - 1)) for v in range(200)], "classification"),  # integer class ids
    (["1.5", "2.5", "1.5", "2.5"], "classification"),
    ([f"{v}" for v in range(100)] + ["n/a", ""], "regression"),  # missing labels do not count
    ([f"{v}" for v in range(100)] + ["cheap"], "classification"),  # one word: the labels are names
    (["alpha", "beta"] * 20, "classification"),
])
def test_auto_chooses_regression_for_many_distinct_numbers(labels, expected, caplog):
    with caplog.at_level(logging.INFO, logger="multimodal.core.targets"):
        assert choose_problem_type(pd.Series(labels, dtype=object)) == expected
    assert f"problem_type auto: {expected}" in caplog.text  # the choice is logged with its reason


def test_the_documented_rule_is_the_rule_the_code_applies():
    from multimodal.core.hyperparameters import specification
    described = specification()["problem_type"]
    assert f"more than {REGRESSION_MIN_DISTINCT - 1} distinct values" in described.description
    assert MultimodalEstimator.problem_types == tuple(described.values) and described.default_value == "auto"


def test_a_regression_expert_is_skipped_only_where_its_modality_is_wholly_missing():
    """missing_threshold is for the 'insufficient information' class: a regressor learns from partial rows."""
    from multimodal.core.estimator import _Split
    from multimodal.core.experts import ExpertSpec
    from multimodal.core.schema import Schema, prepare_features
    from multimodal.core.targets import NumberTarget
    df = pd.DataFrame({"ID": ["a", "b", "c"], "title_text": ["x", "", "z"], "body_text": ["", "y", ""],
                       "label": ["1", "2", "3"]})
    features = prepare_features(df, Schema.from_header(list(df.columns)))
    split = _Split(features, {}, np.array([1.0, 2.0, 3.0]))
    spec = ExpertSpec("text", "text", ["title_text", "body_text"])
    model = MultimodalRegressor(missing_threshold=0.5)
    model.target_ = NumberTarget(2.0, 1.0)
    job = model._expert_job(spec, split)  # every row lacks half its text: still a text expert
    assert job is not None and job.lacking == 0 and list(job.target) == [1.0, 2.0, 3.0]
    split.features.missing[["title_text", "body_text"]] = True
    assert model._expert_job(spec, split) is None


def test_the_subclasses_decide_auto_themselves():
    labels = small()["label"].astype(str)
    assert MultimodalClassifier()._choose_problem_type(labels) == "classification"
    assert MultimodalRegressor()._choose_problem_type(pd.Series(["1", "2"] * 5)) == "regression"


@pytest.mark.parametrize("cls, value", [(MultimodalClassifier, "regression"), (MultimodalRegressor, "binary"),
                                        (MultimodalRegressor, "multiclass")])
def test_a_class_refuses_a_problem_type_it_cannot_fit(cls, value):
    with pytest.raises(HyperparameterError, match="MultimodalEstimator"):
        cls(problem_type=value)
    with pytest.raises(HyperparameterError):
        cls().set_params(problem_type=value)


def test_problem_type_is_checked_against_the_spec():
    with pytest.raises(HyperparameterError, match="problem_type"):
        MultimodalEstimator(problem_type="ordinal")


def test_predict_proba_exists_only_where_classes_can_be_predicted():
    assert hasattr(MultimodalEstimator(), "predict_proba")
    assert hasattr(MultimodalClassifier(), "predict_proba")
    assert not hasattr(MultimodalRegressor(), "predict_proba")
    assert not hasattr(MultimodalEstimator(problem_type="regression"), "predict_proba")
    with pytest.raises(NotFittedError):
        MultimodalRegressor().predict(small().drop(columns="label"))


def test_regression_scores_agree_with_scikit_learn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    from multimodal.core.scores import regression_scores
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 200)
    predicted = y + rng.normal(0, 3, 200)
    scores = regression_scores(y, predicted)
    assert scores["rows"] == 200
    assert scores["rmse"] == pytest.approx(mean_squared_error(y, predicted) ** 0.5)
    assert scores["mae"] == pytest.approx(mean_absolute_error(y, predicted))
    assert scores["r2"] == pytest.approx(r2_score(y, predicted))
    assert np.isnan(regression_scores(np.ones(3), np.ones(3))["r2"])  # undefined, not a perfect 1
    assert regression_scores(np.empty(0), np.empty(0))["rows"] == 0


# ---------------------------------------------------------------------------------------------- label errors

def fit_quickly(model: MultimodalEstimator, df: pd.DataFrame) -> None:
    model.set_params(quality="toy", n_folds=2, n_mins=0, n_secs=20).fit(df)


def test_a_text_label_for_regression_names_the_column_and_rows():
    df = small()
    df["label"] = df["label"].astype(object)
    df.loc[[3, 7], "label"] = ["about ten", "12,5"]
    with pytest.raises(DataError) as error:
        fit_quickly(MultimodalRegressor(), df)
    message = str(error.value)
    assert "'label'" in message and "is not a number" in message
    assert "row 4 (ID 'r0-00003'): 'about ten'" in message and "row 8 (ID 'r0-00007'): '12,5'" in message
    assert "problem_type" in message  # the fix
    assert error.value.column == "label" and error.value.row == 4


def test_an_infinite_label_is_refused():
    df = small()
    df["label"] = df["label"].astype(object)
    df.loc[5, "label"] = "inf"
    with pytest.raises(DataError, match=r"'label' is infinite .* row 6"):
        fit_quickly(MultimodalEstimator(problem_type="regression"), df)


def test_a_constant_target_is_refused():
    df = small()
    df["label"] = 4.5
    with pytest.raises(DataError, match="at least 2 different numbers"):
        fit_quickly(MultimodalRegressor(), df)


def test_binary_with_three_classes_is_refused():
    df = make_dataset(60, seed=1, with_images=False)
    df = df[df["label"].isin(["alpha", "beta", "gamma"])]
    with pytest.raises(DataError, match="problem_type is binary but column 'label' has 3 classes"):
        fit_quickly(MultimodalEstimator(problem_type="binary"), df)


def test_a_validation_label_that_is_not_a_number_is_refused():
    validation = small(30, seed=5)
    validation["label"] = validation["label"].astype(object)
    validation.loc[2, "label"] = "n.a."
    with pytest.raises(DataError, match=r"the validation data: column 'label' is not a number .* row 3"):
        MultimodalRegressor(quality="toy", n_folds=2, n_mins=0, n_secs=20).fit(small(), validation)


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_fused_regression_beats_the_mean_and_each_expert_alone(trained_regressor, regression_test_df):
    scores = trained_regressor.evaluate(regression_test_df)
    y = regression_test_df["label"].astype(float)
    assert set(scores) == {"rmse", "mae", "r2", "rows", "experts"} and scores["rows"] == len(y)
    assert set(scores["experts"]) == {"text", "num", "cat", "photo_image", "joint"}
    # the target depends on two modalities: no single modality's expert can match their fusion
    per_modality = {k: v for k, v in scores["experts"].items() if k != "joint"}
    assert scores["rmse"] < min(s["rmse"] for s in per_modality.values()), scores
    assert scores["r2"] > 0.5 and scores["rmse"] < y.std(), scores
    assert scores["mae"] <= scores["rmse"]


@pytest.mark.slow
def test_regression_fit_records_what_the_reports_need(trained_regressor):
    model = trained_regressor
    assert model.problem_type_ == "regression" and not hasattr(model, "classes_")
    assert {"rmse", "mae", "r2"} <= set(model.metrics_["validation"]) and "confusion_matrix" not in model.metrics_[
        "validation"]
    target = model.metrics_["target"]
    assert target["min"] < target["mean"] < target["max"] and target["std"] > 0
    assert list(model.validation_predictions_.columns) == ["actual", "predicted"]
    assert len(model.validation_predictions_) == model.metrics_["rows"]["validation"]
    assert {"loss", "val_loss", "best_epoch", "loss_name"} <= set(model.metrics_["fusion_curve"])
    assert "regression" in repr(model)


@pytest.mark.slow
def test_predict_returns_numbers_aligned_with_the_input(trained_regressor, regression_test_df):
    rows = regression_test_df.drop(columns="label").set_index(pd.Index(range(500, 500 + len(regression_test_df))))
    predicted = trained_regressor.predict(rows)
    assert predicted.dtype == np.float64 and predicted.name == "prediction" and predicted.index.equals(rows.index)
    assert np.isfinite(predicted).all()
    empty = trained_regressor.predict(rows.iloc[:0])
    assert empty.dtype == np.float64 and len(empty) == 0
    blank = rows.head(2).copy()
    blank.loc[:, [c for c in blank.columns if c != "ID"]] = ""
    assert np.isfinite(trained_regressor.predict(blank)).all()  # every modality missing: still a number


@pytest.mark.slow
def test_regression_model_round_trips_through_save_and_load(trained_regressor, regression_test_df, tmp_path):
    rows = regression_test_df.drop(columns="label")
    trained_regressor.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["problem_type"] == "regression" and "classes" not in config and config["target"]["std"] > 0
    for cls in (MultimodalEstimator, MultimodalRegressor):
        loaded = cls.load(tmp_path)
        assert type(loaded) is cls and loaded.problem_type_ == "regression"
        np.testing.assert_array_equal(loaded.predict(rows).to_numpy(), trained_regressor.predict(rows).to_numpy())
        assert not hasattr(loaded, "predict_proba")
    with pytest.raises(ValueError, match="regression model: load it with MultimodalEstimator.load"):
        MultimodalClassifier.load(tmp_path)


@pytest.mark.slow
def test_refit_full_experts_predict_with_one_model_per_bag_after_save_and_load(tmp_path):
    """refit_full=true (at toy, where auto would not refit): every saved expert predicts with models refitted on all its rows (AutoGluon's ``_FULL``
    models, one per chosen model instead of one per fold), and the loaded model predicts what the fitted one did."""
    from autogluon.tabular import TabularPredictor
    train, test = make_regression_dataset(160, seed=31), make_regression_dataset(40, seed=32)
    model = MultimodalRegressor(quality="toy", n_folds=3, n_mins=0, n_secs=60, n_epochs=10, refit_full="true",
                                image_model="efficientnet_lite0").fit(train)
    model.save(tmp_path)
    for name in model.expert_names_:
        predictor = TabularPredictor.load(str(tmp_path / "modality" / name), verbosity=0)
        assert predictor.model_best.endswith("_FULL"), (name, predictor.model_best)
        assert all(predictor._trainer.load_model(m).n_children == 1 for m in predictor.model_names()
                   if not m.startswith("WeightedEnsemble")), name
    rows = test.drop(columns="label")
    np.testing.assert_allclose(MultimodalRegressor.load(tmp_path).predict(rows).to_numpy(),
                               model.predict(rows).to_numpy(), rtol=1e-6)


@pytest.mark.slow
def test_one_estimator_refitted_on_other_labels_starts_afresh():
    model = MultimodalEstimator(quality="toy", n_folds=2, n_mins=0, n_secs=20, n_epochs=10, joint_expert=False)
    model.fit(small(80))
    assert model.problem_type_ == "regression" and hasattr(model, "target_mean_")
    model.fit(make_dataset(80, seed=3, with_images=False))
    assert model.problem_type_ == "multiclass" and not hasattr(model, "target_mean_")
    assert not hasattr(model, "validation_predictions_") and "accuracy" in model.metrics_["validation"]
    with pytest.raises(DataError):  # a failed fit leaves nothing of the last one behind
        model.fit(small(10).assign(label=""))
    with pytest.raises(NotFittedError):
        model.predict(small(5).drop(columns="label"))


@pytest.mark.slow
def test_a_classifier_cannot_be_loaded_as_a_regressor(saved_model_dir):
    with pytest.raises(ValueError, match="classification model"):
        MultimodalRegressor.load(saved_model_dir)
    assert MultimodalEstimator.load(saved_model_dir).problem_type_ == "multiclass"


@pytest.mark.slow
def test_a_model_saved_before_regression_loads_as_a_classifier(saved_model_dir, tmp_path, test_df):
    import shutil
    shutil.copytree(saved_model_dir, tmp_path / "m")
    config_path = tmp_path / "m" / CONFIG_FILE
    config = json.loads(config_path.read_text())
    del config["problem_type"], config["hyperparameters"]["problem_type"]
    config["format_version"] = 2
    config_path.write_text(json.dumps(config))
    old = MultimodalEstimator.load(tmp_path / "m")
    assert old.problem_type_ == "multiclass" and old.classes_ == config["classes"]
    rows = test_df.drop(columns="label").head(20)
    pd.testing.assert_frame_equal(old.predict_proba(rows), MultimodalClassifier.load(saved_model_dir).predict_proba(
        rows))
