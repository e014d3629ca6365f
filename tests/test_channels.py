"""Reading a training channel as SageMaker delivers it: files (gzip, subdirectories) or a Pipe-mode FIFO, RFC 4180."""
from __future__ import annotations

import gzip
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from multimodal.core.errors import DataError
from multimodal.sagemaker.training.channels import ChannelConfig, ChannelReader


@dataclass
class Channel:
    header: list[str]
    frame: pd.DataFrame
    sources: list[str]


def read_channel(config: ChannelConfig, data_dir: Path) -> Channel:
    """The whole channel, every batch the reader yields put together."""
    reader = ChannelReader(config, data_dir)
    frame = pd.concat(list(reader()), ignore_index=True)
    return Channel(list(frame.columns), frame, reader.stats.sources)


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"))


def _channel(tmp_path: Path, files: dict, mode: str = "File"):
    for relative, content in files.items():
        path = tmp_path / "train" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return read_channel(ChannelConfig("train", mode), tmp_path)


def test_rfc4180_quoting_survives_reading(tmp_path):
    big = "A" * 300_000  # a base64 image is far longer than the csv module's default field limit
    text = ('\ufeffID,review_text,photo_image,label\r\n'
            '1,"comma, ""quotes"" and\r\na line break",' + big + ',x\r\n'
            '\r\n'
            '2,,,y\r\n')
    data = _channel(tmp_path, {"part.csv": text})
    assert data.header == ["ID", "review_text", "photo_image", "label"]
    assert data.frame.to_dict("records") == [
        {"ID": "1", "review_text": 'comma, "quotes" and\r\na line break', "photo_image": big, "label": "x"},
        {"ID": "2", "review_text": "", "photo_image": "", "label": "y"}]


def test_missing_value_spellings_stay_text(tmp_path):
    data = _channel(tmp_path, {"a.csv": "ID,note_text,n_num,label\n1,NA,null,None\n2,nan,,x\n"})
    assert data.frame["note_text"].tolist() == ["NA", "nan"]  # only an empty field is missing
    assert data.frame["n_num"].tolist() == ["null", ""]  # the classifier decides what a _num token means


def test_files_are_read_in_path_order_including_subdirectories_and_gzip(tmp_path):
    header = "ID,a_num,label\n"
    data = _channel(tmp_path, {"b.csv.gz": gzipped(header + "3,3,x\n"), "a.csv": header + "1,1,x\n2,2,y\n",
                               "c/d.CSV": header + "4,4,y\n", "notes.txt": "ignored", ".hidden.csv": "ignored"})
    assert data.frame["ID"].tolist() == ["1", "2", "3", "4"]
    assert data.sources == ["a.csv", "b.csv.gz", "c/d.CSV"]


def test_pipe_mode_reads_the_fifo_as_one_stream(tmp_path):
    """SageMaker concatenates the channel's objects into train_0: headers repeat, gzip members follow each other."""
    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)
    first = "ID,a_num,note_text,label\n1,1,\"two\nlines\",x\n"
    second = "ID,a_num,note_text,label\n2,2,b,y\n"

    def feed():
        with open(fifo, "wb") as pipe:
            pipe.write(gzip.compress(first.encode()) + gzip.compress(second.encode()))

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    data = read_channel(ChannelConfig("train", "Pipe"), tmp_path)
    writer.join(10)
    assert data.frame.to_dict("records") == [{"ID": "1", "a_num": "1", "note_text": "two\nlines", "label": "x"},
                                             {"ID": "2", "a_num": "2", "note_text": "b", "label": "y"}]


def test_header_mismatch_names_both_files_and_the_difference(tmp_path):
    with pytest.raises(DataError) as info:
        _channel(tmp_path, {"x.csv": "ID,a_num,b_num,label\n1,1,1,x\n", "y.csv": "ID,b_num,a_num,label\n1,1,1,x\n"})
    assert "'x.csv' and 'y.csv' have different headers" in str(info.value)
    assert "column 2 is 'a_num' in 'x.csv' but 'b_num' in 'y.csv'" in str(info.value)


@pytest.mark.parametrize("text, fragment", [("{oops", "is not valid JSON"), ("[1, 2]", "must be a JSON object"),
                                            ('{"train": "File"}', "must be a JSON object"),
                                            ('{"train": {"TrainingInputMode": "Stream"}}', "TrainingInputMode")])
def test_a_damaged_inputdataconfig_is_a_configuration_error_naming_the_file(tmp_path, text, fragment):
    """Like hyperparameters.json and resourceconfig.json: the job's configuration, reported as such (the job's
    failure reason says "Invalid job configuration"), not as a problem of the data."""
    from multimodal.sagemaker.contract import ConfigError
    from multimodal.sagemaker.training.channels import load_input_data_config
    path = tmp_path / "inputdataconfig.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_input_data_config(path)
    assert "inputdataconfig.json" in str(info.value)
