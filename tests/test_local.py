"""Local SageMaker emulation: a training job and batch transforms, as SageMaker would run them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile

import pandas as pd
import pytest

from multimodal.local import TransformError, pack_requests, split_records
from multimodal.metrics import metric_definitions
from multimodal.synthetic import make_dataset

CLI = [sys.executable, "-m", "multimodal.cli", "local"]


def test_line_split_is_on_newline_only():
    data = "a,1\r\nb,\u2028two\nc,3\n".encode()
    assert split_records(data, "Line") == [b"a,1\r", "b,\u2028two".encode(), b"c,3"]
    assert split_records(b"x\ny", "None") == [b"x\ny"]
    assert split_records(b"", "Line") == []


def test_multi_record_requests_hold_whole_records_up_to_the_payload():
    records = [b"a" * 40, b"b" * 40, b"c" * 40]
    assert pack_requests(records, max_bytes=81, multi_record=True) == [records[0] + b"\n" + records[1], records[2]]
    assert pack_requests(records, max_bytes=1000, multi_record=False) == records
    with pytest.raises(TransformError, match="record 2 is 40 bytes, over MaxPayloadInMB"):
        pack_requests([b"x", b"y" * 40], max_bytes=39, multi_record=True)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One local training job (in this machine's environment) on data with text, numbers and categories."""
    work = tmp_path_factory.mktemp("job")
    make_dataset(240, seed=41, with_images=False).to_csv(work / "train.csv", index=False)
    make_dataset(80, seed=42, with_images=False).to_csv(work / "valid.csv", index=False)
    result = subprocess.run([*CLI, "train", "--train", str(work / "train.csv"), "--validation",
                             str(work / "valid.csv"), "--out", str(work / "out"), "--hp", "quality=toy", "--hp",
                             "n_secs=60", "--hp", "n_folds=2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result


@pytest.mark.slow
def test_training_job_is_packaged_as_sagemaker_does(job):
    work, _ = job
    with tarfile.open(work / "out" / "model.tar.gz") as tar:
        names = tar.getnames()
    assert "model_config.json" in names  # at the root of the archive, no leading folder
    assert any(n.startswith("modality/text/") for n in names) and any(n.startswith("wholistic/") for n in names)
    with tarfile.open(work / "out" / "output.tar.gz") as tar:
        assert "metrics.json" in tar.getnames()


@pytest.mark.slow
def test_every_metric_definition_matches_a_line_the_job_printed(job):
    _, result = job
    for definition in metric_definitions():
        matches = re.findall(definition["Regex"], result.stdout)
        assert len(matches) == 1, (definition, result.stdout)
        float(matches[0])


@pytest.mark.slow
def test_a_failed_job_leaves_its_reason_and_no_model(tmp_path):
    make_dataset(40, seed=43, with_images=False).to_csv(tmp_path / "train.csv", index=False)
    result = subprocess.run([*CLI, "train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "out"),
                             "--hp", "quality=ultra"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "quality='ultra' is not one of" in (tmp_path / "out" / "failure").read_text()
    assert not (tmp_path / "out" / "model.tar.gz").exists()


@pytest.mark.slow
def test_batch_transform_writes_one_line_per_record_for_every_file(job, tmp_path):
    work, _ = job
    inputs = tmp_path / "inputs"
    (inputs / "part").mkdir(parents=True)
    first = make_dataset(25, seed=44, with_images=False).drop(columns="label")
    second = make_dataset(7, seed=45, with_images=False).drop(columns="label")
    first.to_csv(inputs / "a.csv", index=False, header=False)
    second.to_csv(inputs / "part" / "b.csv", index=False, header=False)
    broken = inputs / "broken.csv"
    broken.write_text("only,three,fields\n")
    report_file = tmp_path / "report.json"
    result = subprocess.run([*CLI, "transform", "--model", str(work / "out" / "model.tar.gz"), "--output",
                             str(tmp_path / "out"), "--max-payload-mb", "0.001", "--max-concurrent-transforms", "2",
                             "--report", str(report_file), str(inputs)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1  # the broken file failed, as it would on SageMaker
    report = json.loads(report_file.read_text())
    assert list(report["failed"]) == [str(broken)]
    assert not (tmp_path / "out" / "broken.csv.out").exists()
    for frame, out in ((first, tmp_path / "out" / "a.csv.out"), (second, tmp_path / "out" / "part" / "b.csv.out")):
        predicted = pd.read_csv(out, header=None, names=["ID", "label"], dtype=str)
        assert predicted["ID"].tolist() == frame["ID"].tolist()
        assert set(predicted["label"]) <= {"alpha", "beta", "gamma", "delta"}
