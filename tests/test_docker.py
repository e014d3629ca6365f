"""Docker end to end: the real Dockerfiles, a local Debian base image, training and batch transform in the
containers with no network. Starts dockerd itself when none is reachable (tools/docker-up.sh)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from support import assert_learnt, sh

from multimodal import MultimodalClassifier
from multimodal.tools.synthetic import make_dataset

# the first test builds the images (333 s from cached layers in CI here; from nothing, several times that)
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(3000)]

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture
def recording_docker(tmp_path, docker_env):
    """A docker CLI that records each command line, so the test can see how containers were started."""
    log = tmp_path / "docker-commands.log"
    wrapper = tmp_path / "docker"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {shutil.which("docker", path=docker_env["PATH"])} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def test_train_and_batch_transform_in_the_images_without_network_on_a_read_only_root(images, recording_docker, docker_env, tmp_path):
    training_image, inference_image = images
    docker, log = recording_docker
    train, test = make_dataset(300, seed=31), make_dataset(120, seed=32)
    train.to_csv(tmp_path / "train.csv", index=False)
    test.drop(columns="label").to_csv(tmp_path / "test.csv", index=False, header=False)
    cli = [sys.executable, "-m", "multimodal.tools.cli", "local"]
    sh(*cli, "train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "job"), "--image",
        training_image, "--docker", str(docker), "--hp", "quality=toy", "--hp", "image_model=efficientnet_lite0",
        "--hp", "n_mins=3", "--hp", "use_leftover_time=false", "--hp", "n_folds=2", "--hp", "text_model=minilm",
        "--hp", "parallel_folds=true",
        "--read-only", timeout=900, env=docker_env)
    assert (tmp_path / "job" / "model.tar.gz").is_file()
    sh(*cli, "transform", "--model", str(tmp_path / "job" / "model.tar.gz"), "--image", inference_image,
        "--network-none", "--read-only", "--docker", str(docker), "--output", str(tmp_path / "out"),
        str(tmp_path / "test.csv"), timeout=900, env=docker_env)
    predicted = pd.read_csv(tmp_path / "out" / "test.csv.out", header=None, names=["ID", "label"], dtype=str)
    assert predicted["ID"].tolist() == test["ID"].tolist()  # one line per record, in order
    assert_learnt(predicted["label"], test["label"])
    runs = [line for line in log.read_text().splitlines() if line.startswith("run ")]
    assert len(runs) == 2 and all("--network none" in line and "--read-only" in line for line in runs), runs


def test_serving_image_publishes_only_on_loopback(images, recording_docker, docker_env, tmp_path):
    """The default transform path: the port is published on 127.0.0.1 only."""
    training_image, inference_image = images
    docker, log = recording_docker
    make_dataset(120, seed=33, with_images=False).to_csv(tmp_path / "train.csv", index=False)
    rows = make_dataset(30, seed=34, with_images=False).drop(columns="label")
    rows.to_csv(tmp_path / "rows.csv", index=False, header=False)
    cli = [sys.executable, "-m", "multimodal.tools.cli", "local"]
    sh(*cli, "train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "job"), "--hp",
        "quality=toy", "--hp", "n_secs=60", "--hp", "n_folds=2", timeout=600, env=docker_env)
    sh(*cli, "transform", "--model", str(tmp_path / "job" / "model.tar.gz"), "--image", inference_image,
        "--docker", str(docker), "--output", str(tmp_path / "out"), str(tmp_path / "rows.csv"), timeout=600,
        env=docker_env)
    assert len((tmp_path / "out" / "rows.csv.out").read_text().splitlines()) == 30
    runs = [line for line in log.read_text().splitlines() if line.startswith("run ")]
    assert len(runs) == 1 and "-p 127.0.0.1:" in runs[0]


def test_two_training_containers_on_a_network_of_their_own_train_one_model(images, recording_docker, docker_env,
                                                                           tmp_path):
    """`--instance-count 2`: two training containers on an internal Docker network the emulator creates (and
    removes), read-only roots, forming one Ray cluster; the model is the head's and serves."""
    training_image, _ = images
    docker, log = recording_docker
    train, test = make_dataset(240, seed=35), make_dataset(80, seed=36)
    train.to_csv(tmp_path / "train.csv", index=False)
    cli = [sys.executable, "-m", "multimodal.tools.cli", "local"]
    sh(*cli, "train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "job"), "--image",
        training_image, "--docker", str(docker), "--instance-count", "2", "--cpus-per-instance", "1", "--hp",
        "quality=toy", "--hp", "image_model=efficientnet_lite0", "--hp", "n_secs=60", "--hp", "n_folds=2",
        "--read-only", timeout=900, env=docker_env)
    head, extra = tmp_path / "job" / "opt_ml" / "algo-1", tmp_path / "job" / "opt_ml" / "algo-2"
    metrics = json.loads((head / "output" / "data" / "metrics.json").read_text())
    assert {e["host"] for e in metrics["cluster"]["embedding"]} == {"algo-1", "algo-2"}
    assert {e["host"] for e in metrics["cluster"]["experts"].values()} == {"algo-1", "algo-2"}
    assert list((extra / "model").iterdir()) == [] and not (extra / "output" / "failure").exists()
    with tarfile.open(tmp_path / "job" / "model.tar.gz") as tar:
        tar.extractall(tmp_path / "model", filter="data")
    model = MultimodalClassifier.load(tmp_path / "model")
    assert_learnt(model.predict(test.drop(columns="label")), test["label"])
    commands = log.read_text().splitlines()
    created = [c for c in commands if c.startswith("network create")]
    assert len(created) == 1 and "--internal" in created[0]
    network = created[0].split()[-1]
    runs = [c for c in commands if c.startswith("run ")]
    assert len(runs) == 2 and all(f"--network {network}" in r and "--read-only" in r for r in runs), runs
    assert f"network rm {network}" in commands


def test_images_as_files_in_the_containers_without_network(images, recording_docker, docker_env, tmp_path):
    """The training container reads an images channel of files by relative path with --network none, and the
    served container reads them from its mounted MULTIMODAL_IMAGE_DIR; s3:// URIs fail the job at once with the
    network-isolation message (no route to S3), not row by row."""
    from multimodal.tools.synthetic import as_image_files
    training_image, inference_image = images
    docker, log = recording_docker
    pictures = tmp_path / "pictures"
    train = as_image_files(make_dataset(200, seed=37), pictures)
    test = as_image_files(make_dataset(60, seed=38), pictures)
    train.to_csv(tmp_path / "train.csv", index=False)
    test.drop(columns="label").to_csv(tmp_path / "test.csv", index=False, header=False)
    cli = [sys.executable, "-m", "multimodal.tools.cli", "local"]
    hps = ["--hp", "quality=toy", "--hp", "image_model=efficientnet_lite0", "--hp", "n_secs=60", "--hp",
           "n_folds=2"]
    sh(*cli, "train", "--train", str(tmp_path / "train.csv"), "--images", str(pictures), "--images-mode",
        "FastFile", "--out", str(tmp_path / "job"), "--image", training_image, "--docker", str(docker), *hps,
        "--read-only", timeout=900, env=docker_env)
    metrics = json.loads((tmp_path / "job" / "opt_ml" / "output" / "data" / "metrics.json").read_text())
    assert metrics["job"]["channels"]["images"]["bad_references"] == 0
    sh(*cli, "transform", "--model", str(tmp_path / "job" / "model.tar.gz"), "--image", inference_image,
        "--network-none", "--read-only", "--images", str(pictures), "--docker", str(docker), "--output",
        str(tmp_path / "out"), str(tmp_path / "test.csv"), timeout=900, env=docker_env)
    predicted = pd.read_csv(tmp_path / "out" / "test.csv.out", header=None, names=["ID", "label"], dtype=str)
    assert predicted["ID"].tolist() == test["ID"].tolist()
    assert_learnt(predicted["label"], test["label"])

    uris = train.assign(photo_image=[f"s3://bucket/{p}" if p else "" for p in train["photo_image"]])
    uris.to_csv(tmp_path / "train-s3.csv", index=False)
    failed = subprocess.run([*cli, "train", "--train", str(tmp_path / "train-s3.csv"), "--out",
                             str(tmp_path / "job-s3"), "--image", training_image, "--docker", str(docker), *hps],
                            cwd=ROOT, capture_output=True, text=True, timeout=900, env=docker_env)
    assert failed.returncode != 0
    reason = (tmp_path / "job-s3" / "failure").read_text()
    assert "network isolation" in reason and reason.count("s3://") <= 1, reason
