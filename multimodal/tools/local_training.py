"""Local SageMaker emulation of training jobs, without an AWS account: lays out the ``/opt/ml`` tree SageMaker
gives a container (``multimodal.sagemaker.opt_ml``), runs the entrypoint (in this process's environment, or in the
training image with ``docker run``; several hosts as processes on loopback addresses or containers on a Docker
network), and packages ``model.tar.gz`` and ``output.tar.gz`` as SageMaker does. Batch transforms:
``local_transform``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from multimodal.sagemaker.contract import CSV, IMAGE_CONTENT_TYPE
from multimodal.sagemaker.environment import (CHECKPOINTS, CHECKPOINTS_OFF, HOSTS_ADDRESSES, HOSTS_PORT, ML_ROOT,
                                              NODE_CPUS, RAY_PORT, child_environment)
from multimodal.sagemaker.opt_ml import (FAILURE_LIMIT, HYPERPARAMETERS_FILE, IMAGES_CHANNEL, INPUT_DATA_CONFIG_FILE,
                                         RESOURCE_CONFIG_FILE, TRAIN_CHANNEL, VALIDATION_CHANNEL, Paths)

# the emulation's one logger, as before it was split in two: its lines keep their name
log = logging.getLogger("multimodal.tools.local")

# `docker run` flags of --read-only: nothing may be written outside /opt/ml and a /tmp in memory.
READ_ONLY_FLAGS = ["--read-only", "--tmpfs", "/tmp:rw,exec"]


# Ray's object store lives in /dev/shm; Docker's default 64 MB would push it to disk.
SHM_FLAGS = ["--shm-size", "1g"]


def channel_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
        if files:
            return files
    raise FileNotFoundError(f"{source}: no such CSV file, or a directory with no files in it")


def layout_training_root(root: Path, *, train: Path | list[Path], validation: Path | None,
                         hyperparameters: Mapping[str, str], input_mode: str = "File", host: str = "algo-1",
                         hosts: list[str] | None = None, distribution: str = "FullyReplicated",
                         images: Path | None = None, images_mode: str = "File") -> None:
    """Write the /opt/ml tree SageMaker gives a training container (File mode: channel files copied in). The
    ``images`` directory becomes the ``images`` channel (every host gets all of it, as FullyReplicated does)."""
    if root.exists():
        shutil.rmtree(root)
    paths = Paths(root)
    config = paths.config_dir
    config.mkdir(parents=True)
    for directory in (paths.model_dir, paths.output_data_dir, root / "checkpoints"):
        directory.mkdir(parents=True)
    # SageMaker passes every hyperparameter value as a string
    (config / HYPERPARAMETERS_FILE).write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    channels = {TRAIN_CHANNEL: train, **({VALIDATION_CHANNEL: validation} if validation else {})}
    declared = {name: {"ContentType": CSV, "TrainingInputMode": input_mode, "S3DistributionType": distribution,
                       "RecordWrapperType": "None"} for name in channels}
    if images is not None:
        declared[IMAGES_CHANNEL] = {"ContentType": IMAGE_CONTENT_TYPE, "TrainingInputMode": images_mode,
                                    "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    (config / INPUT_DATA_CONFIG_FILE).write_text(json.dumps(declared))
    (config / RESOURCE_CONFIG_FILE).write_text(json.dumps(
        {"current_host": host, "hosts": hosts or [host], "network_interface_name": "eth0"}))
    for name, source in channels.items():
        target = paths.data_dir / name
        target.mkdir(parents=True)
        for i, path in enumerate(source if isinstance(source, list) else channel_files(source)):
            shutil.copy2(path, target / f"{i:03d}-{path.name}")
    if images is not None:
        copy_image_channel(images, paths.data_dir / IMAGES_CHANNEL)


def copy_image_channel(source: Path, target: Path) -> None:
    """The image directory as SageMaker downloads a channel: the same relative paths (hard links where the file
    system allows, copies elsewhere)."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: the images directory does not exist (give the folder the _image "
                                "paths are relative to)")

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def shards(train: Path, count: int, distribution: str) -> list[list[Path]]:
    """Each host's training files: all of them (FullyReplicated), or every count-th file (ShardedByS3Key, which
    splits a channel by S3 object)."""
    files = channel_files(train)
    if distribution == "FullyReplicated":
        return [files] * count
    if len(files) < count:
        raise ValueError(f"ShardedByS3Key with {count} instances needs at least {count} training files (one or more "
                         f"per instance); {train} has {len(files)}: split the CSV into several files")
    return [files[k::count] for k in range(count)]


def pack(directory: Path, archive: Path) -> Path:
    """tar.gz of a directory's contents with no leading folder, as SageMaker packs /opt/ml/model."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


@dataclass
class Instance:
    host: str
    root: Path
    process: subprocess.Popen


def local_train(*, train: Path, out: Path, hyperparameters: Mapping[str, str], validation: Path | None = None,
                image: str | None = None, docker: str = "docker", read_only: bool = False, instance_count: int = 1,
                distribution: str = "FullyReplicated", cpus_per_instance: int | None = None,
                images: Path | None = None, images_mode: str = "File", checkpoints: Path | None = None) -> int:
    """Run a training job locally; returns its exit code (the first host's). Artifacts land in ``out``.

    ``checkpoints``: a directory that stands for the job's CheckpointConfig (created if missing): the host that
    trains keeps its finished work there, and a job run again with the same directory resumes from it, as a
    managed spot training job restarted by SageMaker does.

    With ``instance_count`` > 1 the hosts algo-1 … algo-N each get their own /opt/ml (``out/opt_ml/algo-k``) and
    resourceconfig.json, and run as processes on loopback addresses 127.0.0.k (names mapped through
    MULTIMODAL_HOSTS_ADDRESSES) or, with ``image``, as containers on a Docker network of their own."""
    out.mkdir(parents=True, exist_ok=True)
    hosts = [f"algo-{k + 1}" for k in range(instance_count)]
    parts = shards(train, instance_count, distribution)
    roots = [out / "opt_ml"] if instance_count == 1 else [out / "opt_ml" / h for h in hosts]
    if instance_count > 1 and (out / "opt_ml").exists():
        shutil.rmtree(out / "opt_ml")
    for host, root, files in zip(hosts, roots, parts):
        layout_training_root(root, train=files, validation=validation, hyperparameters=hyperparameters, host=host,
                             hosts=hosts, distribution=distribution, images=images, images_mode=images_mode)
    for stale in ("model.tar.gz", "output.tar.gz", "failure"):
        (out / stale).unlink(missing_ok=True)
    cpus = cpus_per_instance or max(1, (os.cpu_count() or 1) // instance_count)
    if checkpoints is not None:
        checkpoints.mkdir(parents=True, exist_ok=True)
        log.info("checkpoint directory: %s (the training host's %s)", checkpoints,
                 Paths(ML_ROOT.default).checkpoint_dir)
    started = time.monotonic()
    if image:
        codes = _train_in_containers(image, docker, hosts, roots, read_only, cpus if instance_count > 1 else None,
                                     checkpoints)
    else:
        codes = _train_in_processes(hosts, roots, cpus if instance_count > 1 else None, checkpoints)
    code = codes[0]
    log.info("training job finished with exit code %d in %.0f s%s", code, time.monotonic() - started,
             f" (hosts: {', '.join(f'{h} {c}' for h, c in zip(hosts, codes))})" if instance_count > 1 else "")
    return _package(roots[0], out, code)


def _train_in_processes(hosts: list[str], roots: list[Path], cpus: int | None, checkpoints: Path | None
                        ) -> list[int]:
    env = child_environment()
    if len(hosts) > 1:
        env.update({HOSTS_ADDRESSES.name: json.dumps({h: f"127.0.0.{k + 1}" for k, h in enumerate(hosts)}),
                    HOSTS_PORT.name: str(free_port()), RAY_PORT.name: str(free_port()), NODE_CPUS.name: str(cpus)})
    # only the head trains and keeps checkpoints; the others get none, so that nothing they do could write there
    kept = {CHECKPOINTS.name: str(checkpoints.resolve()) if checkpoints else CHECKPOINTS_OFF}
    instances = [Instance(h, r, subprocess.Popen([sys.executable, "-m", "multimodal.sagemaker.training"],
                                                 env={**env, ML_ROOT.name: str(r.resolve()),
                                                      **(kept if k == 0 else {CHECKPOINTS.name: CHECKPOINTS_OFF})},
                                                 stdin=subprocess.DEVNULL))
                 for k, (h, r) in enumerate(zip(hosts, roots))]
    return _wait_all(instances)


def _train_in_containers(image: str, docker: str, hosts: list[str], roots: list[Path], read_only: bool,
                         cpus: int | None, checkpoints: Path | None) -> list[int]:
    suffix = uuid.uuid4().hex[:8]
    # --network none: SageMaker's network isolation, and proof that nothing is fetched at run time; several
    # instances share a network of their own (internal: no route out), where each resolves the others' names.
    network = "none"
    if len(hosts) > 1:
        network = f"multimodal-train-{suffix}"
        subprocess.run([docker, "network", "create", "--internal", network], check=True, stdout=subprocess.DEVNULL)
    try:
        instances = []
        for host, root in zip(hosts, roots):
            command = [docker, "run", "--rm", "--name", f"multimodal-train-{suffix}-{host}", "--network", network,
                       *(READ_ONLY_FLAGS if read_only else []), "-v", f"{root.resolve()}:{ML_ROOT.default}"]
            if checkpoints is not None and host == hosts[0]:
                command += ["-v", f"{checkpoints.resolve()}:{Paths(ML_ROOT.default).checkpoint_dir}"]
            if len(hosts) > 1:
                command += ["--hostname", host, "--network-alias", host, *SHM_FLAGS, "--cpus", str(cpus),
                            "-e", f"{NODE_CPUS.name}={cpus}"]
            command += [image, "train"]
            log.info("running %s", " ".join(command))
            instances.append(Instance(host, root, subprocess.Popen(command, stdin=subprocess.DEVNULL)))
        return _wait_all(instances)
    finally:
        if len(hosts) > 1:
            subprocess.run([docker, "network", "rm", network], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_all(instances: list[Instance]) -> list[int]:
    try:
        return [i.process.wait() for i in instances]
    finally:
        for instance in instances:  # interrupted: stop them all
            if instance.process.poll() is None:
                instance.process.terminate()
                instance.process.wait(60)


def _package(root: Path, out: Path, code: int) -> int:
    paths = Paths(root)
    if any(paths.output_data_dir.iterdir()):
        pack(paths.output_data_dir, out / "output.tar.gz")
    failure = paths.failure_file
    if code == 0:
        pack(paths.model_dir, out / "model.tar.gz")
        log.info("model artifact: %s (%.1f MB)", out / "model.tar.gz", (out / "model.tar.gz").stat().st_size / 1e6)
    else:
        reason = failure.read_text(errors="replace")[:FAILURE_LIMIT] if failure.is_file() else "(no failure reason written)"
        (out / "failure").write_text(reason)
        log.error("training job failed: %s", reason)
    return code


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
