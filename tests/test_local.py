"""Local SageMaker emulation: a training job and batch transforms, as SageMaker would run them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import threading

import pandas as pd
import pytest

from multimodal.sagemaker.training.metrics import metric_definitions
from multimodal.tools.local_training import channel_files, local_train, shards
from multimodal.tools.local_transform import (
    TransformError,
    TransformSettings,
    assemble,
    pack_requests,
    split_input,
    transform_files,
)
from multimodal.tools.synthetic import make_dataset

CLI = [sys.executable, "-m", "multimodal.tools.cli", "local"]


def test_line_split_is_on_newline_only():
    data = "a,1\r\nb,\u2028two\nc,3\n".encode()
    assert split_input(data, "Line") == [b"a,1\r", "b,\u2028two".encode(), b"c,3"]
    assert split_input(b"x\ny", "None") == [b"x\ny"]
    assert split_input(b"", "Line") == []


def test_multi_record_requests_hold_whole_records_up_to_the_payload():
    records = [b"a" * 40, b"b" * 40, b"c" * 40]
    assert pack_requests(records, max_bytes=81, multi_record=True) == [records[0] + b"\n" + records[1], records[2]]
    assert pack_requests(records, max_bytes=1000, multi_record=False) == records
    with pytest.raises(TransformError, match="record 2 is 40 bytes, over MaxPayloadInMB"):
        pack_requests([b"x", b"y" * 40], max_bytes=39, multi_record=True)


def test_assembly_is_exactly_sagemakers():
    """AssembleWith=Line adds a newline after every response, and nothing is stripped (SageMaker strips
    nothing either): a response ending with a newline shows up as a blank line."""
    assert assemble([b"r1,a\nr2,b", b"r3,c"], "Line") == b"r1,a\nr2,b\nr3,c\n"
    assert assemble([b"r1,a\n", b"r2,b\n"], "Line") == b"r1,a\n\nr2,b\n\n"
    assert assemble([b"[1]", b"[2]"], "None") == b"[1][2]"


@pytest.fixture()
def stand_in_endpoint():
    """The real Flask app over a stand-in model, served on 127.0.0.1 by a thread (stopped after the test)."""
    from support import StandInModel
    from werkzeug.serving import make_server

    from multimodal.sagemaker.serving.app import ServerSettings, create_app
    app = create_app(StandInModel(), settings=ServerSettings(workers=2, bad_records="emit"), background=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonlines"])
@pytest.mark.parametrize("accept", ["text/csv", "application/jsonlines"])
def test_assembled_output_has_one_line_per_input_record(stand_in_endpoint, tmp_path, content_type, accept):
    frame = make_dataset(60, seed=46).drop(columns="label")
    frame.loc[7, "size_num"] = "not a number"  # an ERROR line in its place, not a missing one
    source = tmp_path / "in.data"
    if content_type == "text/csv":
        frame.to_csv(source, index=False, header=False)
    else:
        source.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    settings = TransformSettings(max_payload_mb=0.01, max_concurrent=2, strategy="MultiRecord",
                                 content_type=content_type, accept=accept)
    report = transform_files(stand_in_endpoint, [(source, tmp_path / "in.data.out")], settings)
    assert report["succeeded"] and not report["failed"]
    lines = (tmp_path / "in.data.out").read_bytes().split(b"\n")
    assert lines[-1] == b"" and b"" not in lines[:-1]  # no blank line anywhere
    assert len(lines) - 1 == len(frame)  # several requests (10 KB each), one line per record
    ids = [line.split(b",")[0].decode() if accept == "text/csv" else json.loads(line)["ID"] for line in lines[:-1]]
    assert ids == frame["ID"].tolist()
    assert b"is not a number" in lines[7]  # the bad record: an error in its place


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
    for definition in metric_definitions(problem_type="multiclass"):  # the example data has four classes
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
        assert out.read_bytes().count(b"\n") == len(frame) and b"\n\n" not in out.read_bytes()  # no blank lines
        predicted = pd.read_csv(out, header=None, names=["ID", "label"], dtype=str)
        assert predicted["ID"].tolist() == frame["ID"].tolist()
        assert set(predicted["label"]) <= {"alpha", "beta", "gamma", "delta"}


def test_sharded_instances_get_files_by_turns_and_too_few_files_are_refused(tmp_path):
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).write_text("ID,x_num,label\n1,2,a\n")
    assert shards(tmp_path, 2, "FullyReplicated") == [channel_files(tmp_path)] * 2
    assert [[p.name for p in part] for part in shards(tmp_path, 2, "ShardedByS3Key")] == [["a.csv", "c.csv"],
                                                                                        ["b.csv"]]
    with pytest.raises(ValueError, match="ShardedByS3Key with 4 instances needs at least 4 training files"):
        shards(tmp_path, 4, "ShardedByS3Key")
    done = subprocess.run([sys.executable, "-m", "multimodal.tools.cli", "local", "train", "--train", str(tmp_path),
                           "--out", str(tmp_path / "out"), "--instance-count", "4", "--distribution",
                           "ShardedByS3Key"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "needs at least 4 training files" in done.stderr, done.stderr


@pytest.mark.slow
def test_two_instances_run_as_processes_with_their_own_opt_ml(tmp_path):
    data = make_dataset(200, seed=41, with_images=False)
    data.to_csv(tmp_path / "train.csv", index=False)
    code = local_train(train=tmp_path / "train.csv", out=tmp_path / "job", instance_count=2,
                       hyperparameters={"quality": "toy", "n_mins": "0", "n_secs": "20", "n_folds": "2"})
    assert code == 0 and (tmp_path / "job" / "model.tar.gz").is_file()
    for k, host in enumerate(["algo-1", "algo-2"]):
        root = tmp_path / "job" / "opt_ml" / host
        config = json.loads((root / "input" / "config" / "resourceconfig.json").read_text())
        assert config == {"current_host": host, "hosts": ["algo-1", "algo-2"], "network_interface_name": "eth0"}
        assert (root / "input" / "data" / "train").is_dir()
        assert bool(list((root / "model").iterdir())) == (k == 0)  # only the head writes a model
    metrics = json.loads((tmp_path / "job" / "opt_ml" / "algo-1" / "output" / "data" / "metrics.json").read_text())
    assert {e["host"] for e in metrics["cluster"]["embedding"]} == {"algo-1", "algo-2"}


@pytest.mark.slow
def test_the_regression_example_trains_and_batch_transforms_a_price(tmp_path):
    """`multimodal example --regression`: local training job and batch transform of a regression model."""
    result = subprocess.run([sys.executable, "-m", "multimodal.tools.cli", "example", "--regression", "--rows", "150",
                             "--minutes", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout
    summary = re.search(r"RMSE ([0-9.]+), R² (-?[0-9.]+) \(fused; the price's standard deviation is ([0-9.]+)\)",
                        result.stdout)
    assert summary, result.stdout
    rmse, std = float(summary.group(1)), float(summary.group(3))
    assert rmse < std  # better than predicting the mean price
    predictions = pd.read_csv(tmp_path / "predictions" / "test.csv.out", header=None, names=["ID", "prediction"])
    assert predictions["ID"].str.startswith("r2-").all() and predictions["prediction"].dtype == float
    assert (tmp_path / "job" / "opt_ml" / "output" / "data" / "predicted_vs_actual.png").is_file()


def test_the_images_directory_becomes_a_replicated_images_channel(tmp_path):
    from multimodal.tools.local_training import layout_training_root
    source = tmp_path / "pictures"
    (source / "photos" / "sub dir").mkdir(parents=True)
    (source / "photos" / "sub dir" / "ünï 1.jpg").write_bytes(b"jpeg bytes")
    (tmp_path / "train.csv").write_text("ID,photo_image,label\n1,photos/sub dir/ünï 1.jpg,a\n")
    root = tmp_path / "opt_ml"
    layout_training_root(root, train=tmp_path / "train.csv", validation=None, hyperparameters={},
                         distribution="ShardedByS3Key", images=source, images_mode="FastFile")
    declared = json.loads((root / "input" / "config" / "inputdataconfig.json").read_text())
    assert declared["images"] == {"ContentType": "application/x-image", "TrainingInputMode": "FastFile",
                                  "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    assert declared["train"]["S3DistributionType"] == "ShardedByS3Key"
    copied = root / "input" / "data" / "images" / "photos" / "sub dir" / "ünï 1.jpg"
    assert copied.read_bytes() == b"jpeg bytes"
    with pytest.raises(FileNotFoundError, match="the images directory does not exist"):
        layout_training_root(root, train=tmp_path / "train.csv", validation=None, hyperparameters={},
                             images=tmp_path / "absent")
