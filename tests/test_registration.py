import json
import subprocess
import sys

import pytest
from botocore.exceptions import ParamValidationError

from multimodal.core.hyperparameters import load_spec_document
from multimodal.sagemaker.training.metrics import metric_definitions, tuning_objectives
from multimodal.tools.registration import build_request, validate_request

IMAGES = {"training_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/multimodal-training:v1",
          "inference_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/multimodal-inference:v1"}


def test_request_is_valid_for_the_sagemaker_api_model():
    request = build_request(name="multimodal", **IMAGES)
    validate_request(request)
    spec = request["TrainingSpecification"]
    assert spec["SupportedHyperParameters"] == load_spec_document()
    assert spec["SupportsDistributedTraining"] is True
    assert [c["Name"] for c in spec["TrainingChannels"]] == ["train", "validation", "images"]
    assert [c["IsRequired"] for c in spec["TrainingChannels"]] == [True, False, False]
    images = spec["TrainingChannels"][2]
    assert images["SupportedContentTypes"] == ["application/x-image"]
    assert "Pipe" not in images["SupportedInputModes"]  # files are read by name, which Pipe mode cannot do
    assert "Pipe" in spec["TrainingChannels"][0]["SupportedInputModes"]
    assert {m["MetricName"] for m in spec["SupportedTuningJobObjectiveMetrics"]} <= {
        d["Name"] for d in spec["MetricDefinitions"]}
    inference = request["InferenceSpecification"]
    assert inference["SupportedContentTypes"] == ["text/csv", "application/jsonlines", "application/json"]
    assert "ValidationSpecification" not in request


def test_validation_profile_is_valid_when_given():
    request = build_request(name="multimodal", **IMAGES, validation_role="arn:aws:iam::123456789012:role/sm",
                            validation_train_s3="s3://bucket/train/", validation_transform_s3="s3://bucket/test/",
                            validation_output_s3="s3://bucket/out/")
    validate_request(request)
    profile = request["ValidationSpecification"]["ValidationProfiles"][0]
    assert profile["TransformJobDefinition"]["TransformInput"]["SplitType"] == "Line"


def test_a_partial_validation_profile_is_refused():
    with pytest.raises(ValueError, match="validation profile needs all of"):
        build_request(name="multimodal", **IMAGES, validation_role="arn:aws:iam::123456789012:role/sm")


def test_the_validator_catches_a_broken_request():
    request = build_request(name="multimodal", **IMAGES)
    del request["TrainingSpecification"]["TrainingImage"]
    request["TrainingSpecification"]["SupportsDistributedTraining"] = "no"
    with pytest.raises(ParamValidationError, match="TrainingImage"):
        validate_request(request)


def test_image_column_metrics_fit_the_limit_of_40():
    definitions = metric_definitions([f"c{i}_image" for i in range(30)])
    assert len(definitions) == 40
    assert definitions[0]["Name"] == "validation:accuracy"
    assert [d["Name"] for d in definitions[3:6]] == ["validation:rmse", "validation:mae", "validation:r2"]


def test_the_algorithm_is_registered_for_classification_and_regression():
    request = build_request(name="multimodal", **IMAGES)
    assert "regression" in request["AlgorithmDescription"] and "lassification" in request["AlgorithmDescription"]
    spec = request["TrainingSpecification"]
    assert spec["MetricDefinitions"] == metric_definitions()  # one definition: metrics.py
    assert spec["SupportedTuningJobObjectiveMetrics"] == tuning_objectives()
    objectives = {m["MetricName"]: m["Type"] for m in spec["SupportedTuningJobObjectiveMetrics"]}
    assert objectives["validation:rmse"] == objectives["validation:mae"] == "Minimize"
    assert objectives["validation:r2"] == objectives["validation:accuracy"] == "Maximize"
    assert "regression" in spec["TrainingChannels"][0]["Description"]
    names = {d["Name"] for d in spec["MetricDefinitions"]}
    assert {"validation:rmse", "train:r2", "validation:text_rmse", "validation:joint_r2"} <= names
    choice = next(h for h in spec["SupportedHyperParameters"] if h["Name"] == "problem_type")
    assert choice["Range"]["CategoricalParameterRangeSpecification"]["Values"] == ["auto", "binary", "multiclass",
                                                                                 "regression"]


def test_dry_run_prints_the_request():
    result = subprocess.run([sys.executable, "-m", "multimodal.tools.cli", "register-algorithm", "--dry-run",
                             "--training-image", IMAGES["training_image"], "--inference-image",
                             IMAGES["inference_image"], "--image-column", "photo_image"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    names = {d["Name"] for d in request["TrainingSpecification"]["MetricDefinitions"]}
    assert {"validation:photo_image_accuracy", "validation:photo_image_rmse", "validation:rmse"} <= names
