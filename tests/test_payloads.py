"""Request bodies → records, and predictions → response bodies (the server's decode, records and encode modules)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support import HEADER

from multimodal.core.errors import DataError
from multimodal.core.schema import Schema, prepare_features
from multimodal.sagemaker.serving.decode import parse_csv, parse_json
from multimodal.sagemaker.serving.records import Batch, validate_numbers

COLUMNS = [c for c in HEADER if c != "label"]


def test_parse_csv_splits_on_newline_only():
    batch = parse_csv(b'a,"x\xe2\x80\xa8y",1\r\nb,,2\n', ["ID", "t_text", "n_num"], id_column="ID")
    assert batch.rows == [["a", "x\u2028y", "1"], ["b", "", "2"]] and batch.ids == ["a", "b"] and not batch.errors


def test_a_json_list_too_deep_to_parse_whole_is_parsed_element_by_element():
    deep = "[" * 5000 + "]" * 5000
    body = ('[{"ID": "a", "review_text": "x, \\"quoted\\" ]"}, ' + deep + ', {"ID": "c"}]').encode()
    batch = parse_json(body, COLUMNS, id_column="ID")
    assert batch.ids == ["a", "", "c"] and list(batch.errors) == [1]
    assert batch.rows[0][1] == 'x, "quoted" ]' and "nested too deeply" in batch.errors[1].problem


NUMBERS = ["1", " 2.5 ", "-3e2", "", "NA", "n/a", "null", "-", "nan", "abc", "1,5", "inf", "-Infinity", "0x10", "9" * 400]


@pytest.mark.parametrize("value", NUMBERS)
def test_the_server_and_the_estimator_apply_the_same_number_rules(value):
    """A record the server accepts is one the estimator accepts, and the other way round."""
    batch = Batch(columns=["x_num"], kind="line", rows=[[value]], ids=[""])
    validate_numbers(batch, "x_num")
    schema = Schema.from_header(["x_num", "label"])
    try:
        features = prepare_features(pd.DataFrame({"x_num": [value]}, dtype=object), schema)
    except DataError as exc:
        assert batch.errors, f"the estimator refuses {value!r} ({exc}) but the server accepts it"
        return
    assert not batch.errors, f"the server refuses {value!r} but the estimator accepts it"
    assert np.isfinite(features.values["x_num"]).all()


def test_regression_output_formats():
    from multimodal.sagemaker.serving.encode import (
        format_regression_csv,
        format_regression_json,
        format_regression_jsonlines,
    )
    from multimodal.sagemaker.serving.records import Predictions, RecordError
    outcome = Predictions(ids=["a", "b, c", 3], values=[np.float64(0.1) * 3, None, -2.0],
                          errors={1: RecordError("line 2", "bad")})
    assert format_regression_csv(outcome, with_id=True) == 'a,0.30000000000000004\n"b, c",ERROR: line 2: bad\n3,-2.0'
    assert format_regression_csv(outcome, with_id=False) == "0.30000000000000004\nERROR: line 2: bad\n-2.0"
    assert format_regression_jsonlines(outcome, with_id=True, id_column="ID") == (
        '{"ID": "a", "prediction": 0.30000000000000004}\n{"ID": "b, c", "prediction": null, "error": "line 2: bad"}\n'
        '{"ID": 3, "prediction": -2.0}')
    assert format_regression_json(outcome, with_id=False, id_column="ID") == (
        '[{"prediction": 0.30000000000000004}, {"prediction": null, "error": "line 2: bad"}, {"prediction": -2.0}]')
    with pytest.raises(ValueError):  # a non-finite value is never written as JSON's non-standard NaN
        format_regression_json(Predictions(ids=["a"], values=[float("nan")], errors={}), with_id=True, id_column="ID")


@pytest.mark.parametrize("body", [b"a\nbb\n\nccc\nd", b"a\nbb\n\nccc\nd\n", b"\n\n\n", b"x" * 50 + b"\ny\n"])
def test_a_large_body_is_sliced_at_record_boundaries_into_the_records_it_holds(body):
    from multimodal.sagemaker.contract import split_records
    from multimodal.sagemaker.serving.decode import slices
    pieces = slices(body, "text/csv", 4)
    assert b"".join(p for p, _ in pieces) == body
    records = [r for p, _ in pieces for r in split_records(p)]
    assert records == split_records(body)
    firsts = [first for _, first in pieces]
    assert firsts == [sum(len(split_records(p)) for p, _ in pieces[:i]) for i in range(len(pieces))]
    assert slices(body, "application/json", 4) == [(body, 0)] and slices(body, "text/csv", 1000) == [(body, 0)]


@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonlines"])
@pytest.mark.parametrize("accept", ["text/csv", "application/jsonlines", "application/json"])
def test_a_body_answered_slice_by_slice_is_answered_as_if_whole(monkeypatch, content_type, accept):
    """An async endpoint's large body is predicted in slices; the response and the line numbers of bad records
    are those of the whole body (bad-record mode emit, so that every record has its line)."""
    import json

    from support import StandInModel, csv_body, jsonl_body

    from multimodal.sagemaker.serving import app as app_module
    from multimodal.sagemaker.serving.app import ServerSettings, create_app
    from multimodal.tools.synthetic import make_dataset
    rows = make_dataset(40, seed=8, with_images=False).assign(photo_image="")[COLUMNS]  # no image: short records
    rows["size_num"] = rows["size_num"].astype(object)
    rows.iloc[[29, 33], rows.columns.get_loc("size_num")] = "twelve"
    body = csv_body(rows) if content_type == "text/csv" else jsonl_body(rows)
    headers = {"Content-Type": content_type, "Accept": accept}
    client = create_app(StandInModel(), settings=ServerSettings(bad_records="emit"), background=False).test_client()
    whole = client.post("/invocations", data=body, headers=headers)
    monkeypatch.setattr(app_module, "SLICE_BYTES", 700)  # a few records a slice
    sliced = client.post("/invocations", data=body, headers=headers)
    assert sliced.status_code == whole.status_code == 200
    assert sliced.get_data() == whole.get_data()
    text = sliced.get_data(as_text=True)
    assert "line 30" in text and "line 34" in text
    if accept == "application/json":
        assert len(json.loads(text)) == 40
    strict = create_app(StandInModel(), background=False).test_client()
    monkeypatch.setattr(app_module, "SLICE_BYTES", 1000)  # line 30 lies in a later slice
    refused = strict.post("/invocations", data=body, headers=headers)
    assert refused.status_code == 400 and "line 30," in refused.get_data(as_text=True)
