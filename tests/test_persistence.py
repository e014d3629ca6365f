"""Models saved before the estimator was split by concept (issue 20) load and predict exactly as they did.

``tests/data/saved-before-issue-20`` holds a classifier (fusion network) and a regressor (weighted ensemble),
each trained and saved by the code of commit c9d10fd (small synthetic data, quality toy), with rows to predict
and the predictions that code made for them. Retraining cannot stand in for this: the point is that files
written by an earlier version keep their meaning.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimodal import MultimodalClassifier, MultimodalEstimator, MultimodalRegressor
from multimodal.core.artifact import CONFIG_FILE, FORMAT_VERSION

SAVED = Path(__file__).parent / "data" / "saved-before-issue-20"


def _rows(name: str) -> pd.DataFrame:
    return pd.read_csv(SAVED / f"{name}_rows.csv", dtype=str, keep_default_na=False)


@pytest.mark.parametrize("cls", [MultimodalClassifier, MultimodalEstimator])
def test_a_classifier_saved_before_predicts_the_same_probabilities(cls):
    model = cls.load(SAVED / "classifier")
    assert model.problem_type_ == "multiclass" and model.target_.n_classes == len(model.classes_)
    proba = model.predict_proba(_rows("classifier")).to_numpy()
    saved = np.load(SAVED / "classifier_proba.npy")
    # the same labels, and the same probabilities to float32's last bit or so: the fusion network's forward pass
    # now runs in float64 (so that a row's result does not depend on the rows beside it) and rounds to float32
    np.testing.assert_array_equal(proba.argmax(axis=1), saved.argmax(axis=1))
    np.testing.assert_allclose(proba, saved, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [MultimodalRegressor, MultimodalEstimator])
def test_a_regressor_saved_before_predicts_the_same_numbers(cls):
    model = cls.load(SAVED / "regressor")
    assert model.problem_type_ == "regression" and (model.target_mean_, model.target_std_) == (
        model.target_.mean, model.target_.std)
    predicted = model.predict(_rows("regressor")).to_numpy()
    np.testing.assert_array_equal(predicted, np.load(SAVED / "regressor_pred.npy"))


@pytest.mark.parametrize("name", ["classifier", "regressor"])
def test_saving_a_loaded_model_again_writes_the_same_config(name, tmp_path):
    """Every key of model_config.json but the library versions and the format version (a resave writes the
    current one, which reads the same) is written unchanged, and the hyperparameters added since say what the
    model did (``use_leftover_time``: false)."""
    copy = tmp_path / name
    shutil.copytree(SAVED / name, copy)
    MultimodalEstimator.load(copy).save(copy)
    before = json.loads((SAVED / name / CONFIG_FILE).read_text())
    after = json.loads((copy / CONFIG_FILE).read_text())
    before.pop("versions"), after.pop("versions")
    assert before.pop("format_version") == 5 and after.pop("format_version") == FORMAT_VERSION
    added = {k: v for k, v in after["hyperparameters"].items() if k not in before["hyperparameters"]}
    assert added == {"use_leftover_time": False}
    after["hyperparameters"] = {k: v for k, v in after["hyperparameters"].items() if k not in added}
    assert after == before


def test_the_wrong_class_names_the_right_one():
    with pytest.raises(ValueError, match="holds a regression model: load it with .*MultimodalRegressor.load"):
        MultimodalClassifier.load(SAVED / "regressor")
    with pytest.raises(ValueError, match="holds a classification model: .*MultimodalClassifier.load"):
        MultimodalRegressor.load(SAVED / "classifier")
