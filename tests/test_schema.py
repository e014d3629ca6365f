import logging

import numpy as np
import pandas as pd
import pytest

from multimodal.core.errors import DataError
from multimodal.core.schema import Schema, encode_labels, prepare_features


def test_columns_are_routed_by_suffix():
    schema = Schema.from_header(["ID", "title_text", "age_num", "colour_cat", "front_image", "back_image", "label"])
    assert [(c.name, c.modality) for c in schema.columns] == [
        ("title_text", "text"), ("age_num", "num"), ("colour_cat", "cat"), ("front_image", "image"),
        ("back_image", "image")]
    assert schema.id_column == "ID"
    assert schema.prediction_header == ["ID", "title_text", "age_num", "colour_cat", "front_image", "back_image"]
    assert Schema.from_json(schema.to_json()) == schema


@pytest.mark.parametrize("header, fragments", [
    (["ID", "price", "label"], ["'price' (column 2) has no recognised suffix", "_text, _num, _cat or _image"]),
    (["ID", "a_text"], ["no 'label' column"]),
    (["ID", "a_text", "Label"], ["'Label' (column 3)", "case-sensitive", "rename it to 'label'"]),
    (["ID", "label"], ["no feature columns"]),
    (["ID", "a_text", "a_text", "label"], ["'a_text' appears twice (columns 2 and 3)"]),
    (["ID", "_text", "label"], ["'_text' (column 2) has no recognised suffix"]),
])
def test_header_errors_name_the_column_and_the_fix(header, fragments):
    with pytest.raises(DataError) as info:
        Schema.from_header(header)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_duplicate_headers_in_a_dataframe_are_refused():
    df = pd.DataFrame([[1, "x", "y", "a"]], columns=["ID", "t_text", "t_text", "label"])
    with pytest.raises(DataError, match="appears twice"):
        Schema.from_header(list(df.columns))


def test_imputation_per_modality():
    df = pd.DataFrame({
        "ID": ["a", "b", "c"],
        "t_text": ["hello", "", None],
        "n_num": ["1.5", "", "NaN"],
        "c_cat": ["red", "  ", np.nan],
        "p_image": ["aGk=", "", None],
        "label": ["x", "y", "x"],
    })
    schema = Schema.from_header(list(df.columns))
    features = prepare_features(df, schema)
    assert features.values["t_text"].tolist() == ["hello", "", ""]
    assert features.values["n_num"].tolist() == [1.5, 0.0, 0.0]
    assert features.values["c_cat"].tolist() == ["red", "unknown", "unknown"]
    assert features.values["p_image"].tolist() == ["aGk=", None, None]
    assert features.missing.to_numpy().tolist() == [[False] * 4, [True] * 4, [True] * 4]


def test_numbers_from_a_dataframe_keep_their_values():
    df = pd.DataFrame({"ID": [1, 2], "n_num": [3, np.nan], "c_cat": [3.0, 4.0], "label": [0, 1]})
    features = prepare_features(df, Schema.from_header(list(df.columns)))
    assert features.values["n_num"].tolist() == [3.0, 0.0]
    assert features.values["c_cat"].tolist() == ["3", "4"]


def test_a_non_number_in_a_num_column_names_column_row_and_id():
    df = pd.DataFrame({"ID": ["a", "b", "c"], "n_num": ["1", "2", "three"], "label": ["x", "y", "x"]})
    with pytest.raises(DataError) as info:
        prepare_features(df, Schema.from_header(list(df.columns)), source="train.csv")
    message = str(info.value)
    assert "column 'n_num'" in message and "row 3 (ID 'c')" in message and "'three' is not a number" in message
    assert info.value.column == "n_num" and info.value.row == 3


def test_infinite_numbers_are_refused():
    df = pd.DataFrame({"ID": ["a"], "n_num": ["inf"], "label": ["x"]})
    with pytest.raises(DataError, match="infinite"):
        prepare_features(df, Schema.from_header(list(df.columns)))


def test_missing_feature_column_at_prediction_lists_the_expected_order():
    schema = Schema.from_header(["ID", "t_text", "n_num", "label"])
    with pytest.raises(DataError, match="lacks the column.*'n_num'.*expected columns in order: ID, t_text, n_num"):
        prepare_features(pd.DataFrame({"ID": [1], "t_text": ["a"]}), schema)


def test_rows_without_label_are_dropped_with_a_count(caplog):
    with caplog.at_level(logging.WARNING):
        classes, y, kept = encode_labels(pd.Series(["b", "", "a", None, "b"]))
    assert classes == ["a", "b"] and y.tolist() == [1, 0, 1]
    assert kept.tolist() == [True, False, True, False, True]
    assert "dropped 2 row(s) with an empty label" in caplog.text


def test_integer_labels_come_back_as_integers():
    classes, y, _ = encode_labels(pd.Series(["10", "2", "2", "-1"]))
    assert classes == [-1, 2, 10] and all(type(c) is int for c in classes)
    assert y.tolist() == [2, 1, 1, 0]


def test_fewer_than_two_classes_is_an_error():
    with pytest.raises(DataError, match="at least 2 classes.*found only 'a'"):
        encode_labels(pd.Series(["a", "a", ""]))
