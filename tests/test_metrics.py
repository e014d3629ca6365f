"""Metric lines and the MetricDefinitions that SageMaker uses to parse them come from one definition."""
from __future__ import annotations

import io
import math
import re

import botocore.session
from botocore.validate import validate_parameters

from multimodal.core.hyperparameters import load_spec_document
from multimodal.sagemaker.training.metrics import (
    MAX_DEFINITIONS,
    format_lines,
    metric_definitions,
    print_metric_lines,
    tuning_objectives,
)


def scores(accuracy: float, balanced: float, loss: float, experts: dict | None = None) -> dict:
    block = {"accuracy": accuracy, "balanced_accuracy": balanced, "log_loss": loss, "rows": 10}
    if experts is not None:
        block["experts"] = experts
    return block


METRICS = {
    "train": scores(0.9123, 0.9, 0.25, {"text": scores(0.5, 0.45, 1.1), "num": scores(0.6, 0.55, 0.9),
                                        "cat": scores(0.7, 0.65, 0.8), "photo_image": scores(0.4, 0.35, 1.3),
                                        "joint": scores(0.8, 0.75, 0.5)}),
    "validation": scores(0.8871, 0.875, 0.3125, {"text": scores(0.51, 0.46, 1.2), "num": scores(0.61, 0.56, 1.0),
                                                 "cat": scores(0.71, 0.66, 0.85),
                                                 "photo_image": scores(0.41, 0.36, 1.35),
                                                 "joint": scores(0.81, 0.76, 0.55)}),
    "validation_source": "validation data",
}


def test_lines_have_the_documented_form():
    lines = format_lines(METRICS)
    assert lines[:3] == ["train:accuracy=0.912300;", "train:balanced_accuracy=0.900000;", "train:log_loss=0.250000;"]
    assert "validation:accuracy=0.887100;" in lines
    assert "validation:log_loss=0.312500;" in lines
    assert "validation:text_accuracy=0.510000;" in lines
    assert "validation:photo_image_balanced_accuracy=0.360000;" in lines
    assert len(lines) == 2 * 6 * 3  # 2 channels x (fused + 5 experts) x 3 metrics
    assert "validation:joint_accuracy=0.810000;" in lines


def test_values_never_use_exponent_notation_and_non_finite_ones_are_left_out():
    metrics = {"train": scores(1.0, 1.0, 1e-9), "validation": scores(math.nan, math.nan, math.inf)}
    assert format_lines(metrics) == ["train:accuracy=1.000000;", "train:balanced_accuracy=1.000000;",
                                     "train:log_loss=0.000000;"]


def test_expert_names_from_user_columns_are_made_safe():
    metrics = {"validation": scores(0.5, 0.5, 1.0, {"front view:x/y_image": scores(0.5, 0.5, 1.0)})}
    assert "validation:front_view_x_y_image_accuracy=0.500000;" in format_lines(metrics)


def test_print_writes_one_flushed_line_per_metric():
    stream = io.StringIO()
    printed = print_metric_lines(METRICS, stream)
    assert stream.getvalue() == "".join(line + "\n" for line in printed)


def test_each_definition_matches_exactly_its_own_line_and_value():
    lines = format_lines(METRICS)
    log = "\n".join(["INFO fusion epoch 3/50: loss=0.1 val_loss=0.2 val_accuracy=0.8", *lines,
                     "hyperparameters: _tuning_objective_metric=validation:accuracy"])
    definitions = metric_definitions(["photo_image"])
    expected = dict(line.rstrip(";").split("=") for line in lines)
    for definition in definitions:
        found = re.findall(definition["Regex"], log)
        assert found == [expected[definition["Name"]]], definition


def test_static_definitions_cover_the_fused_model_and_the_text_num_cat_joint_experts():
    names = [d["Name"] for d in metric_definitions()]
    assert names[:3] == ["validation:accuracy", "validation:balanced_accuracy", "validation:log_loss"]
    assert len(names) == len(set(names)) == 30
    for channel in ("train", "validation"):
        for expert in ("", "text_", "num_", "cat_", "joint_"):
            for metric in ("accuracy", "balanced_accuracy", "log_loss"):
                assert f"{channel}:{expert}{metric}" in names


def test_never_more_than_40_definitions_validation_first():
    definitions = metric_definitions([f"c{i}_image" for i in range(20)])
    assert len(definitions) == MAX_DEFINITIONS
    names = [d["Name"] for d in definitions]
    assert all(n in names for n in ("validation:accuracy", "train:accuracy", "validation:c0_image_accuracy"))
    assert not any(n.startswith("train:c") for n in names)  # train-side image experts are dropped first


def test_regexes_use_only_portable_syntax():
    for definition in metric_definitions(["photo_image"]):
        assert re.fullmatch(r"[A-Za-z0-9_:=;]+=\(-\?\[0-9\]\+\\\.\[0-9\]\+\);", definition["Regex"]), definition


def test_tuning_objectives_are_defined_metrics_with_the_right_direction():
    objectives = {o["MetricName"]: o["Type"] for o in tuning_objectives()}
    assert objectives == {"validation:accuracy": "Maximize", "validation:balanced_accuracy": "Maximize",
                          "validation:log_loss": "Minimize"}
    assert set(objectives) <= {d["Name"] for d in metric_definitions()}


def test_definitions_are_valid_in_a_create_algorithm_request():
    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(
        "CreateAlgorithm").input_shape
    validate_parameters({
        "AlgorithmName": "multimodal",
        "TrainingSpecification": {
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/multimodal-training:v1",
            "SupportedHyperParameters": load_spec_document(),
            "SupportedTrainingInstanceTypes": ["ml.m5.xlarge"],
            "MetricDefinitions": metric_definitions([f"c{i}_image" for i in range(20)]),
            "TrainingChannels": [{"Name": "train", "SupportedContentTypes": ["text/csv"],
                                  "SupportedInputModes": ["File", "Pipe"]}],
            "SupportedTuningJobObjectiveMetrics": tuning_objectives(),
        },
    }, shape)
