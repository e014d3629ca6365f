"""Facts of SageMaker's contracts that several layers share (multimodal.sagemaker.contract)."""
import csv

import pytest

from multimodal.sagemaker import contract, environment


def test_records_split_on_newline_only():
    assert contract.split_records("a,1\r\nb,\u2028two\nc,3\n".encode()) == [b"a,1\r", "b,\u2028two".encode(), b"c,3"]
    assert contract.split_records(b"a\n\nb") == [b"a", b"", b"b"]  # an empty line is a record (a bad one)
    assert contract.split_records(b"") == []


def test_the_ml_root_moves_with_its_variable():
    assert str(environment.ml_root({})) == "/opt/ml"
    assert str(environment.ml_root({environment.ML_ROOT.name: "/tmp/x"})) == "/tmp/x"


def test_long_csv_fields_are_allowed_once_asked_for():
    contract.allow_long_csv_fields()
    field = "A" * 1_000_000  # about a 750 KB photo in base64
    assert next(csv.reader([f'"a, b",{field}'])) == ["a, b", field]


def test_every_format_is_a_media_type_of_its_own():
    assert all(contract.MEDIA_TYPES[f] == f for f in contract.FORMATS)


@pytest.mark.parametrize("raw, expected", [("MULTI_RECORD", "MULTI_RECORD"), ("MultiRecord", "MULTI_RECORD"),
                                           (" singlerecord ", "SINGLE_RECORD"), ("Single_Record", "SINGLE_RECORD"),
                                           ("BATCH", None), ("", None)])
def test_a_batch_strategy_is_read_in_either_spelling(raw, expected):
    """The container is told MULTI_RECORD; CreateTransformJob, the SDK and the emulator say MultiRecord: one table
    for both spellings."""
    assert contract.batch_strategy(raw) == expected
    if expected:
        assert contract.API_BATCH_STRATEGIES[expected] in ("MultiRecord", "SingleRecord")
