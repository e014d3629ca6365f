"""Multi-instance training jobs: several real `multimodal-train` processes over loopback addresses, each with its
own /opt/ml and resourceconfig.json, forming one Ray cluster (multimodal/sagemaker/training/raycluster.py).

Host names resolve through MULTIMODAL_HOSTS_ADDRESSES (algo-1 → 127.0.0.1, algo-2 → 127.0.0.2), or are IP literals.
The head's status service listens on 127.0.0.1 only, on a free port; the Ray head on another free port. Each
host offers 1 CPU to Ray. Every process started is stopped by its PID (and its Ray node with it) in a finally
block.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from support import assert_learnt, free_port
from test_job import FAST, assert_failed_cleanly, environment, layout, run_job, sdk_hyperparameters, to_csv
from test_launcher import Server, model_root

from multimodal import MultimodalClassifier
from multimodal.core.artifact import CONFIG_FILE
from multimodal.tools.synthetic import make_dataset

HEAD, EXTRA, ABSENT = "127.0.0.1", "127.0.0.2", "127.0.0.3"
ADDRESSES = {"algo-1": HEAD, "algo-2": EXTRA}
# A 5 s budget: a head fails or trains in seconds once the hosts are up.
TINY = {"quality": "toy", "n_folds": 2, "n_hours": 0, "n_mins": 0, "n_secs": 5, "n_epochs": 20}
TINY_STRINGS = {k: str(v) for k, v in TINY.items()}
# Text, numbers and categories: four experts (text, num, cat, joint), enough to use both hosts.
TRAIN = {"quality": "toy", "n_folds": "2", "n_hours": "0", "n_mins": "0", "n_secs": "40", "n_epochs": "30"}


def host_root(root: Path, current: str, hosts: list[str], *, hyperparameters: dict, data: pd.DataFrame | None,
              distribution: str = "FullyReplicated") -> Path:
    channels = {"train": {"t.csv": to_csv(data)}} if data is not None else None
    root = layout(root, hyperparameters=hyperparameters, channels=channels,
                  resource={"current_host": current, "hosts": hosts, "network_interface_name": "eth0"})
    config = root / "input" / "config" / "inputdataconfig.json"
    config.write_text(config.read_text().replace("FullyReplicated", distribution))
    return root


def numbers_only(n_rows: int = 60) -> pd.DataFrame:
    return make_dataset(n_rows, seed=5, with_images=False)[["ID", "size_num", "weight_num", "label"]]


@dataclass
class Host:
    root: Path
    process: subprocess.Popen
    log: Path

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.root.name} still running after {timeout} s:\n{self.text[-3000:]}") from None

    def kill_tree(self) -> None:
        """SIGKILL to the host's process group: the job and its Ray node, as when an instance dies."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


@contextlib.contextmanager
def hosts_running(port: int, timeout_s: float = 60) -> Iterator[Callable[[Path], Host]]:
    """Yields start(root) -> Host; every process group started is killed (by PID) on the way out."""
    started: list[Host] = []
    ray_port = free_port(HEAD)

    def start(root: Path) -> Host:
        env = dict(environment(root), MULTIMODAL_HOSTS_PORT=str(port), MULTIMODAL_HOSTS_BIND=HEAD,
                   MULTIMODAL_HOSTS_TIMEOUT=str(timeout_s), MULTIMODAL_RAY_PORT=str(ray_port),
                   MULTIMODAL_NODE_CPUS="1", MULTIMODAL_HOSTS_ADDRESSES=json.dumps(ADDRESSES))
        log_path = root.parent / f"{root.name}.log"
        with open(log_path, "w") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "multimodal.sagemaker.training.job"], env=env,
                                       stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        started.append(Host(root, process, log_path))
        return started[-1]

    try:
        yield start
    finally:
        for host in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.process.pid, signal.SIGKILL)
            host.process.wait(30)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def assert_model_intact(root: Path) -> dict:
    entries = sorted(p.name for p in (root / "model").iterdir())
    assert CONFIG_FILE in entries and ".partial" not in entries, entries
    return json.loads((root / "model" / CONFIG_FILE).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("distribution", ["FullyReplicated", "ShardedByS3Key"])
def test_two_hosts_train_one_model_on_a_ray_cluster(tmp_path, distribution):
    """The extra host starts first; both hosts embed and fit experts; only the head writes a model, which
    serves; hyperparameters are written as the SageMaker SDK writes them."""
    data, test = make_dataset(300, seed=5, with_images=False), make_dataset(100, seed=6, with_images=False)
    parts = (data, data) if distribution == "FullyReplicated" else (data.iloc[:140], data.iloc[140:])
    hosts = ["algo-2", "algo-1"]  # unsorted, as a hand-written file may be: the head is the first once sorted
    written = sdk_hyperparameters({k: (int(v) if v.isdigit() else v) for k, v in TRAIN.items()})
    head_root = host_root(tmp_path / "head", "algo-1", hosts, hyperparameters=written, data=parts[0],
                          distribution=distribution)
    extra_root = host_root(tmp_path / "extra", "algo-2", hosts, hyperparameters=written, data=parts[1],
                           distribution=distribution)
    with hosts_running(free_port(HEAD)) as start:
        extra = start(extra_root)
        wait_until(lambda: "waiting for the training host algo-1" in extra.text, 30, "the extra host to start")
        head = start(head_root)
        assert head.wait(240) == 0, head.text[-5000:]
        assert extra.wait(60) == 0, extra.text[-3000:]
    config = assert_model_intact(head_root)
    report = config["metrics"]["cluster"]
    assert {e["host"] for e in report["embedding"]} == {"algo-1", "algo-2"}
    assert all(e["batches"] >= 1 for e in report["embedding"])
    assert {e["host"] for e in report["experts"].values()} == {"algo-1", "algo-2"}, report["experts"]
    assert config["metrics"]["rows"]["train"] + config["metrics"]["rows"]["validation"] == 300 \
        or config["metrics"]["rows"]["train"] == 300
    assert "all 2 hosts joined the Ray cluster" in head.text
    assert "joined the Ray cluster of algo-1" in extra.text and "the training host algo-1 succeeded" in extra.text
    assert list((extra_root / "model").iterdir()) == [] and list((extra_root / "output").iterdir()) == []
    assert not (head_root / "output" / "failure").exists()
    model = MultimodalClassifier.load(head_root / "model")
    assert_learnt(model.predict(test.drop(columns=["label"])), test["label"])
    server = Server(model_root(head_root / "model", tmp_path / "serve"), tmp_path / "serve")
    try:
        server.wait_ready()
        status, _, body, _ = server.invoke(test.drop(columns=["label"]).to_csv(index=False, header=False).encode())
    finally:
        server.stop()
    assert status == 200, body
    lines = body.decode().splitlines()
    assert [line.split(",")[0] for line in lines] == test["ID"].astype(str).tolist()


@pytest.mark.slow
def test_a_host_killed_mid_job_fails_the_head_with_a_reason_in_bounded_time(tmp_path):
    data = make_dataset(300, seed=5, with_images=False)
    hosts = ["algo-1", "algo-2"]
    slow = {**TRAIN, "n_secs": "120"}
    head_root = host_root(tmp_path / "head", "algo-1", hosts, hyperparameters=slow, data=data)
    extra_root = host_root(tmp_path / "extra", "algo-2", hosts, hyperparameters=slow, data=data)
    with hosts_running(free_port(HEAD)) as start:
        head = start(head_root)
        extra = start(extra_root)
        wait_until(lambda: "expert(s) placed on 2 node(s)" in head.text or head.process.poll() is not None, 180,
                   "the head to submit the experts")
        time.sleep(3)
        extra.kill_tree()
        killed = time.monotonic()
        assert head.wait(120) == 1, head.text[-5000:]
        took = time.monotonic() - killed
    reason = (head_root / "output" / "failure").read_text()
    assert reason.startswith("Distributed training failed:"), reason
    assert "host(s) algo-2 left the Ray cluster while expert" in reason, reason
    assert took < 90, f"the head took {took:.0f} s to notice"
    assert list((head_root / "model").iterdir()) == []


def test_a_head_that_fails_fails_an_extra_host_that_starts_after_it(tmp_path):
    """The head fails in seconds (an invalid, SDK-quoted hyperparameter), before starting Ray, and waits for the
    extra host, which starts only then; the extra host exits 1 with the head's reason, never starts a Ray node
    and leaves its own model/ alone."""
    hosts = [HEAD, EXTRA]
    bad = {**TINY_STRINGS, "quality": json.dumps("tooy")}
    head_root = host_root(tmp_path / "head", HEAD, hosts, hyperparameters=bad, data=numbers_only())
    extra_root = host_root(tmp_path / "extra", EXTRA, hosts, hyperparameters=bad, data=numbers_only())
    (extra_root / "model" / "sentinel").write_text("not the extra host's to delete")
    with hosts_running(free_port(HEAD)) as start:
        head = start(head_root)
        wait_until(lambda: "waiting for 127.0.0.2 to receive this host's result" in head.text, 60,
                   "the head to fail and wait for the extra host")
        extra = start(extra_root)
        assert extra.wait(30) == 1, extra.text[-3000:]
        assert head.wait(30) == 1, head.text[-3000:]
    head_reason = (head_root / "output" / "failure").read_text()
    assert "quality='tooy' is not one of" in head_reason
    assert "Ray head started" not in head.text
    extra_reason = (extra_root / "output" / "failure").read_text()
    assert extra_reason.startswith("The training host 127.0.0.1 failed: Invalid hyperparameters: hyperparameter "
                                   "quality='tooy' is not one of"), extra_reason
    assert len(extra_reason.strip()) <= 1024
    assert sorted(p.name for p in (extra_root / "model").iterdir()) == ["sentinel"]
    assert "joined the Ray cluster" not in extra.text
    assert "every other host received this host's result" in head.text


def test_an_extra_host_whose_head_never_appears_fails_after_the_timeout(tmp_path):
    root = host_root(tmp_path / "extra", EXTRA, [HEAD, EXTRA], hyperparameters=TINY_STRINGS, data=None)
    (root / "model" / "sentinel").write_text("untouched")
    port = free_port(HEAD)  # nothing listens there
    with hosts_running(port, timeout_s=2) as start:
        extra = start(root)
        assert extra.wait(30) == 1, extra.text[-3000:]
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith(f"Host 127.0.0.2 could not follow the training host 127.0.0.1: could not reach the "
                             f"training host 127.0.0.1 on port {port} within 2 s"), reason
    assert "MULTIMODAL_HOSTS_PORT" in reason and len(reason.strip()) <= 1024
    assert sorted(p.name for p in (root / "model").iterdir()) == ["sentinel"]
    assert sorted(p.name for p in (root / "output").iterdir()) == ["failure"]


@pytest.mark.slow
def test_a_head_whose_other_host_never_joins_fails_after_the_timeout(tmp_path):
    root = host_root(tmp_path / "head", "algo-1", ["algo-1", "algo-2"], hyperparameters=TINY_STRINGS,
                     data=numbers_only())
    with hosts_running(free_port(HEAD), timeout_s=8) as start:
        head = start(root)
        assert head.wait(90) == 1, head.text[-3000:]
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("Invalid job configuration: host(s) algo-2 did not join the Ray cluster within 8 s"), \
        reason
    assert list((root / "model").iterdir()) == []


def test_a_head_whose_port_is_taken_fails_at_once_naming_the_setting(tmp_path):
    root = host_root(tmp_path / "head", HEAD, [HEAD, EXTRA], hyperparameters=TINY_STRINGS, data=numbers_only())
    with socket.create_server((HEAD, 0)) as taken:
        port = taken.getsockname()[1]
        with hosts_running(port) as start:
            head = start(root)
            assert head.wait(60) == 1, head.text[-3000:]
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith(f"Invalid job configuration: the head cannot listen on port {port}"), reason
    assert "MULTIMODAL_HOSTS_PORT" in reason
    assert "fitting on" not in head.text


def test_a_single_host_opens_no_port_and_starts_no_ray(tmp_path):
    """Port taken and set: a single host does not care, and gets as far as its (invalid) hyperparameters."""
    small = make_dataset(40, seed=3, with_images=False)
    root = layout(tmp_path, hyperparameters={**FAST, "n_epochs": "0"}, channels={"train": {"t.csv": to_csv(small)}})
    with socket.create_server((HEAD, 0)) as taken:
        environ = dict(os.environ, MULTIMODAL_HOSTS_PORT=str(taken.getsockname()[1]), MULTIMODAL_HOSTS_BIND=HEAD)
        with mock.patch.dict(os.environ, environ):
            job = run_job(root)
    assert_failed_cleanly(job, "Invalid hyperparameters", "n_epochs='0' is out of range")
    assert "head status service" not in job.stderr and "Ray" not in job.stderr


def test_host_addresses_must_be_a_json_object(tmp_path):
    root = host_root(tmp_path / "extra", "algo-2", ["algo-1", "algo-2"], hyperparameters=TINY_STRINGS, data=None)
    env = dict(environment(root), MULTIMODAL_HOSTS_ADDRESSES="algo-1=127.0.0.1")
    done = subprocess.run([sys.executable, "-m", "multimodal.sagemaker.training.job"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    reason = (root / "output" / "failure").read_text()
    assert "MULTIMODAL_HOSTS_ADDRESSES must be a JSON object" in reason, reason


@pytest.mark.slow
def test_two_hosts_read_their_own_images_channel(tmp_path):
    """ShardedByS3Key train, FullyReplicated images: each host embeds the files its own rows name from its own copy
    of the channel; a bad path on the extra host comes back to the head's bad_images.csv (bad_images=missing)."""
    from multimodal.tools.synthetic import as_image_files
    from test_image_channel import _with_images_channel
    pictures = tmp_path / "pictures"
    data = as_image_files(make_dataset(160, seed=7), pictures)
    head_part, extra_part = data.iloc[:80].copy(), data.iloc[80:].copy()
    extra_part.loc[90, "photo_image"] = "photos/typo.jpg"
    hosts = ["algo-1", "algo-2"]
    hyperparameters = {**TRAIN, "image_model": "efficientnet_lite0", "bad_images": "missing"}
    roots = []
    for name, current, part in (("head", "algo-1", head_part), ("extra", "algo-2", extra_part)):
        root = host_root(tmp_path / name, current, hosts, hyperparameters=hyperparameters, data=part,
                         distribution="ShardedByS3Key")
        roots.append(_with_images_channel(root, pictures))
    with hosts_running(free_port(HEAD)) as start:
        head, extra = start(roots[0]), start(roots[1])
        assert head.wait(300) == 0, head.text[-5000:]
        assert extra.wait(60) == 0, extra.text[-3000:]
    config = assert_model_intact(roots[0])
    assert {e["host"] for e in config["metrics"]["cluster"]["embedding"]} == {"algo-1", "algo-2"}
    assert config["metrics"]["bad_images"] == 1
    listed = pd.read_csv(roots[0] / "output" / "data" / "bad_images.csv", dtype=str)
    assert listed[["ID", "reference"]].values.tolist() == [["r7-00090", "photos/typo.jpg"]]
    assert "host algo-2" in listed["data"][0]
