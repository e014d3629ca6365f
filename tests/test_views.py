"""What each expert sees (multimodal.core.views): missing indicators, the joint expert's columns, reductions."""
import numpy as np
import pandas as pd
import pytest

from multimodal.core.experts import ExpertSpec
from multimodal.core.reduction import Reducer
from multimodal.core.schema import Schema, prepare_features
from multimodal.core.views import Views, expert_specs, missing_fractions, missing_indicators

FRAME = pd.DataFrame({"ID": ["a", "b", "c", "d"], "note_text": ["good", "", "bad", "ok"],
                      "size_num": ["1.5", "", "0", "-2"], "age_num": ["3", "4", "5", "6"],
                      "region_cat": ["n", "s", "", "n"], "photo_image": ["", "", "", ""], "label": list("xyxy")})
SCHEMA = Schema.from_header(list(FRAME.columns))


@pytest.fixture()
def features():
    return prepare_features(FRAME, SCHEMA)


def test_only_numbers_missing_in_training_get_an_indicator(features):
    assert missing_indicators(SCHEMA, features) == ["size_num"]


def test_the_numeric_expert_sees_zero_and_a_was_missing_indicator(features):
    spec = ExpertSpec("num", "num", ["size_num", "age_num"], ["size_num"])
    frame = Views(SCHEMA, text_model="ngrams").frame(spec, features, {})
    assert list(frame.columns) == ["size_num", "age_num", "size_num__missing"]
    assert frame["size_num"].tolist() == [1.5, 0.0, 0.0, -2.0]  # missing is still 0, the original rule
    assert frame["size_num__missing"].tolist() == [0, 1, 0, 0]  # but no longer the same as a real 0


def test_the_joint_expert_is_one_more_expert_when_there_are_two_to_join():
    specs = expert_specs(SCHEMA, indicators=["size_num"], joint=True)
    assert [s.name for s in specs] == ["text", "num", "cat", "photo_image", "joint"]
    assert specs[-1].columns == ["note_text", "size_num", "age_num", "region_cat", "photo_image"]
    assert specs[-1].indicators == ["size_num"] and specs[0].indicators == []
    assert [s.name for s in expert_specs(SCHEMA, indicators=[], joint=False)][-1] == "photo_image"
    only_text = Schema.from_header(["note_text", "label"])
    assert [s.name for s in expert_specs(only_text, indicators=[], joint=True)] == ["text"]


@pytest.mark.parametrize("text_model", ["ngrams", "minilm"])
def test_the_joint_expert_sees_every_column_with_reduced_embeddings(features, text_model):
    rng = np.random.default_rng(0)
    embeddings = {"photo_image": rng.normal(size=(4, 50)).astype(np.float32)}
    if text_model == "minilm":
        embeddings["note_text"] = rng.normal(size=(4, 20)).astype(np.float32)
    views = Views(SCHEMA, text_model=text_model)
    assert views.embedded_columns() == (["note_text", "photo_image"] if text_model == "minilm" else ["photo_image"])
    views.fit_reducers(embeddings, dims=2, seed=0)
    joint = expert_specs(SCHEMA, indicators=["size_num"], joint=True)[-1]
    frame = views.frame(joint, features, embeddings)
    text_columns = ["note_text"] if text_model == "ngrams" else ["note_text__pc0", "note_text__pc1"]
    assert list(frame.columns) == [*text_columns, "size_num", "age_num", "region_cat", "photo_image__pc0",
                                   "photo_image__pc1", "size_num__missing"]
    assert views.raw_text_columns(joint) == (["note_text"] if text_model == "ngrams" else [])
    image_expert = views.frame(ExpertSpec("photo_image", "image", ["photo_image"]), features, embeddings)
    assert image_expert.shape == (4, 50)  # the per-modality expert keeps the full embedding


def test_missing_fractions_per_modality_expert(features):
    specs = expert_specs(SCHEMA, indicators=["size_num"], joint=True)
    fractions = missing_fractions(features, specs)
    assert fractions.shape == (4, 4)  # text, num, cat, photo_image; not the joint expert
    assert fractions[1].tolist() == [1.0, 0.5, 0.0, 1.0]


def test_specs_and_reducers_survive_a_round_trip(tmp_path):
    spec = ExpertSpec("num", "num", ["size_num"], ["size_num"])
    assert ExpertSpec.from_json(spec.to_json()) == spec
    assert ExpertSpec.from_json({"name": "num", "modality": "num", "columns": ["a_num"]}).indicators == []  # v1
    matrix = np.random.default_rng(1).normal(size=(30, 10))
    reducer = Reducer.fit(matrix, 3, seed=0)
    reducer.save(tmp_path / "r.npz")
    np.testing.assert_array_equal(Reducer.load(tmp_path / "r.npz").transform(matrix), reducer.transform(matrix))
    assert Reducer.fit(matrix[:3], 8, seed=0).dims == 2  # never more components than the rows allow
