"""What each expert sees (multimodal.core.views): missing indicators, the joint expert's columns, reductions."""
import numpy as np
import pandas as pd
import pytest

from multimodal.core.experts import ExpertSpec
from multimodal.core.reduction import Reducer
from multimodal.core.schema import Schema, prepare_features
from multimodal.core import reduction as reduction_module
from multimodal.core import views as views_module
from multimodal.core.views import (
    REDUCE_IMAGES_FROM_ROWS,
    Views,
    expert_specs,
    missing_fractions,
    missing_indicators,
    reduces_images,
)

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
    views = Views(SCHEMA, text_model=text_model, joint_dims=2)  # image_dims 0: the image expert sees all 50
    assert views.embedded_columns() == (["note_text", "photo_image"] if text_model == "minilm" else ["photo_image"])
    views.fit_reducers(embeddings, image_dims=0, joint=True, seed=0)
    assert views.reduced == set()
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


def _image_and_joint_frames(views, features, embeddings):
    image = views.frame(ExpertSpec("photo_image", "image", ["photo_image"]), features, embeddings)
    joint = views.frame(expert_specs(SCHEMA, indicators=[], joint=True)[-1], features, embeddings)
    return image, joint.filter(like="photo_image")


def test_an_image_embedding_is_reduced_once_for_every_expert_and_the_full_matrix_let_go(features):
    full = np.random.default_rng(2).normal(size=(4, 50)).astype(np.float32)
    embeddings = {"photo_image": full}
    views = Views(SCHEMA, text_model="ngrams", joint_dims=2)
    views.fit_reducers(embeddings, image_dims=3, joint=True, seed=0)
    assert views.reduced == {"photo_image"} and views.reducers["photo_image"].dims == 3
    views.reduce(embeddings)
    assert embeddings["photo_image"].shape == (4, 3)  # the caller's dict no longer holds the 50-wide matrix
    np.testing.assert_allclose(embeddings["photo_image"], views.reducers["photo_image"].transform(full), rtol=1e-6)
    image, joint = _image_and_joint_frames(views, features, embeddings)
    assert list(image.columns) == ["photo_image__pc0", "photo_image__pc1", "photo_image__pc2"]
    assert list(joint.columns) == ["photo_image__pc0", "photo_image__pc1"]  # the first joint_dims of the same ones
    np.testing.assert_array_equal(joint.to_numpy(), image.to_numpy()[:, :2])
    reduced = embeddings["photo_image"]
    views.reduce(embeddings)  # prediction reduces what it embeds; reducing twice changes nothing
    assert embeddings["photo_image"] is reduced


def test_the_joint_expert_reads_every_shared_component_when_its_own_width_is_0(features):
    embeddings = {"photo_image": np.random.default_rng(3).normal(size=(4, 50)).astype(np.float32)}
    views = Views(SCHEMA, text_model="ngrams", joint_dims=0)
    views.fit_reducers(embeddings, image_dims=3, joint=True, seed=0)
    views.reduce(embeddings)
    image, joint = _image_and_joint_frames(views, features, embeddings)
    assert list(joint.columns) == list(image.columns) == ["photo_image__pc0", "photo_image__pc1", "photo_image__pc2"]


def test_an_embedding_no_wider_than_image_dims_is_kept_whole_for_its_expert(features):
    full = np.random.default_rng(4).normal(size=(4, 6)).astype(np.float32)
    embeddings = {"photo_image": full}
    views = Views(SCHEMA, text_model="ngrams", joint_dims=2)
    views.fit_reducers(embeddings, image_dims=8, joint=True, seed=0)
    views.reduce(embeddings)
    assert views.reduced == set() and embeddings["photo_image"] is full
    image, joint = _image_and_joint_frames(views, features, embeddings)
    assert image.shape == (4, 6) and list(joint.columns) == ["photo_image__pc0", "photo_image__pc1"]


def test_reduction_in_chunks_and_a_fit_on_a_sample_of_the_rows(monkeypatch):
    rng = np.random.default_rng(5)
    # 300 rows with 4 strong directions: the components from a 100-row sample span the same space
    matrix = (rng.normal(size=(300, 4)) * 10 @ rng.normal(size=(4, 40)) + rng.normal(size=(300, 40)) * 0.1)
    matrix = matrix.astype(np.float32)
    monkeypatch.setattr(views_module, "REDUCER_FIT_ROWS", 100)
    monkeypatch.setattr(reduction_module, "TRANSFORM_CHUNK_ROWS", 7)
    schema = Schema.from_header(["photo_image", "label"])
    views = Views(schema, text_model="ngrams")
    embeddings = {"photo_image": matrix}
    views.fit_reducers(embeddings, image_dims=4, joint=False, seed=0)
    views.reduce(embeddings)
    reducer = views.reducers["photo_image"]
    one_shot = (matrix - reducer.mean) @ reducer.components.T
    np.testing.assert_allclose(embeddings["photo_image"], one_shot, rtol=1e-5, atol=1e-4)
    centred = matrix - matrix.mean(axis=0)
    explained = np.linalg.norm(embeddings["photo_image"]) ** 2 / np.linalg.norm(centred) ** 2
    assert explained > 0.999, explained
    empty = {"photo_image": np.zeros((0, 40), dtype=np.float32)}
    views.reduce(empty)
    assert empty["photo_image"].shape == (0, 4)


def test_auto_reduces_image_embeddings_only_above_the_row_threshold():
    assert not reduces_images("auto", REDUCE_IMAGES_FROM_ROWS) and reduces_images("auto", REDUCE_IMAGES_FROM_ROWS + 1)
    assert reduces_images("true", 10) and not reduces_images("false", 10 * REDUCE_IMAGES_FROM_ROWS)
