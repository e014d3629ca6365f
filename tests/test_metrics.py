"""Metric lines and the MetricDefinitions that SageMaker uses to parse them come from one definition."""
from __future__ import annotations

import io
import math
import re

import botocore.session
import pytest
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
        # the registered definitions cover both problem types: a classification job prints no regression line
        assert found == ([expected[definition["Name"]]] if definition["Name"] in expected else []), definition
    assert {d["Name"] for d in metric_definitions(["photo_image"], problem_type="multiclass")} <= set(expected)


def test_static_definitions_cover_both_problem_types_in_priority_order():
    names = [d["Name"] for d in metric_definitions()]
    assert len(names) == len(set(names)) == MAX_DEFINITIONS
    both = ["accuracy", "balanced_accuracy", "log_loss", "rmse", "mae", "r2"]
    # 1. fused validation, 2. fused train: every metric of both kinds
    assert names[:12] == [f"validation:{m}" for m in both] + [f"train:{m}" for m in both]
    # 3. every metric of every static expert on the validation side
    for expert in ("text", "num", "cat", "joint"):
        for metric in both:
            assert f"validation:{expert}_{metric}" in names[12:36]
    # rank by rank (the i-th classification metric with the i-th regression one), both kinds alike
    assert names[12:20] == ["validation:text_accuracy", "validation:text_rmse", "validation:num_accuracy",
                            "validation:num_rmse", "validation:cat_accuracy", "validation:cat_rmse",
                            "validation:joint_accuracy", "validation:joint_rmse"]
    # 4. what is left for the train side of the experts
    assert names[36:] == ["train:text_accuracy", "train:text_rmse", "train:num_accuracy", "train:num_rmse"]


def test_definitions_of_one_problem_type_cover_the_fused_model_and_the_text_num_cat_joint_experts():
    for problem_type, metrics in (("binary", ("accuracy", "balanced_accuracy", "log_loss")),
                                  ("multiclass", ("accuracy", "balanced_accuracy", "log_loss")),
                                  ("regression", ("rmse", "mae", "r2"))):
        names = [d["Name"] for d in metric_definitions(problem_type=problem_type)]
        assert names[:3] == [f"validation:{m}" for m in metrics]
        assert len(names) == len(set(names)) == 30
        assert names == [n for n in names if n.split(":")[1].endswith(metrics)]
        for channel in ("train", "validation"):
            for expert in ("", "text_", "num_", "cat_", "joint_"):
                for metric in metrics:
                    assert f"{channel}:{expert}{metric}" in names
    with pytest.raises(ValueError, match="problem_type"):
        metric_definitions(problem_type="ranking")


def test_never_more_than_40_definitions_validation_first():
    for problem_type in (None, "binary", "regression"):
        definitions = metric_definitions([f"c{i}_image" for i in range(20)], problem_type=problem_type)
        assert len(definitions) == MAX_DEFINITIONS
        names = [d["Name"] for d in definitions]
        primary = ("rmse",) if problem_type == "regression" else ("accuracy",) if problem_type else ("accuracy", "rmse")
        for metric in primary:
            assert all(n in names for n in (f"validation:{metric}", f"train:{metric}", f"validation:c0_image_{metric}"))
        assert not any(n.startswith("train:c") for n in names)  # train-side image experts are dropped first
    both = [d["Name"] for d in metric_definitions(["photo_image"])]
    assert {"validation:photo_image_accuracy", "validation:photo_image_rmse", "validation:joint_r2"} <= set(both)


def test_regexes_use_only_portable_syntax():
    for definition in metric_definitions(["photo_image"]):
        assert re.fullmatch(r"[A-Za-z0-9_:=;]+=\(-\?\[0-9\]\+\\\.\[0-9\]\+\);", definition["Regex"]), definition


def test_tuning_objectives_are_defined_metrics_with_the_right_direction():
    objectives = {o["MetricName"]: o["Type"] for o in tuning_objectives()}
    assert objectives == {"validation:accuracy": "Maximize", "validation:balanced_accuracy": "Maximize",
                          "validation:log_loss": "Minimize", "validation:rmse": "Minimize",
                          "validation:mae": "Minimize", "validation:r2": "Maximize"}
    assert set(objectives) <= {d["Name"] for d in metric_definitions()}
    assert {o["MetricName"] for o in tuning_objectives("regression")} == {
        "validation:rmse", "validation:mae", "validation:r2"}
    assert {o["MetricName"] for o in tuning_objectives("binary")} <= {
        d["Name"] for d in metric_definitions(problem_type="binary")}


# ---------------------------------------------------------------------------------------------- regression

def regression(rmse: float, mae: float, r2: float, experts: dict | None = None) -> dict:
    block = {"rmse": rmse, "mae": mae, "r2": r2, "rows": 10}
    if experts is not None:
        block["experts"] = experts
    return block


REGRESSION = {
    "train": regression(2.5, 1.75, 0.875, {"text": regression(4.0, 3.0, 0.5), "num": regression(3.5, 2.5, 0.6),
                                          "cat": regression(5.0, 4.0, 0.2), "photo_image": regression(7.0, 6.0, -0.25),
                                          "joint": regression(3.0, 2.0, 0.7)}),
    "validation": regression(12345.678901, 0.5, -1.5, {"text": regression(4.25, 3.125, 0.4),
                                                       "num": regression(3.75, 2.625, 0.55),
                                                       "cat": regression(5.5, 4.5, 0.1),
                                                       "photo_image": regression(7.5, 6.5, -0.3),
                                                       "joint": regression(3.25, 2.25, 0.65)}),
    "validation_source": "validation data",
    "target": {"mean": 10.0, "std": 3.0, "min": 0.0, "max": 20.0},
    "fusion_curve": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "best_epoch": 2},
}


def test_regression_lines_have_the_documented_form():
    lines = format_lines(REGRESSION)
    assert lines[:3] == ["train:rmse=2.500000;", "train:mae=1.750000;", "train:r2=0.875000;"]
    assert "validation:rmse=12345.678901;" in lines
    assert "validation:r2=-1.500000;" in lines  # r2 may be negative
    assert "validation:text_rmse=4.250000;" in lines
    assert "train:photo_image_r2=-0.250000;" in lines
    assert "validation:joint_mae=2.250000;" in lines
    assert len(lines) == 2 * 6 * 3  # 2 channels x (fused + 5 experts) x 3 metrics
    assert not any(m in line for line in lines for m in ("accuracy", "log_loss"))


def test_regression_values_never_use_exponent_notation_and_non_finite_ones_are_left_out():
    metrics = {"train": regression(1e-9, 1e12, 1.0), "validation": regression(math.nan, math.inf, -math.inf)}
    assert format_lines(metrics) == ["train:rmse=0.000000;", "train:mae=1000000000000.000000;", "train:r2=1.000000;"]


def test_every_printed_regression_line_parses_with_its_definition():
    lines = format_lines(REGRESSION)
    log = "\n".join(["INFO fusion epoch 3/50: loss=0.1 val_loss=0.2", *lines,
                     "hyperparameters: _tuning_objective_metric=validation:rmse"])
    printed = {name: float(value) for name, value in (line.rstrip(";").split("=") for line in lines)}
    definitions = {d["Name"]: d["Regex"] for d in metric_definitions(["photo_image"])}
    regression_definitions = {d["Name"]: d["Regex"] for d in metric_definitions(["photo_image"], "regression")}
    assert set(regression_definitions) == set(printed)  # one problem type: a definition for every line
    fused = [f"{c}:{m}" for c in ("validation", "train") for m in ("rmse", "mae", "r2")]
    static_validation = [f"validation:{e}_{m}" for e in ("text", "num", "cat", "joint") for m in ("rmse", "mae", "r2")]
    assert set(fused + static_validation) <= set(definitions)  # both types: every fused and validation-expert line
    for table in (definitions, regression_definitions):
        for name, regex in table.items():
            found = re.findall(regex, log)
            if name in printed:
                assert len(found) == 1 and float(found[0]) == pytest.approx(printed[name], abs=1e-6), name
            else:
                assert found == [], name  # a classification definition never matches a regression line


def test_a_block_prints_whichever_metrics_it_has():
    metrics = {"validation": {"accuracy": 0.5, "rmse": 2.0, "rows": 3, "confusion_matrix": [[1]],
                              "experts": {"text": {"r2": 0.25, "log_loss": 0.75}}}}
    assert format_lines(metrics) == ["validation:accuracy=0.500000;", "validation:rmse=2.000000;",
                                     "validation:text_log_loss=0.750000;", "validation:text_r2=0.250000;"]


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
