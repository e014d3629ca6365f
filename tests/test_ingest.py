"""Training rows read as a stream of batches (multimodal.core.ingest, the channel reader): images are embedded
batch by batch and their base64 text dropped, row numbers stay the source's, batches are pulled lazily."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from multimodal import DataError, MultimodalClassifier
from multimodal.core.ingest import frame_batches, ingest
from multimodal.core.schema import Schema
from multimodal.sagemaker.training.channels import ChannelConfig, ChannelReader
from multimodal.tools.synthetic import make_dataset


def fake_embed(log: list):
    def embed(features):
        log.append(len(features))
        return {"photo_image": np.full((len(features), 4), features.first_row, dtype=np.float32)}
    return embed


def test_batches_are_embedded_as_they_arrive_and_their_images_dropped():
    frame = make_dataset(100, seed=1)
    pulled, embedded = [], []

    def batches():
        for batch in frame_batches(frame, 30):
            pulled.append(len(batch))
            # the previous batch was embedded before this one was read: nothing reads ahead
            assert len(embedded) == len(pulled) - 1
            yield batch

    schema = Schema.from_header(list(frame.columns))
    rows = ingest(batches(), schema, embed=fake_embed(embedded), source="the training data")
    assert pulled == embedded == [30, 30, 30, 10]
    assert rows.features.values["photo_image"].isna().all()  # the base64 text is gone
    assert rows.features.missing["photo_image"].tolist() == frame["photo_image"].eq("").tolist()
    assert rows.embeddings["photo_image"][:, 0].tolist() == [0] * 30 + [30] * 30 + [60] * 30 + [90] * 10
    assert rows.numbers.tolist() == list(range(100))
    assert rows.labels.tolist() == frame["label"].tolist()


def test_a_share_of_the_batches_keeps_the_sources_row_numbers():
    frame = make_dataset(100, seed=1, with_images=False)
    schema = Schema.from_header(list(frame.columns))
    rows = ingest(frame_batches(frame, 30), schema, embed=lambda f: {}, source="x", keep=lambda k: k % 2 == 1)
    assert rows.numbers.tolist() == list(range(30, 60)) + list(range(90, 100))
    assert rows.features.ids.tolist() == frame["ID"].iloc[list(range(30, 60)) + list(range(90, 100))].tolist()


def test_a_bad_number_in_a_later_batch_names_its_row_in_the_whole_data():
    frame = make_dataset(600, seed=2, with_images=False)
    frame.loc[299, "size_num"] = "12 cm"
    with pytest.raises(DataError, match=r"'size_num', row 300 \(ID .*\): '12 cm' is not a number"):
        MultimodalClassifier()._get_featurizer().ingest(frame_batches(frame), None, source="the training data")


def test_the_channel_reader_streams_batches_across_files_with_row_numbers(tmp_path):
    frame = make_dataset(70, seed=3, with_images=False)
    directory = tmp_path / "train"
    directory.mkdir()
    frame.iloc[:50].to_csv(directory / "a.csv", index=False)
    frame.iloc[50:].to_csv(directory / "b.csv", index=False)
    reader = ChannelReader(ChannelConfig("train"), tmp_path, training=True, batch_rows=20)
    stream = reader()
    first = next(stream)
    assert len(first) == 20 and reader.stats.rows == 20  # read lazily: only the first batch so far
    batches = [first, *stream]
    assert [len(b) for b in batches] == [20, 20, 10, 20]
    assert [b.index[0] for b in batches] == [0, 20, 40, 50]
    assert pd.concat(batches)["ID"].tolist() == frame["ID"].astype(str).tolist()
    assert reader.stats.rows == 70 and reader.stats.sources == ["a.csv", "b.csv"]


def test_the_channel_reader_checks_the_training_header_before_any_row(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.csv").write_text("ID,price,label\n1,2,a\n")
    with pytest.raises(DataError, match="price"):
        next(ChannelReader(ChannelConfig("train"), tmp_path, training=True)())


def test_fit_accepts_batches_and_a_header_only_source_is_explained():
    empty = make_dataset(10, seed=4, with_images=False).iloc[:0]
    with pytest.raises(DataError, match="header but no data rows"):
        MultimodalClassifier().fit(frame_batches(empty))
    with pytest.raises(TypeError, match="DataFrame or an iterable of DataFrames"):
        MultimodalClassifier().fit("train.csv")


def test_memory_holds_a_few_batches_of_images_not_the_whole_data():
    """120 rows of 500 KB base64 images (60 MB) in batches of 10 (5 MB): what ingest keeps is no image, and its
    peak a few batches' worth, not the data's (pandas keeps a frame's text columns in one block: replacing the image column
    in place would leave the others as views of it, keeping every image alive)."""
    import gc
    import tracemalloc

    template = make_dataset(10, seed=5)
    columns = list(template.columns)

    def batches():
        for b in range(12):
            batch = template.copy()
            batch["photo_image"] = [f"{b:02d}{i:02d}" + "A" * 500_000 for i in range(10)]
            batch["ID"] = [f"{b}-{i}" for i in range(10)]
            yield batch[columns].astype(object)

    schema = Schema.from_header(columns)
    tracemalloc.start()
    try:
        rows = ingest(batches(), schema, embed=fake_embed([]), source="the training data")
        gc.collect()  # pandas leaves reference cycles: garbage, but only once collected
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 120
    assert current < 3e6, f"{current / 1e6:.1f} MB still held after ingest"
    assert peak < 30e6, f"peak {peak / 1e6:.1f} MB while ingesting 60 MB of images"
