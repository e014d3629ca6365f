import json
from pathlib import Path

import pytest

from multimodal import MultimodalClassifier
from multimodal.core.errors import HyperparameterError
from multimodal.core.hyperparameters import (
    defaults,
    load_spec_document,
    resolve,
    specification,
)

ROOT = Path(__file__).resolve().parents[1]


def test_packaged_spec_is_the_repository_file():
    assert load_spec_document() == json.loads((ROOT / "hyperparameter_specification.json").read_text())


def test_spec_is_valid_for_create_algorithm():
    range_keys = {"Integer": "IntegerParameterRangeSpecification",
                  "Continuous": "ContinuousParameterRangeSpecification",
                  "Categorical": "CategoricalParameterRangeSpecification"}
    for entry in load_spec_document():
        assert set(entry) <= {"Name", "Description", "Type", "Range", "IsTunable", "IsRequired", "DefaultValue"}
        assert isinstance(entry["DefaultValue"], str)
        assert not (entry["IsRequired"] and "DefaultValue" in entry), entry["Name"]
        if entry["Type"] == "FreeText":
            assert "Range" not in entry
            continue
        (key, body), = entry["Range"].items()
        assert key == range_keys[entry["Type"]], entry["Name"]
        if entry["Type"] == "Categorical":
            assert entry["DefaultValue"] in body["Values"] and all(isinstance(v, str) for v in body["Values"])
        else:
            assert isinstance(body["MinValue"], str) and isinstance(body["MaxValue"], str)
            assert float(body["MinValue"]) <= float(entry["DefaultValue"]) <= float(body["MaxValue"])


def test_original_algorithm_names_are_kept():
    assert {"n_hours", "n_mins", "n_secs", "n_epochs", "quality"} <= set(specification())
    assert set(specification()["quality"].values) >= {"toy", "very_light", "light", "default"}


def test_string_values_are_parsed_to_their_types():
    values = resolve({"n_mins": "7", "missing_threshold": "0.5", "quality": "toy", "n_epochs": "20.0"})
    assert values["n_mins"] == 7 and values["n_epochs"] == 20
    assert values["missing_threshold"] == 0.5 and values["quality"] == "toy"
    assert values["n_hours"] == defaults()["n_hours"]


@pytest.mark.parametrize("given, fragment", [
    ({"n_mins": "five"}, "n_mins='five' must be an integer"),
    ({"n_epochs": "2.5"}, "n_epochs='2.5' must be an integer"),
    ({"missing_threshold": "abc"}, "missing_threshold='abc' must be a number"),
    ({"n_epochs": "0"}, "n_epochs='0' is out of range: it must be between 1 and 1000"),
    ({"missing_threshold": "1.5"}, "between 0.01 and 1"),
    ({"quality": "ultra"}, "quality='ultra' is not one of toy, very_light, light, default, best"),
    ({"n_minutes": "3"}, "unknown hyperparameter 'n_minutes'"),
    ({"nmins": "3"}, "did you mean n_mins?"),
    ({"n_hours": "0", "n_mins": "0", "n_secs": "0"}, "time budget"),
    ({"text_model": "bert"}, "text_model='bert' is not one of ngrams, minilm"),
    ({"joint_expert": "yes"}, "joint_expert='yes' must be true or false"),
    ({"joint_embedding_dims": "-1"}, "joint_embedding_dims='-1' is out of range: it must be between 0 and 2048"),
    ({"joint_embedding_dims": "8.5"}, "joint_embedding_dims='8.5' must be an integer"),
    ({"text_batch_size": "0"}, "text_batch_size='0' is out of range"),
    ({"parallel_folds": "always"}, "parallel_folds='always' is not one of auto, true, false"),
])
def test_bad_values_are_named(given, fragment):
    with pytest.raises(HyperparameterError) as info:
        resolve(given)
    assert fragment in str(info.value)


def test_the_issue_10_hyperparameters_parse_to_their_python_types():
    values = resolve({"text_model": "minilm", "joint_expert": "False", "joint_embedding_dims": "0",
                      "text_batch_size": "16", "parallel_folds": "true"})
    assert values["text_model"] == "minilm" and values["joint_expert"] is False
    assert values["joint_embedding_dims"] == 0 and values["text_batch_size"] == 16
    assert values["parallel_folds"] == "true"  # three values: not a boolean
    assert resolve({"joint_expert": "true"})["joint_expert"] is True
    assert MultimodalClassifier(joint_expert=False).get_params()["joint_expert"] is False
    assert specification()["joint_expert"].python_type is bool


def test_sagemaker_keys_are_ignored():
    values = resolve({"_tuning_objective_metric": "validation:accuracy", "sagemaker_program": "x", "n_secs": "30"})
    assert "_tuning_objective_metric" not in values and values["n_secs"] == 30


def test_estimator_validates_its_keywords():
    assert MultimodalClassifier().get_params() == defaults()
    with pytest.raises(HyperparameterError, match="quality"):
        MultimodalClassifier(quality="bogus")
