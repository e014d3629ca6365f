"""The inference server with a regression model (``problem_type_ == "regression"``), through Flask's test client.

A stand-in regressor answers a fixed number per record key (its ID, or its text without an ID column), so
that the exact response bytes can be asserted. Classification output is covered by tests/test_app.py.
"""
from __future__ import annotations

import json
import logging
import math

import pandas as pd
import pytest

from multimodal.core.errors import DataError
from multimodal.core.schema import Schema, prepare_features
from multimodal.sagemaker.serving.app import ServerSettings, create_app

HEADER = ["ID", "note_text", "x_num", "label"]
# 0.1 + 0.2 shows the full round-trip precision; 1e-05 the repr exponent form
ANSWERS = {"a": 0.1 + 0.2, "b": -1.5, "c": 1e-05, "d": 123456789.125, "nan": math.nan, "inf": math.inf}
BODY = b"a,hello,1\nb,,2\nc,x,\nd,y,4\n"


class StandInRegressor:
    """Behaves like a fitted regression MultimodalEstimator at the boundary the server uses."""

    problem_type_ = "regression"

    def __init__(self, header=HEADER, answers=ANSWERS, broken: set[str] = frozenset()) -> None:
        self.schema_ = Schema.from_header(header)
        self.answers = dict(answers)
        self.broken = set(broken)  # keys whose presence makes the whole call fail without naming the row
        self.calls: list[int] = []

    def predict(self, df: pd.DataFrame) -> pd.Series:
        prepare_features(df, self.schema_)  # the real schema checks
        keys = df[df.columns[0]].tolist()
        if self.broken & set(keys):
            raise DataError("cannot read one of these records")
        self.calls.append(len(df))
        return pd.Series([self.answers.get(k, 0.0) for k in keys], index=df.index, name="prediction",
                         dtype="float64")


def app_with(model, **settings):
    return create_app(model, settings=ServerSettings(**settings), background=False).test_client()


def post(client, body: bytes, content_type: str = "text/csv", accept: str = "text/csv"):
    return client.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": accept})


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON output"))


def test_csv_is_id_and_prediction_with_round_trip_precision():
    response = post(app_with(StandInRegressor()), BODY)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.get_data(as_text=True) == "a,0.30000000000000004\nb,-1.5\nc,1e-05\nd,123456789.125"
    assert response.headers["X-Output-Columns"] == "ID,prediction"


def test_json_and_json_lines_are_id_and_prediction():
    client = app_with(StandInRegressor())
    records = ['{"ID": "a", "prediction": 0.30000000000000004}', '{"ID": "b", "prediction": -1.5}',
               '{"ID": "c", "prediction": 1e-05}', '{"ID": "d", "prediction": 123456789.125}']
    response = post(client, BODY, accept="application/json")
    assert response.mimetype == "application/json" and response.get_data(as_text=True) == f"[{', '.join(records)}]"
    response = post(client, BODY, accept="application/jsonlines")
    assert response.get_data(as_text=True) == "\n".join(records)
    assert "X-Output-Columns" not in response.headers
    assert strict_json(records[0])["prediction"] == 0.1 + 0.2  # the number reads back exactly


def test_json_input_ids_are_echoed_as_sent():
    body = json.dumps([{"ID": 7, "x_num": 1.5}, {"ID": "b", "note_text": "hi", "label": 3.0}]).encode()
    out = post(app_with(StandInRegressor()), body, "application/json", "application/json").get_data(as_text=True)
    assert out == '[{"ID": 7, "prediction": 0.0}, {"ID": "b", "prediction": -1.5}]'


def test_a_model_without_an_id_column():
    client = app_with(StandInRegressor(header=["note_text", "x_num", "label"]))
    response = post(client, b"a,1\nzzz,2\n")
    assert response.get_data(as_text=True) == "0.30000000000000004\n0.0"
    assert response.headers["X-Output-Columns"] == "prediction"
    assert post(client, b"b,1\n", accept="application/json").get_data(as_text=True) == '[{"prediction": -1.5}]'


BAD_BODY = b"a,t,1\nb,t,abc\nc,t,2\n"
BAD_REASON = "line 2, column 'x_num': 'abc' is not a number; leave the field empty for a missing value"


def test_emit_mode_puts_an_error_record_in_place():
    client = app_with(StandInRegressor(), bad_records="emit")
    assert post(client, BAD_BODY).get_data(as_text=True) == f'a,0.30000000000000004\nb,"ERROR: {BAD_REASON}"\nc,1e-05'
    lines = post(client, BAD_BODY, accept="application/jsonlines").get_data(as_text=True).split("\n")
    assert [strict_json(line) for line in lines] == [
        {"ID": "a", "prediction": 0.1 + 0.2}, {"ID": "b", "prediction": None, "error": BAD_REASON},
        {"ID": "c", "prediction": 1e-05}]
    assert lines[1] == f'{{"ID": "b", "prediction": null, "error": {json.dumps(BAD_REASON)}}}'


def test_fail_mode_answers_400_naming_the_record():
    response = post(app_with(StandInRegressor()), BAD_BODY)
    assert response.status_code == 400 and BAD_REASON in response.get_data(as_text=True)


def test_a_record_the_model_rejects_unnamed_is_isolated():
    model = StandInRegressor(broken={"c"})
    out = post(app_with(model, bad_records="emit"), BODY).get_data(as_text=True).split("\n")
    assert out[:2] == ["a,0.30000000000000004", "b,-1.5"] and out[3] == "d,123456789.125"
    assert out[2] == "c,ERROR: line 3: cannot read one of these records"


@pytest.mark.parametrize("accept", ["application/json", "application/jsonlines", "text/csv"])
def test_non_finite_predictions_become_error_records_never_invalid_json(accept):
    client = app_with(StandInRegressor(), bad_records="emit")
    response = post(client, b"nan,t,1\na,t,1\ninf,t,1\n", accept=accept)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    if accept == "text/csv":
        lines = text.split("\n")
        assert lines[1] == "a,0.30000000000000004"
        assert lines[0] == ("nan,ERROR: line 1: the model's prediction for this record is not a finite number "
                            "(nan); check the record's values for extremes") and "(inf)" in lines[2]
        return
    out = strict_json(text) if accept == "application/json" else [strict_json(x) for x in text.split("\n")]
    assert [o["prediction"] for o in out] == [None, 0.1 + 0.2, None]
    assert "not a finite number (nan)" in out[0]["error"] and "not a finite number (inf)" in out[2]["error"]
    response = post(app_with(StandInRegressor()), b"a,t,1\ninf,t,1\n", accept=accept)
    assert response.status_code == 400 and "line 2: the model's prediction" in response.get_data(as_text=True)


def test_csv_probabilities_are_refused_for_a_regression_model_at_load():
    failures = []
    client = create_app(StandInRegressor(), settings=ServerSettings(csv_probabilities=True), background=False,
                        on_load_failure=failures.append).test_client()
    assert len(failures) == 1 and isinstance(failures[0], ValueError)
    assert "MULTIMODAL_CSV_PROBABILITIES" in str(failures[0]) and "regression" in str(failures[0])
    assert client.get("/ping").status_code == 503
    response = post(client, BODY)
    assert response.status_code == 503 and "MULTIMODAL_CSV_PROBABILITIES" in response.get_data(as_text=True)


def test_the_trial_prediction_and_the_load_log(caplog):
    model = StandInRegressor()
    with caplog.at_level(logging.INFO, logger="multimodal.sagemaker.serving.app"):
        client = create_app(lambda: model, background=False).test_client()  # a loader, as the server passes
    assert client.get("/ping").status_code == 200 and model.calls == [2, 1]
    assert any(r.getMessage().endswith("(regression)") for r in caplog.records), caplog.text


@pytest.mark.parametrize("answer, problem", [(math.nan, "finite: False"), (None, "shape (1,), expected (2,)")])
def test_a_trial_prediction_that_is_not_finite_or_the_wrong_length_fails_the_load(answer, problem):
    class Broken(StandInRegressor):
        def predict(self, df):
            if answer is None:
                return pd.Series([1.0], dtype="float64")
            return pd.Series(answer, index=df.index, dtype="float64")

    failures = []
    create_app(Broken(), background=False, on_load_failure=failures.append)
    assert len(failures) == 1 and "unusable predictions" in str(failures[0]) and problem in str(failures[0])
