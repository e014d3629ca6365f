"""The inference server's HTTP contract, in-process through Flask's test client.

Fast tests use a stand-in model (the real schema checks, deterministic probabilities); the tests marked slow
use the small real model of conftest's ``serving_model_dir`` (tests/test_launcher.py serves the same one).
"""
from __future__ import annotations

import base64
import csv
import io
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import CLASSES, HEADER, StandInModel, csv_body, jsonl_body

from multimodal.sagemaker.serving.app import ServerSettings, create_app
from multimodal.sagemaker.contract import split_records
from multimodal.tools.synthetic import encode_image, make_dataset, photo_jpeg

COLUMNS = [c for c in HEADER if c != "label"]


def records(n: int, seed: int = 5, with_images: bool = True, missing_rate: float = 0.08) -> pd.DataFrame:
    return make_dataset(n, seed=seed, with_images=with_images, missing_rate=missing_rate).drop(columns="label")


def csv_lines(response) -> list[list[str]]:
    """The records of a CSV response: one line each, separated by \n with none after the last (batch
    transform's AssembleWith=Line adds that newline; one here would leave a blank line per request)."""
    text = response.get_data(as_text=True)
    assert not text.endswith("\n")
    return [next(csv.reader([line])) for line in text.split("\n")]


def post(client, body: bytes, content_type: str = "text/csv", accept: str | None = None, **headers):
    if accept is not None:
        headers["Accept"] = accept
    return client.post("/invocations", data=body, headers={"Content-Type": content_type, **headers})


def png(width: int = 64, height: int = 64) -> str:
    return encode_image(Image.new("RGB", (width, height), (10, 200, 30)), "PNG")


@pytest.fixture()
def model():
    return StandInModel()


@pytest.fixture()
def client(model):
    return create_app(model, background=False).test_client()


def app_with(model, **settings):
    return create_app(model, settings=ServerSettings(**settings), background=False).test_client()


# ---------------------------------------------------------------------------------------------- ping / start-up

def test_ping_is_503_while_loading_then_200(model):
    release = threading.Event()

    def slow_loader():
        assert release.wait(30)
        return model

    client = create_app(slow_loader, settings=ServerSettings(load_timeout=30)).test_client()
    started = time.monotonic()
    response = client.get("/ping")
    assert response.status_code == 503 and time.monotonic() - started < 2
    release.set()
    deadline = time.monotonic() + 30
    while client.get("/ping").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/ping").status_code == 200
    assert model.calls[:2] == [2, 1]  # the trial prediction ran before 200: all-missing + filled row, then one row


def test_invocation_during_loading_waits_for_the_model(model):
    release = threading.Event()
    client = create_app(lambda: release.wait(30) and model, settings=ServerSettings(load_timeout=30)).test_client()
    threading.Timer(0.3, release.set).start()
    response = post(client, csv_body(records(2)))
    assert response.status_code == 200 and len(csv_lines(response)) == 2


def test_load_failure_is_reported_to_the_server_and_ping_stays_503():
    failures = []

    def broken():
        raise FileNotFoundError("no model_config.json")

    client = create_app(broken, on_load_failure=failures.append).test_client()
    deadline = time.monotonic() + 10
    while not failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(failures[0], FileNotFoundError)
    assert client.get("/ping").status_code == 503
    response = post(client, csv_body(records(1)))
    assert response.status_code == 503 and b"failed to load" in response.data


def test_a_model_that_cannot_predict_fails_the_trial_prediction():
    class Broken(StandInModel):
        def predict_proba(self, df):
            raise RuntimeError("corrupt weights")

    failures = []
    client = create_app(Broken(), background=False, on_load_failure=failures.append).test_client()
    assert len(failures) == 1 and "corrupt weights" in str(failures[0])
    assert client.get("/ping").status_code == 503


def test_a_load_that_never_ends_times_out():
    failures = []
    never = threading.Event()
    create_app(lambda: never.wait(30), settings=ServerSettings(load_timeout=0.3), on_load_failure=failures.append)
    deadline = time.monotonic() + 10
    while not failures and time.monotonic() < deadline:
        time.sleep(0.01)
    never.set()
    assert isinstance(failures[0], TimeoutError)


# ---------------------------------------------------------------------------------------------- parameters

def test_execution_parameters(client):
    assert client.get("/execution-parameters").get_json() == {
        "MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
    params = app_with(StandInModel(), workers=4, max_payload_mb=20).get("/execution-parameters").get_json()
    assert params == {"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 20}
    # SageMaker requires MaxConcurrentTransforms × MaxPayloadInMB ≤ 100
    assert app_with(StandInModel(), workers=32).get("/execution-parameters").get_json()[
        "MaxConcurrentTransforms"] == 16


# ---------------------------------------------------------------------------------------------- predictions

def expected(model, frame: pd.DataFrame) -> pd.DataFrame:
    return model.predict_proba(frame.astype(str).reset_index(drop=True))


def test_csv_in_csv_out_one_line_per_record_in_order(client, model):
    frame = records(30)
    frame.loc[3, "review_text"] = 'says "hello", then, a comma'  # RFC 4180 quoting
    response = post(client, csv_body(frame))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    lines = csv_lines(response)
    proba = expected(model, frame)
    assert [line[0] for line in lines] == frame["ID"].tolist()
    assert [line[1] for line in lines] == proba.idxmax(axis=1).tolist()
    assert response.headers["X-Output-Columns"] == "ID,label"


def test_a_single_record_with_or_without_final_newline_and_crlf(client):
    body = csv_body(records(1))
    for variant in (body, body.rstrip(b"\n"), body.rstrip(b"\n") + b"\r\n"):
        lines = csv_lines(post(client, variant))
        assert len(lines) == 1 and lines[0][0] == records(1)["ID"][0]
    assert len(csv_lines(post(client, csv_body(records(3)).replace(b"\n", b"\r\n")))) == 3


def test_empty_fields_are_missing_values(client):
    lines = csv_lines(post(client, b"only-id,,,,,\n,,,,,\n"))
    assert [line[0] for line in lines] == ["only-id", ""] and all(line[1] in CLASSES for line in lines)


def test_records_are_split_on_newline_only(client):
    frame = records(2, with_images=False)
    frame["photo_image"] = ""
    frame.loc[0, "review_text"] = "line\u2028separator\u0085next\x0bvertical\x0cform feed"
    lines = csv_lines(post(client, csv_body(frame)))
    assert [line[0] for line in lines] == frame["ID"].tolist()


def test_probability_columns_in_csv_when_enabled(model):
    client = app_with(model, csv_probabilities=True)
    frame = records(5)
    response = post(client, csv_body(frame))
    lines = csv_lines(response)
    proba = expected(model, frame)
    assert response.headers["X-Output-Columns"] == "ID,label," + ",".join(f"probability_{c}" for c in CLASSES)
    for line, (_, row) in zip(lines, proba.iterrows()):
        assert len(line) == 2 + len(CLASSES)
        np.testing.assert_allclose([float(v) for v in line[2:]], row.to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("accept", ["application/jsonlines", "application/json", "text/csv"])
@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonlines", "application/json"])
def test_every_content_type_and_accept(client, model, content_type, accept):
    frame = records(4)
    body = {"text/csv": csv_body, "application/jsonlines": jsonl_body,
            "application/json": lambda f: json.dumps(f.to_dict("records")).encode()}[content_type](frame)
    response = post(client, body, content_type, accept)
    assert response.status_code == 200, response.data
    assert response.mimetype == accept
    proba = expected(model, frame)
    if accept == "text/csv":
        assert [line[:2] for line in csv_lines(response)] == [
            [i, label] for i, label in zip(frame["ID"], proba.idxmax(axis=1))]
        return
    text = response.get_data(as_text=True)
    out = json.loads(text) if accept == "application/json" else [json.loads(x) for x in text.splitlines()]
    assert [o["ID"] for o in out] == frame["ID"].tolist()
    for o, (_, row) in zip(out, proba.iterrows()):
        assert list(o) == ["ID", "label", "probabilities"] and o["label"] == row.idxmax()
        assert list(o["probabilities"]) == CLASSES
        np.testing.assert_allclose(list(o["probabilities"].values()), row.to_numpy(), rtol=1e-6)


def test_content_type_parameters_and_default_accept(client):
    body = csv_body(records(2))
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "text/*"}, {"Accept": "text/csv;q=0.5, application/xml"}):
        response = client.post("/invocations", data=body, headers={"Content-Type": "text/csv; charset=utf-8",
                                                                     **headers})
        assert response.status_code == 200 and response.mimetype == "text/csv", headers
    response = post(client, body, accept="application/xml, application/json;q=0.9")
    assert response.mimetype == "application/json"
    assert client.post("/invocations", data=body).status_code == 200  # no Content-Type: CSV


def test_text_with_newlines_goes_through_jsonlines(client, model):
    frame = records(3)
    frame.loc[1, "review_text"] = "first line\nsecond line\r\nthird"
    response = post(client, jsonl_body(frame), "application/jsonlines", "application/jsonlines")
    out = [json.loads(x) for x in response.get_data(as_text=True).splitlines()]
    assert [o["ID"] for o in out] == frame["ID"].tolist()


def test_json_values_null_numbers_and_absent_keys(client):
    body = json.dumps([{"ID": 7, "size_num": 1.5, "weight_num": None, "colour_cat": 3},
                       {"ID": "x", "review_text": "hi", "label": "alpha"}]).encode()  # label is ignored
    out = json.loads(post(client, body, "application/json", "application/json").data)
    assert [o["ID"] for o in out] == [7, "x"] and all(o["label"] in CLASSES for o in out)


def test_integer_labels_and_a_model_without_id():
    model = StandInModel(header=["note_text", "x_num", "label"], classes=[0, 1, 2])
    client = app_with(model)
    response = post(client, b"a,1\nb,2\n")
    assert response.get_data(as_text=True).count("\n") == 1  # two records, a newline between them
    assert len(csv_lines(response)) == 2
    assert all(len(line) == 1 and line[0] in {"0", "1", "2"} for line in csv_lines(response))
    assert response.headers["X-Output-Columns"] == "label"
    out = json.loads(post(client, b"a,1\n", accept="application/json").data)
    assert list(out[0]) == ["label", "probabilities"] and out[0]["label"] in (0, 1, 2)
    assert list(out[0]["probabilities"]) == ["0", "1", "2"]


# ---------------------------------------------------------------------------------------------- errors

def good_line(i: int = 0) -> str:
    return csv_body(records(3).iloc[[i]]).decode().rstrip("\n")


def padded_image(fmt: str, width: int, height: int, padding: int = 100_000, trailer: bool = False) -> str:
    """Base64 of a small image with ``padding`` bytes beside the pixels: metadata before them (a JPEG's ICC
    profile, as cameras and editors write it; a PNG's text chunk), or with ``trailer`` after the image's end (as
    phones append a motion clip to a photo)."""
    buffer = io.BytesIO()
    image = Image.new("RGB", (width, height), (120, 60, 30))
    blob = bytes(range(256)) * (padding // 256)
    if trailer:
        image.save(buffer, fmt)
        buffer.write(blob)
    elif fmt == "JPEG":
        image.save(buffer, "JPEG", icc_profile=blob)
    else:
        from PIL.PngImagePlugin import PngInfo
        info = PngInfo()
        info.add_text("comment", "x" * padding)
        image.save(buffer, "PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def bad_inputs(limit_pixels: int) -> dict[str, tuple[bytes, str, str]]:
    """name → (body, text the 400 message must contain, column named or '')."""
    good = good_line()
    jpeg = records(1, missing_rate=0)["photo_image"][0]
    truncated = base64.b64encode(base64.b64decode(jpeg)[: len(base64.b64decode(jpeg)) // 2]).decode()
    big = png(int(limit_pixels ** 0.5) + 10, int(limit_pixels ** 0.5) + 10)
    side = int(limit_pixels ** 0.5)
    # the server's quick check reads only an image's header; a fault further on is the model's to find
    late_fault = padded_image("JPEG", side // 2, side // 2, trailer=True)
    late_fault = late_fault[:-200] + "*" + late_fault[-199:]
    big_behind_profile = padded_image("JPEG", side + 10, side + 10)
    return {
        "field count": (f"{good}\nr1,too,few\n".encode(), "expected 6 fields", ""),
        "bad number": (f"{good}\nr1,text,red,abc,1.0,\n".encode(), "'abc' is not a number", "size_num"),
        "infinite": (f"{good}\nr1,text,red,inf,1.0,\n".encode(), "infinite", "size_num"),
        "bad base64": (f"{good}\nr1,text,red,1,1,not*base64!\n".encode(), "not valid base64", "photo_image"),
        "not an image": (f"{good}\nr1,text,red,1,1,{base64.b64encode(b'plain text').decode()}\n".encode(),
                         "not an image", "photo_image"),
        "truncated image": (f"{good}\nr1,text,red,1,1,{truncated}\n".encode(), "not an image", "photo_image"),
        "oversized image": (f"{good}\nr1,text,red,1,1,{big}\n".encode(), "pixels", "photo_image"),
        "bad base64 past the header": (f"{good}\nr1,text,red,1,1,{late_fault}\n".encode(), "not valid base64",
                                       "photo_image"),
        "oversized image behind a 100 KB profile": (f"{good}\nr1,text,red,1,1,{big_behind_profile}\n".encode(),
                                                    "pixels", "photo_image"),
        "quoted newline": (f'{good}\nr1,"two\nlines",red,1,1,\n'.encode(), "quoted field cannot span lines", ""),
        "header line": (",".join(COLUMNS).encode() + b"\n" + good.encode(), "header", ""),
        "invalid utf-8": (good.encode() + b"\nr1,caf\xe9,red,1,1,\n", "not valid utf-8", ""),
    }


@pytest.mark.parametrize("name", list(bad_inputs(4096)))
def test_bad_records_get_400_naming_line_column_and_problem(name, monkeypatch, model):
    monkeypatch.setenv("MULTIMODAL_MAX_IMAGE_PIXELS", "4096")
    client = app_with(model)
    body, text, column = bad_inputs(4096)[name]
    response = post(client, body)
    message = response.get_data(as_text=True)
    assert response.status_code == 400, message
    assert text in message and (column == "" or f"'{column}'" in message), message
    assert ("line 1" if name == "header line" else "line 2") in message
    assert post(client, csv_body(records(2))).status_code == 200  # still serving


@pytest.mark.parametrize("name", list(bad_inputs(4096)))
def test_bad_record_mode_emits_an_error_record_in_place(name, monkeypatch):
    monkeypatch.setenv("MULTIMODAL_MAX_IMAGE_PIXELS", "4096")
    model = StandInModel()
    strict, lenient = app_with(model), app_with(model, bad_records="emit")
    body, text, column = bad_inputs(4096)[name]
    good = csv_body(records(3).iloc[[1, 2]])
    lines = body.split(b"\n")
    body = b"\n".join([lines[0], good.split(b"\n")[0], *lines[1:-1], good.split(b"\n")[1]]) + b"\n"
    response = post(lenient, body)
    assert response.status_code == 200, response.data
    out = csv_lines(response)
    n_records = len(split_records(body))
    assert len(out) == n_records
    errors = [i for i, line in enumerate(out) if line[1].startswith("ERROR: ")]
    assert errors and text in out[errors[0]][1] and f"line {errors[0] + 1}" in out[errors[0]][1]
    assert len(errors) == (2 if name == "quoted newline" else 1)  # the newline broke that record in two
    good_positions = [i for i in range(n_records) if i not in errors]
    good_body = b"".join(split_records(body)[i] + b"\n" for i in good_positions)
    assert [out[i] for i in good_positions] == csv_lines(post(strict, good_body))
    jsonl = post(lenient, body, accept="application/jsonlines").get_data(as_text=True).splitlines()
    bad = json.loads(jsonl[errors[0]])
    assert bad["label"] is None and bad["probabilities"] is None and text in bad["error"]


def test_an_image_whose_header_follows_a_large_profile_is_served(monkeypatch, model):
    monkeypatch.setenv("MULTIMODAL_MAX_IMAGE_PIXELS", "4096")
    client = app_with(model)
    for fmt in ("JPEG", "PNG"):
        body = f"{good_line()}\nr1,text,red,1,1,{padded_image(fmt, 60, 60)}\n".encode()
        response = post(client, body)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert len(csv_lines(response)) == 2


def test_bad_record_output_keeps_the_id_and_quotes_the_reason():
    client = app_with(StandInModel(), bad_records="emit", csv_probabilities=True)
    out = csv_lines(post(client, b'r9,"a, b",red,"1,5",2,\n'))
    assert out[0][0] == "r9" and out[0][1].startswith("ERROR: line 1, column 'size_num': '1,5' is not a number")
    assert out[0][2:] == [""] * len(CLASSES)


def test_jsonlines_errors_name_the_line(client):
    body = b'{"ID": "a"}\n{not json}\n[1, 2]\n{"ID": "b", "sise_num": 3}\n{"ID": "c", "review_text": ["x"]}\n\n'
    response = post(client, body, "application/jsonlines")
    message = response.get_data(as_text=True)
    assert response.status_code == 400 and "5 of 6 record(s)" in message
    for fragment in ("line 2: not valid JSON", "line 3: expected a JSON object", "line 4: unknown column(s) "
                     "'sise_num'", "line 5, column 'review_text': expected a string", "line 6: empty line"):
        assert fragment in message


def test_json_body_errors(client):
    for body, fragment in ((b"{oops", "not valid JSON"), (b"[]", "empty list"), (b'"text"', "list of objects"),
                           (b'[{"ID": "a"}, 5]', "record 2: expected a JSON object")):
        response = post(client, body, "application/json", "application/json")
        assert response.status_code == 400 and fragment in response.get_json()["error"], (body, response.data)


def photo_record(record_id: str = "p1", kilobytes: float = 200) -> list[str]:
    """A record as real batch jobs send it: text with a comma and quotes (so the CSV field is quoted) and a
    real-size JPEG photo, whose base64 is longer than the csv module's default field limit (131,072)."""
    photo = base64.b64encode(photo_jpeg(kilobytes, seed=3)).decode()
    assert len(photo) > 131_072
    return [record_id, 'Soft, warm "merino" jumper; fits well', "red", "2.5", "1", photo]


@pytest.mark.parametrize("bad_records", ["fail", "emit"])
def test_a_real_size_photo_in_a_row_with_a_quoted_text_field(bad_records):
    model = StandInModel()
    client = app_with(model, bad_records=bad_records)
    rows = [photo_record("p1"), photo_record("p2", kilobytes=900), records(1).astype(str).values.tolist()[0]]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    body = buffer.getvalue().encode()
    assert body.count(b'"') >= 4 and len(body) < 6 * 1024 * 1024
    response = post(client, body)
    assert response.status_code == 200, response.data[:500]
    out = csv_lines(response)
    assert [line[0] for line in out] == ["p1", "p2", rows[2][0]]
    assert all(line[1] in CLASSES for line in out), out
    assert model.calls[-1] == 3  # every record reached the model, the photos decoded


def hostile_json_values() -> dict[str, str]:
    """name → a JSON value that is valid JSON but hostile to a naive reader."""
    deep_list = "[" * 5000 + "]" * 5000
    deep_object = '{"a":' * 5000 + "1" + "}" * 5000
    return {
        "5,000-digit integer as a number": "9" * 5000,
        "5,000-digit negative integer": "-" + "9" * 5000,
        "number overflowing a float": "1e400",
        "arrays nested 5,000 deep": deep_list,
        "objects nested 5,000 deep": deep_object,
        "arrays nested 900 deep": "[" * 900 + "]" * 900,
    }


def json_bodies(value: str, column: str) -> dict[str, bytes]:
    good = [json.dumps(r) for r in records(2).to_dict("records")]
    bad = '{"ID": "hostile", "%s": %s}' % (column, value)
    return {"application/jsonlines": "\n".join([good[0], bad, good[1]]).encode(),
            "application/json": ("[" + ", ".join([good[0], bad, good[1]]) + "]").encode()}


@pytest.mark.parametrize("column", ["size_num", "review_text", "ID"])
@pytest.mark.parametrize("name", list(hostile_json_values()))
@pytest.mark.parametrize("content_type", ["application/jsonlines", "application/json"])
def test_hostile_json_is_a_400_or_an_error_record_never_a_500(name, column, content_type):
    model = StandInModel()
    strict, lenient = app_with(model), app_with(model, bad_records="emit")
    body = json_bodies(hostile_json_values()[name], column)[content_type]
    where = "line 2" if content_type == "application/jsonlines" else "record 2"
    harmless = column != "size_num" and "nested" not in name  # a long number is fine as text or as an ID
    response = post(strict, body, content_type, "application/json")
    if harmless:
        assert response.status_code == 200, response.data[:300]
        return
    assert response.status_code == 400, (response.status_code, response.data[:300])
    assert where in response.get_json()["error"]
    for accept in ("application/jsonlines", "text/csv"):
        response = post(lenient, body, content_type, accept)
        assert response.status_code == 200, (response.status_code, response.data[:300])
        text = response.get_data(as_text=True)
        lines = text.split("\n")
        assert len(lines) == 3 and len(text) < 2000, text[:500]  # the structure is not echoed back
        if accept == "text/csv":
            fields = [next(csv.reader([line])) for line in lines]
            assert fields[1][1].startswith(f"ERROR: {where}") and [f[1] in CLASSES for f in fields] == [True, False, True]
        else:
            bad = json.loads(lines[1])
            assert bad["label"] is None and bad["error"].startswith(where)
            assert [json.loads(x)["label"] in CLASSES for x in (lines[0], lines[2])] == [True, True]


def test_json_that_is_too_deep_and_broken_as_well_is_a_400():
    deep = "[" * 5000 + "]" * 5000
    for broken in ("[" + deep + ", {oops}]", deep + " trailing", '{"a": ' + deep + "}"):
        response = post(app_with(StandInModel()), broken.encode(), "application/json", "application/json")
        assert response.status_code == 400, response.data[:200]


# Any JSON a client can send: nesting, big and non-finite numbers, odd keys. Every body must get a 200 or a 4xx
# naming the problem, never a 5xx; with bad_records=emit, one output record per input record.
HUGE = '"__huge_integer__"'  # replaced by 5,000 digits once dumped (json.dumps cannot write such an int)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.just(json.loads(HUGE)) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12)
JSON_RECORDS = st.dictionaries(st.sampled_from([*COLUMNS, "label", "extra"]), JSON_VALUES, max_size=7)
FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fuzz_clients():
    return {mode: app_with(StandInModel(), bad_records=mode) for mode in ("fail", "emit")}


@FUZZ
@given(items=st.lists(JSON_RECORDS | JSON_VALUES, min_size=1, max_size=4))
def test_fuzzed_json_never_gets_a_5xx(fuzz_clients, items):
    strict, lenient = fuzz_clients["fail"], fuzz_clients["emit"]
    lines = "\n".join(json.dumps(item) for item in items).replace(HUGE, "9" * 5000).encode()
    listed = json.dumps(items).replace(HUGE, "-" + "9" * 5000).encode()
    for content_type, body in (("application/jsonlines", lines), ("application/json", listed)):
        response = post(strict, body, content_type, "application/json")
        assert response.status_code in (200, 400), (response.status_code, response.data[:300])
        response = post(lenient, body, content_type, "application/jsonlines")
        assert response.status_code in (200, 400), (response.status_code, response.data[:300])
        if response.status_code == 200:
            assert len(response.get_data(as_text=True).split("\n")) == len(items)


@FUZZ
@given(rows=st.lists(st.lists(st.text(max_size=12) | st.sampled_from(["1e400", "nan", "-", "QUJD", "data:,"]),
                              min_size=1, max_size=8), min_size=1, max_size=4),
       tail=st.binary(max_size=40))
def test_fuzzed_csv_never_gets_a_5xx(fuzz_clients, rows, tail):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    for body in (buffer.getvalue().encode(), buffer.getvalue().encode() + tail):
        for client in fuzz_clients.values():
            response = post(client, body)
            assert response.status_code in (200, 400, 415), (response.status_code, response.data[:300])


def test_empty_body(client):
    for body in (b"", b"\n", b"  \n"):
        response = post(client, body)
        assert response.status_code == 400 and "empty body" in response.get_data(as_text=True)


def test_unsupported_content_type_and_accept(client):
    body = csv_body(records(1))
    assert post(client, body, "application/x-recordio-protobuf").status_code == 415
    assert post(client, body, "text/plain").status_code == 415
    assert post(client, body, "text/csv; charset=utf-16").status_code == 415
    assert post(client, body, "text/csv; charset=no-such-charset").status_code == 415
    assert post(client, body, "text/csv; charset=latin-1").status_code == 200
    response = post(client, body, accept="application/x-protobuf")
    assert response.status_code == 406 and "text/csv" in response.get_data(as_text=True)
    assert client.get("/invocations").status_code == 405
    assert client.post("/nowhere").status_code == 404


def test_body_over_the_payload_limit_is_413(model):
    client = app_with(model, max_payload_mb=0.01)  # 10,485 bytes
    small = csv_body(records(1))
    assert post(client, small).status_code == 200
    response = post(client, small * 200)
    assert response.status_code == 413 and "payload limit" in response.get_data(as_text=True)
    chunked = client.post("/invocations", input_stream=io.BytesIO(small * 200),  # as gunicorn passes chunked bodies
                          headers={"Content-Type": "text/csv", "Transfer-Encoding": "chunked"},
                          environ_overrides={"wsgi.input_terminated": True})
    assert chunked.status_code == 413
    assert post(client, small).status_code == 200


def test_unexpected_model_errors_are_500_and_the_app_keeps_serving():
    class Flaky(StandInModel):
        fail = False

        def predict_proba(self, df):
            if self.fail:
                raise MemoryError("out of memory")
            return super().predict_proba(df)

    model = Flaky()
    client = app_with(model)
    model.fail = True
    response = post(client, csv_body(records(1)))
    assert response.status_code == 500 and "MemoryError" in response.get_data(as_text=True)
    model.fail = False
    assert post(client, csv_body(records(1))).status_code == 200


def test_one_prediction_at_a_time_per_process():
    model = StandInModel(delay=0.2)
    client_app = create_app(model, background=False)
    active, peak = [0], [0]
    original = model.predict_proba

    def counting(df):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            return original(df)
        finally:
            active[0] -= 1

    model.predict_proba = counting
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        post(client_app.test_client(), csv_body(records(2))).status_code)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 4 and peak[0] == 1
    # every prediction ran on the thread that made the trial prediction (warm OpenMP team, caches)
    assert len(set(model.threads)) == 1 and len(model.threads) == 6


def test_a_prediction_past_the_timeout_calls_the_hang_handler():
    hung = []
    model = StandInModel()
    client = create_app(model, settings=ServerSettings(request_timeout=0.3), background=False,
                        on_hang=hung.append).test_client()
    model.delay = 1.5
    assert post(client, csv_body(records(1))).status_code == 200
    assert hung and hung[0] > 0.3


# ---------------------------------------------------------------------------------------------- the real model

@pytest.fixture(scope="module")
def real_model(serving_model_dir):
    from multimodal import MultimodalClassifier
    return MultimodalClassifier.load(serving_model_dir)


@pytest.mark.slow
def test_real_model_through_the_app_matches_predict_proba(real_model, monkeypatch):
    loaded = []
    client = create_app(lambda: loaded.append(1) or real_model, settings=ServerSettings()).test_client()
    deadline = time.monotonic() + 120
    while client.get("/ping").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/ping").status_code == 200 and loaded == [1]
    frame = records(40, seed=31)
    frame.loc[5, ["review_text", "size_num", "photo_image"]] = ""
    proba = real_model.predict_proba(frame.astype(str))
    out = json.loads(post(client, csv_body(frame), accept="application/json").data)
    assert [o["ID"] for o in out] == frame["ID"].tolist()
    np.testing.assert_allclose([list(o["probabilities"].values()) for o in out], proba.to_numpy(), atol=1e-5)
    assert [o["label"] for o in out] == proba.idxmax(axis=1).tolist()
    assert post(client, csv_body(records(1, seed=32))).status_code == 200


@pytest.mark.slow
def test_real_model_isolates_bad_records(real_model):
    client = create_app(real_model, settings=ServerSettings(bad_records="emit"), background=False).test_client()
    frame = records(6, seed=33, missing_rate=0)
    jpeg = base64.b64decode(frame.loc[2, "photo_image"])
    frame.loc[2, "photo_image"] = base64.b64encode(jpeg[: len(jpeg) // 2]).decode()  # passes the quick check
    frame.loc[4, "weight_num"] = "heavy"
    out = csv_lines(post(client, csv_body(frame)))
    assert [line[0] for line in out] == frame["ID"].tolist()
    assert out[2][1].startswith("ERROR: line 3, column 'photo_image'")
    assert out[4][1].startswith("ERROR: line 5, column 'weight_num'")
    good = frame.drop(index=[2, 4])
    assert [out[i][1] for i in good.index] == real_model.predict(good.astype(str)).tolist()
    strict = create_app(real_model, background=False).test_client()
    response = post(strict, csv_body(frame))
    assert response.status_code == 400 and "line 3, column 'photo_image'" in response.get_data(as_text=True)


def test_carriage_returns_and_the_record_count_limit(client):
    response = post(client, b"r1,a\rb,red,1,1,\n")
    assert response.status_code == 400 and "carriage return" in response.get_data(as_text=True)
    lines = csv_lines(post(client, b'r1,"a\rb",red,1,1,\n'))  # inside quotes it is text
    assert lines[0][0] == "r1"
    from multimodal.sagemaker.serving.decode import MAX_RECORDS
    response = post(client, b",,,,,\n" * (MAX_RECORDS + 1))
    assert response.status_code == 400 and "records in one request" in response.get_data(as_text=True)
