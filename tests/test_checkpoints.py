"""Checkpoints (managed spot training): finished work is kept as it is done, taken back only when it was made for
the same fit and is whole, and a stopped fit or training job resumes from it."""
from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimodal import MultimodalClassifier
from multimodal.core import checkpoints as ck
from multimodal.core.checkpoints import Checkpoints
from multimodal.core.experts import Expert
from multimodal.sagemaker.training.checkpointing import data_fingerprint
from multimodal.sagemaker.training.channels import ChannelConfig
from multimodal.tools.synthetic import make_dataset

from support import assert_learnt
from test_job import ENTRYPOINT, environment, layout, to_csv

KEY = "a" * 64


def write_entry(store: Checkpoints, name: str = "piece", key: str = KEY, payload: bytes = b"x" * 1000) -> Path:
    store.save(name, key, lambda d: ((d / "sub").mkdir(), (d / "sub" / "data.bin").write_bytes(payload)))
    return store.root / name


def opened(directory: Path, *, data: str | None = "data-1", params: dict | None = None) -> Checkpoints:
    store = Checkpoints(directory, data=data)
    store.open(params or {"seed": 0})
    return store


# ---------------------------------------------------------------------------------------------- entries

def test_an_entry_is_taken_back_only_for_its_key_and_whole(tmp_path, caplog):
    store = opened(tmp_path)
    entry = write_entry(store)
    manifest = json.loads((entry / ck.MANIFEST).read_text())
    assert manifest["key"] == KEY and manifest["files"]["sub/data.bin"]["bytes"] == 1000
    assert store.find("piece", KEY) == entry and store.resumed == ["piece"]
    with caplog.at_level(logging.WARNING, logger="multimodal.core.checkpoints"):
        assert store.find("piece", "b" * 64) is None
    assert "made for other data, hyperparameters or code" in caplog.text


@pytest.mark.parametrize("damage, words", [
    (lambda e: (e / "sub" / "data.bin").write_bytes(b"y" * 1000), "differs from what was written"),
    (lambda e: (e / "sub" / "data.bin").write_bytes(b"x" * 10), "differs from what was written"),
    (lambda e: (e / "sub" / "data.bin").unlink(), "is missing"),
    (lambda e: (e / ck.MANIFEST).unlink(), "has no manifest"),
    (lambda e: (e / ck.MANIFEST).write_text("{trunc"), "manifest is unreadable"),
    (lambda e: (e / ck.MANIFEST).write_text('{"format": 99, "files": {}}'), "not one this version writes"),
], ids=["changed", "truncated", "missing file", "no manifest", "bad manifest", "other format"])
def test_a_damaged_or_incomplete_entry_is_ignored_with_a_warning(tmp_path, caplog, damage, words):
    store = opened(tmp_path)
    damage(write_entry(store))
    with caplog.at_level(logging.WARNING, logger="multimodal.core.checkpoints"):
        assert store.find("piece", KEY) is None
    assert "checkpoint piece ignored: " in caplog.text and words in caplog.text and "made again" in caplog.text
    assert store.resumed == []


def test_saving_again_replaces_the_entry_and_half_written_ones_are_removed_on_open(tmp_path):
    store = opened(tmp_path)
    write_entry(store, payload=b"old")
    write_entry(store, key="c" * 64, payload=b"new")
    assert store.find("piece", "c" * 64) is not None and store.find("piece", KEY) is None
    (store.root / f"{ck.PARTIAL}expert-text-1234").mkdir()  # a stop in the middle of a save
    (store.root / ".progress.json.1234.tmp").write_text("{")
    opened(tmp_path)
    assert sorted(p.name for p in store.root.iterdir()) == sorted([ck.PROGRESS, "piece"])


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_fit(tmp_path, caplog):
    store = opened(tmp_path)

    def fails(directory: Path) -> None:
        raise OSError(28, "No space left on device")
    with caplog.at_level(logging.WARNING, logger="multimodal.core.checkpoints"):
        store.save("piece", KEY, fails)
    assert "checkpoint piece not written (" in caplog.text and "No space left" in caplog.text
    assert not (store.root / "piece").exists() and store.saved == []
    assert [p.name for p in store.root.iterdir()] == [ck.PROGRESS]


def test_a_pickled_piece_that_does_not_load_is_made_again(tmp_path, caplog):
    store = opened(tmp_path)
    store.save_object("rows", KEY, {"ok": 1})
    assert store.load_object("rows", KEY) == {"ok": 1}
    store.save("rows", KEY, lambda d: (d / "object.pkl").write_bytes(pickle.dumps(1)[:-3]))  # whole, but unloadable
    with caplog.at_level(logging.WARNING, logger="multimodal.core.checkpoints"):
        assert store.load_object("rows", KEY) is None
    assert "does not load" in caplog.text and store.resumed == ["rows"]  # the first load only


# ---------------------------------------------------------------------------------------------- time spent

def test_the_time_spent_counts_across_attempts_of_the_same_fit_only(tmp_path):
    first = Checkpoints(tmp_path, data="data-1")
    assert first.open({"seed": 0}) == 0.0
    first.record_spent(42.5)
    again = Checkpoints(tmp_path, data="data-1")
    assert again.open({"seed": 0}) == 42.5
    assert json.loads((again.root / ck.PROGRESS).read_text())["attempts"] == 2
    assert Checkpoints(tmp_path, data="data-1").open({"seed": 1}) == 0.0  # other hyperparameters: another fit
    assert Checkpoints(tmp_path, data="data-2").open({"seed": 1}) == 0.0  # other data
    unnamed = Checkpoints(tmp_path, data=None)  # nothing says a restart reads the same data
    assert unnamed.open({"seed": 1}) == 0.0
    unnamed.record_spent(99)
    assert Checkpoints(tmp_path, data=None).open({"seed": 1}) == 0.0


def test_the_data_fingerprint_follows_the_files_and_is_withheld_where_a_host_sees_a_share(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    (train / "a.csv").write_text("ID,label,x_num\n1,a,1\n")
    images = tmp_path / "images"
    (images / "p").mkdir(parents=True)
    (images / "p" / "1.jpg").write_bytes(b"jpeg")
    configs = {"train": ChannelConfig("train", "File"), "images": ChannelConfig("images", "File")}
    first, _ = data_fingerprint(tmp_path, configs)
    assert first == data_fingerprint(tmp_path, configs)[0]
    (train / "a.csv").write_text("ID,label,x_num\n1,a,2\n")  # same size, other bytes
    second, _ = data_fingerprint(tmp_path, configs)
    (images / "p" / "2.jpg").write_bytes(b"jpeg")
    assert len({first, second, data_fingerprint(tmp_path, configs)[0]}) == 3
    pipe = {"train": ChannelConfig("train", "Pipe")}
    assert data_fingerprint(tmp_path, pipe) == (None, "channel 'train' is in Pipe mode (its stream cannot be read "
                                                      "twice)")
    sharded = {"train": ChannelConfig("train", "File", distribution="ShardedByS3Key")}
    assert data_fingerprint(tmp_path, sharded)[0] is not None
    assert "sees only its share" in data_fingerprint(tmp_path, sharded, hosts=2)[1]


# ---------------------------------------------------------------------------------------------- the estimator

HYPERPARAMETERS = {"quality": "toy", "n_folds": 2, "n_mins": 0, "n_secs": 40, "n_epochs": 40, "patience": 5,
                   "image_model": "efficientnet_lite0"}


class Stopped(BaseException):
    """Stands for the training job's JobStopped (SIGTERM): a BaseException no library swallows."""


@pytest.fixture
def expert_fits(monkeypatch):
    """The names of the experts ``Expert.fit`` is asked to fit; ``stop_at[0] = k`` stops the k-th fit."""
    calls: list[str] = []
    stop_at: list[int | None] = [None]
    original = Expert.fit.__func__

    def fit(cls, spec, *args, **kwargs):
        calls.append(spec.name)
        if stop_at[0] is not None and len(calls) == stop_at[0]:
            raise Stopped("signal SIGTERM")
        return original(cls, spec, *args, **kwargs)
    monkeypatch.setattr(Expert, "fit", classmethod(fit))
    return calls, stop_at


@pytest.mark.slow
def test_a_stopped_fit_resumes_with_what_it_finished_and_counts_its_time(tmp_path, caplog, expert_fits):
    calls, stop_at = expert_fits
    # no images: the job tests below resume embedded images; four experts here keep the three fits short
    data, test = make_dataset(150, seed=21, with_images=False), make_dataset(100, seed=22, with_images=False)
    stop_at[0] = 3
    with pytest.raises(Stopped):
        MultimodalClassifier(**HYPERPARAMETERS).fit(data, checkpoints=tmp_path)
    first_two = calls[:2]
    entries = sorted(p.name for p in (tmp_path / ck.SUBDIRECTORY).iterdir())
    assert entries == sorted([ck.PROGRESS, "rows", *(f"expert-{n}" for n in first_two)])
    spent = json.loads((tmp_path / ck.SUBDIRECTORY / ck.PROGRESS).read_text())["spent_seconds"]
    assert spent > 0

    calls.clear()
    stop_at[0] = None
    with caplog.at_level(logging.INFO):
        resumed = MultimodalClassifier(**HYPERPARAMETERS).fit(data, checkpoints=tmp_path)
    assert not set(first_two) & set(calls), "the experts the stopped fit finished were fitted again"
    assert sorted(calls + first_two) == sorted(resumed.expert_names_)
    assert resumed.metrics_["checkpoints"]["resumed"] == ["rows", *(f"expert-{n}" for n in first_two)]
    assert "read and embedded by an earlier attempt" in caplog.text
    assert resumed.metrics_["timings_seconds"]["total"] >= spent  # the budget counts the stopped attempt
    assert f"{spent:.0f} s of the time budget already spent" in caplog.text
    # same experts, and as accurate as a fit never stopped, within noise: 3 standard errors of the difference of
    # two accuracies on 100 rows is about 0.2
    rows, truth = test.drop(columns="label"), test["label"]
    accuracy = assert_learnt(resumed.predict(rows), truth, margin=0.1)
    calls.clear()
    uninterrupted = MultimodalClassifier(**HYPERPARAMETERS).fit(data)
    assert sorted(calls) == sorted(uninterrupted.expert_names_) == sorted(resumed.expert_names_)
    assert abs(accuracy - assert_learnt(uninterrupted.predict(rows), truth, margin=0.1)) <= 0.2

    calls.clear()
    again = MultimodalClassifier(**HYPERPARAMETERS).fit(data, checkpoints=tmp_path)
    assert calls == [] and again.metrics_["checkpoints"]["saved"] == []
    pd.testing.assert_frame_equal(again.predict_proba(test), resumed.predict_proba(test))


@pytest.mark.slow
def test_experts_of_another_fit_or_damaged_ones_are_fitted_again(tmp_path, caplog, expert_fits):
    calls, stop_at = expert_fits
    data = make_dataset(120, seed=23, with_images=False)
    stop_at[0] = 3  # two experts kept for seed 0 are enough to be taken (wrongly) by a fit with seed 7
    with pytest.raises(Stopped):
        MultimodalClassifier(**HYPERPARAMETERS).fit(data, checkpoints=tmp_path)
    assert len(list((tmp_path / ck.SUBDIRECTORY).glob("expert-*"))) == 2
    calls.clear()
    stop_at[0] = None
    with caplog.at_level(logging.WARNING):
        MultimodalClassifier(**{**HYPERPARAMETERS, "seed": 7}).fit(data, checkpoints=tmp_path)
    assert sorted(calls) == ["cat", "joint", "num", "text"], "experts kept for seed 0 were used by a fit with seed 7"
    assert "it was made for other data, hyperparameters or code" in caplog.text

    calls.clear()
    caplog.clear()
    predictor = tmp_path / ck.SUBDIRECTORY / "expert-text" / "predictor"
    damaged = max((p for p in predictor.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        model = MultimodalClassifier(**{**HYPERPARAMETERS, "seed": 7}).fit(data, checkpoints=tmp_path)
    assert calls == ["text"]
    assert "checkpoint expert-text ignored" in caplog.text and "damaged or copied incompletely" in caplog.text
    assert "expert-text" in model.metrics_["checkpoints"]["saved"]


# ---------------------------------------------------------------------------------------------- the training job

def job_layout(root: Path) -> Path:
    frame = make_dataset(150, seed=21)
    layout(root, hyperparameters={k: str(v) for k, v in HYPERPARAMETERS.items()},
           channels={"train": {"train.csv": to_csv(frame)}})
    (root / "checkpoints").mkdir()  # SageMaker creates the LocalPath for a job with a CheckpointConfig
    return root


def start_job(root: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([str(ENTRYPOINT)], env=environment(root), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def experts_kept(root: Path) -> list[str]:
    directory = root / "checkpoints" / ck.SUBDIRECTORY
    return sorted(p.name for p in directory.glob("expert-*")) if directory.is_dir() else []


def stop_after_two_experts(process: subprocess.Popen, root: Path, signum: int, log: Path) -> None:
    deadline = time.monotonic() + 240
    while len(experts_kept(root)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, log.read_text()[-3000:]
    os.killpg(process.pid, signum) if signum == signal.SIGKILL else process.send_signal(signum)
    process.wait(timeout=110)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_training_job_stopped_after_its_first_experts_resumes_from_its_checkpoints(tmp_path, signum):
    root = job_layout(tmp_path / "opt_ml")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    process = start_job(root, first_log)
    stop_after_two_experts(process, root, signum, first_log)
    assert process.returncode != 0
    kept = experts_kept(root)
    assert len(kept) >= 2
    if signum == signal.SIGTERM:
        assert "Training was stopped (signal SIGTERM)" in (root / "output" / "failure").read_text()
        assert f"kept in {root / 'checkpoints'} for the job's restart" in first_log.read_text()

    started = time.monotonic()
    second = start_job(root, second_log)
    assert second.wait(timeout=400) == 0, second_log.read_text()[-3000:]
    text = second_log.read_text()
    for entry in kept:
        assert f"expert {entry.removeprefix('expert-')}: fitted by an earlier attempt" in text
        assert f"expert {entry.removeprefix('expert-')}: fitting on" not in text
    assert "read and embedded by an earlier attempt" in text and "resuming attempt 2 of this fit" in text
    model = MultimodalClassifier.load(root / "model")
    assert set(model.expert_names_) == {"text", "num", "cat", "photo_image", "joint"}
    metrics = json.loads((root / "output" / "data" / "metrics.json").read_text())
    resumed = metrics["checkpoints"]["resumed"]
    assert resumed[0] == "rows" and sorted(resumed[1: 1 + len(kept)]) == kept
    test = make_dataset(100, seed=22)
    assert_learnt(model.predict(test.drop(columns="label")), test["label"], margin=0.1)
    assert time.monotonic() - started < 400


@pytest.mark.slow
def test_an_emulated_two_host_job_resumes_from_the_checkpoints_of_its_head(tmp_path):
    from multimodal.tools.local_training import local_train
    train = tmp_path / "train"
    train.mkdir()
    make_dataset(160, seed=24, with_images=False).to_csv(train / "train.csv", index=False)
    hp = {k: str(v) for k, v in {**HYPERPARAMETERS, "n_secs": 30}.items()}
    kept = tmp_path / "checkpoints"
    for attempt in (1, 2):
        code = local_train(train=train, out=tmp_path / f"job{attempt}", hyperparameters=hp, instance_count=2,
                           cpus_per_instance=1, checkpoints=kept)
        assert code == 0, (tmp_path / f"job{attempt}" / "failure").read_text() if code else ""
    entries = sorted(p.name for p in (kept / ck.SUBDIRECTORY).iterdir())
    assert entries == sorted([ck.PROGRESS, "rows", "fusion", *(f"expert-{n}" for n in ("text", "num", "cat", "joint"))])
    metrics = json.loads((tmp_path / "job2" / "opt_ml" / "algo-1" / "output" / "data" / "metrics.json").read_text())
    assert sorted(metrics["checkpoints"]["resumed"]) == sorted(e for e in entries if e != ck.PROGRESS)
    assert np.isfinite(metrics["validation"]["accuracy"])


def test_a_checkpoint_directory_that_cannot_be_created_leaves_the_fit_without_checkpoints(tmp_path, caplog):
    from multimodal.core.resume import NoCheckpoints, fit_checkpoints
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="multimodal.core.resume"):
        kept = fit_checkpoints(blocker / "ckpt", make_dataset(20, seed=1, with_images=False), None, None)
    assert type(kept) is NoCheckpoints and "the fit keeps no checkpoints" in caplog.text


def test_the_job_keeps_checkpoints_where_sagemaker_made_the_directory_or_where_it_is_told(tmp_path, monkeypatch):
    from multimodal.sagemaker.opt_ml import Paths
    from multimodal.sagemaker.training.checkpointing import checkpoint_directory
    paths = Paths(tmp_path)
    monkeypatch.delenv("MULTIMODAL_CHECKPOINTS", raising=False)
    assert checkpoint_directory(paths) is None  # no CheckpointConfig: SageMaker made no directory
    (tmp_path / "checkpoints").mkdir()
    assert checkpoint_directory(paths) == tmp_path / "checkpoints"
    monkeypatch.setenv("MULTIMODAL_CHECKPOINTS", "off")
    assert checkpoint_directory(paths) is None
    monkeypatch.setenv("MULTIMODAL_CHECKPOINTS", str(tmp_path / "elsewhere"))  # another LocalPath
    assert checkpoint_directory(paths) == tmp_path / "elsewhere"


def test_the_local_train_command_hands_its_checkpoint_directory_to_the_emulated_job(tmp_path, monkeypatch):
    from multimodal.tools import cli, local_training
    seen = {}
    monkeypatch.setattr(local_training, "local_train", lambda **kwargs: seen.update(kwargs) or 0)
    assert cli.main(["local", "train", "--train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out"),
                     "--checkpoints", str(tmp_path / "ckpt")]) == 0
    assert seen["checkpoints"] == tmp_path / "ckpt"
