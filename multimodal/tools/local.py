"""Local SageMaker emulation: training jobs and batch transforms without an AWS account.

Training lays out the ``/opt/ml`` tree SageMaker gives a container, runs the entrypoint (in this process's
environment, or in the training image with ``docker run``), and packages ``model.tar.gz`` and
``output.tar.gz`` as SageMaker does. A transform extracts a ``model.tar.gz``, starts the inference server
(a local ``multimodal-serve``, or the inference image), and replays what batch transform does: ping, ask
``/execution-parameters``, split input files on ``\\n``, pack MULTI_RECORD requests up to MaxPayloadInMB, send
them with MaxConcurrentTransforms in flight, and write ``<file>.out`` assembled as SageMaker does (AssembleWith=Line:
each response followed by a newline).
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
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from multimodal.sagemaker.contract import CSV, IMAGE_CONTENT_TYPE, PAYLOAD_BUDGET_MB, split_records
from multimodal.sagemaker.environment import HOSTS_ADDRESSES, HOSTS_PORT, ML_ROOT, NODE_CPUS, RAY_PORT, child_environment
from multimodal.sagemaker.opt_ml import (FAILURE_LIMIT, HYPERPARAMETERS_FILE, IMAGES_CHANNEL, INPUT_DATA_CONFIG_FILE,
                                         RESOURCE_CONFIG_FILE, TRAIN_CHANNEL, VALIDATION_CHANNEL, Paths)
from multimodal.sagemaker.serving.launcher import IMAGE_DIR_ENV

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 240  # SageMaker gives an endpoint about 4 minutes to pass its first ping
RETRIES = 3  # batch transform retries a failed invocation up to 3 times


class TransformError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- training

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


# where a container sees the image directory of a local batch transform (mounted read-only)
CONTAINER_IMAGE_DIR = "/opt/multimodal/images"
# `docker run` flags of --read-only: nothing may be written outside /opt/ml and a /tmp in memory.
READ_ONLY_FLAGS = ["--read-only", "--tmpfs", "/tmp:rw,exec"]
# Ray's object store lives in /dev/shm; Docker's default 64 MB would push it to disk.
SHM_FLAGS = ["--shm-size", "1g"]


@dataclass
class Instance:
    host: str
    root: Path
    process: subprocess.Popen


def local_train(*, train: Path, out: Path, hyperparameters: Mapping[str, str], validation: Path | None = None,
                image: str | None = None, docker: str = "docker", read_only: bool = False, instance_count: int = 1,
                distribution: str = "FullyReplicated", cpus_per_instance: int | None = None,
                images: Path | None = None, images_mode: str = "File") -> int:
    """Run a training job locally; returns its exit code (the first host's). Artifacts land in ``out``.

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
    started = time.monotonic()
    if image:
        codes = _train_in_containers(image, docker, hosts, roots, read_only, cpus if instance_count > 1 else None)
    else:
        codes = _train_in_processes(hosts, roots, cpus if instance_count > 1 else None)
    code = codes[0]
    log.info("training job finished with exit code %d in %.0f s%s", code, time.monotonic() - started,
             f" (hosts: {', '.join(f'{h} {c}' for h, c in zip(hosts, codes))})" if instance_count > 1 else "")
    return _package(roots[0], out, code)


def _train_in_processes(hosts: list[str], roots: list[Path], cpus: int | None) -> list[int]:
    env = child_environment()
    if len(hosts) > 1:
        env.update({HOSTS_ADDRESSES.name: json.dumps({h: f"127.0.0.{k + 1}" for k, h in enumerate(hosts)}),
                    HOSTS_PORT.name: str(_free_port()), RAY_PORT.name: str(_free_port()), NODE_CPUS.name: str(cpus)})
    instances = [Instance(h, r, subprocess.Popen([sys.executable, "-m", "multimodal.sagemaker.training"],
                                                 env={**env, ML_ROOT.name: str(r.resolve())}, stdin=subprocess.DEVNULL))
                 for h, r in zip(hosts, roots)]
    return _wait_all(instances)


def _train_in_containers(image: str, docker: str, hosts: list[str], roots: list[Path], read_only: bool,
                         cpus: int | None) -> list[int]:
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


# ---------------------------------------------------------------------------------------------- transform

@dataclass
class TransformSettings:
    max_payload_mb: float | None = None  # None: ask the container, else 6
    max_concurrent: int | None = None  # None: ask the container, else 1
    strategy: str | None = None  # MultiRecord | SingleRecord; None: ask the container
    content_type: str = CSV
    accept: str = CSV
    split_type: str = "Line"  # Line | None
    assemble_with: str = "Line"  # Line: a newline after every response, as SageMaker's AssembleWith=Line | None


def _request(url: str, *, data: bytes | None = None, headers: Mapping[str, str] | None = None,
             timeout: float = 600.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}),
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_ping(endpoint: str, *, timeout: float = PING_TIMEOUT_SECONDS, alive: "callable | None" = None) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise TransformError("the inference server exited before answering /ping with 200 (see its log)")
        try:
            status, _ = _request(f"{endpoint}/ping", timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TransformError(f"{endpoint}/ping did not answer 200 within {timeout:.0f} s (last: {last})")


def resolve_settings(endpoint: str, settings: TransformSettings) -> TransformSettings:
    """Job settings override /execution-parameters, which override SageMaker's defaults."""
    status, body = _request(f"{endpoint}/execution-parameters", timeout=5.0)
    offered = json.loads(body) if status == 200 else {}
    strategy = settings.strategy or {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}.get(
        offered.get("BatchStrategy", ""), "MultiRecord")
    resolved = TransformSettings(
        max_payload_mb=settings.max_payload_mb or float(offered.get("MaxPayloadInMB", 6)),
        max_concurrent=settings.max_concurrent or int(offered.get("MaxConcurrentTransforms", 1)),
        strategy=strategy, content_type=settings.content_type, accept=settings.accept,
        split_type=settings.split_type, assemble_with=settings.assemble_with)
    if resolved.max_payload_mb * resolved.max_concurrent > PAYLOAD_BUDGET_MB:
        raise TransformError(f"MaxConcurrentTransforms × MaxPayloadInMB must not exceed {PAYLOAD_BUDGET_MB} "
                             "(SageMaker's limit)")
    return resolved


def split_input(data: bytes, split_type: str) -> list[bytes]:
    """The records of one input file: SplitType=Line splits as SageMaker does (``contract.split_records``);
    SplitType=None keeps the file whole."""
    if split_type == "None":
        return [data] if data else []
    return split_records(data)


def pack_requests(records: list[bytes], *, max_bytes: int, multi_record: bool) -> list[bytes]:
    """Whole records per request, as many as fit in max_bytes (MULTI_RECORD), or one each (SINGLE_RECORD)."""
    bodies: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for number, record in enumerate(records, start=1):
        if len(record) > max_bytes:
            raise TransformError(f"record {number} is {len(record):,} bytes, over MaxPayloadInMB "
                                 f"({max_bytes:,} bytes): raise the payload limit or shrink the record")
        extra = len(record) + (1 if current else 0)
        if current and (not multi_record or size + extra > max_bytes):
            bodies.append(b"\n".join(current))
            current, size, extra = [], 0, len(record)
        current.append(record)
        size += extra
    if current:
        bodies.append(b"\n".join(current))
    return bodies


def _invoke(endpoint: str, body: bytes, settings: TransformSettings) -> bytes:
    headers = {"Content-Type": settings.content_type, "Accept": settings.accept}
    error = ""
    for attempt in range(1 + RETRIES):
        try:
            status, answer = _request(f"{endpoint}/invocations", data=body, headers=headers)
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            error = str(exc)
        else:
            if status == 200:
                return answer
            error = f"HTTP {status}: {answer[:500].decode(errors='replace')}"
            if status < 500:  # the request itself is wrong: retrying cannot help
                break
        time.sleep(min(2 ** attempt, 5))
    raise TransformError(error)


def transform_files(endpoint: str, inputs: Iterable[tuple[Path, Path]], settings: TransformSettings) -> dict:
    """Transform each (input file, output file) pair; a failed request fails its file, which gets no output."""
    settings = resolve_settings(endpoint, settings)
    max_bytes = int(settings.max_payload_mb * 1024 * 1024)
    log.info("transform settings: MaxPayloadInMB=%s MaxConcurrentTransforms=%d BatchStrategy=%s",
             settings.max_payload_mb, settings.max_concurrent, settings.strategy)
    report = {"succeeded": [], "failed": {}}
    jobs: list[tuple[Path, Path, list[bytes]]] = []
    for source, target in inputs:
        try:
            records = split_input(source.read_bytes(), settings.split_type)
            jobs.append((source, target, pack_requests(records, max_bytes=max_bytes,
                                                       multi_record=settings.strategy == "MultiRecord")))
        except TransformError as exc:
            report["failed"][str(source)] = str(exc)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=settings.max_concurrent) as pool:
        futures = {source: (target, [pool.submit(_invoke, endpoint, body, settings) for body in bodies])
                   for source, target, bodies in jobs}
        for source, (target, pending) in futures.items():
            try:
                answers = [f.result() for f in pending]
            except TransformError as exc:
                report["failed"][str(source)] = str(exc)
                log.error("%s failed: %s", source, exc)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(assemble(answers, settings.assemble_with))
            report["succeeded"].append(str(target))
            log.info("%s → %s (%d request(s))", source, target, len(pending))
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def assemble(responses: list[bytes], assemble_with: str) -> bytes:
    """The output file as SageMaker writes it: each response as it came, followed by a newline with
    AssembleWith=Line ("add a newline character at the end of every transformed record"), nothing with None.
    Nothing is stripped, so a server whose responses end with a newline shows its blank lines here too."""
    separator = b"\n" if assemble_with == "Line" else b""
    return b"".join(response + separator for response in responses)


def input_output_pairs(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for item in inputs:
        if item.is_dir():
            for path in channel_files(item):
                pairs.append((path, output / path.relative_to(item).with_name(path.name + ".out")))
        else:
            pairs.append((item, output / (item.name + ".out")))
    return pairs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def extract_model(archive: Path, target: Path) -> Path:
    """Extract model.tar.gz as SageMaker does before the container starts (refusing paths outside target)."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target


def local_transform(*, model: Path, inputs: list[Path], output: Path, settings: TransformSettings,
                    image: str | None = None, network_none: bool = False, workdir: Path | None = None,
                    docker: str = "docker", env: Mapping[str, str] | None = None, read_only: bool = False,
                    images: Path | None = None) -> dict:
    """Run a batch transform against a model.tar.gz; returns the per-file report. ``images``: the directory that
    relative ``_image`` paths of the records point into (the server's MULTIMODAL_IMAGE_DIR; in a container, mounted
    read-only)."""
    import tempfile
    work = Path(workdir or tempfile.mkdtemp(prefix="multimodal-transform-"))
    root = work / "opt_ml"
    extract_model(model, root / "model")
    output.mkdir(parents=True, exist_ok=True)
    server_env = {"SAGEMAKER_BATCH": "true", **(env or {})}
    mounts = []
    if images is not None:
        if not images.is_dir():
            raise FileNotFoundError(f"{images}: the images directory does not exist")
        server_env[IMAGE_DIR_ENV] = CONTAINER_IMAGE_DIR if image else str(images.resolve())
        mounts = ["-v", f"{images.resolve()}:{CONTAINER_IMAGE_DIR}:ro"] if image else []
    if settings.max_payload_mb:
        server_env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = f"{settings.max_payload_mb:g}"
    if image and network_none:
        return _transform_in_isolated_container(image, root, inputs, output, settings, server_env, docker, read_only,
                                                mounts)
    port = _free_port()
    if image:
        name = f"multimodal-serve-{uuid.uuid4().hex[:8]}"
        command = [docker, "run", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                   *(READ_ONLY_FLAGS if read_only else []), *mounts,
                   "-v", f"{(root / 'model').resolve()}:{ML_ROOT.default}/model:ro"]
        for key, value in server_env.items():
            command += ["-e", f"{key}={value}"]
        server = subprocess.Popen(command + [image, "serve"], stdin=subprocess.DEVNULL)
    else:
        name = None
        server = subprocess.Popen(
            [sys.executable, "-m", "multimodal.sagemaker.serving"], stdin=subprocess.DEVNULL,
            env=child_environment(**server_env, **{ML_ROOT.name: str(root.resolve())},
                                  SAGEMAKER_BIND_TO_PORT=str(port), MULTIMODAL_BIND_HOST="127.0.0.1"))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(endpoint, alive=lambda: server.poll() is None)
        return transform_files(endpoint, input_output_pairs(inputs, output), settings)
    finally:
        if name:
            subprocess.call([docker, "stop", "--time", "30", name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        else:
            server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def _transform_in_isolated_container(image: str, root: Path, inputs: list[Path], output: Path,
                                     settings: TransformSettings, server_env: Mapping[str, str],
                                     docker: str, read_only: bool, mounts: list[str]) -> dict:
    """--network none leaves no port to publish: the transform client runs inside the server's own
    container (docker exec), on its loopback, so neither side has any network."""
    staged = root / "transform" / "input"
    for i, item in enumerate(inputs):
        target = staged / f"{i:03d}"
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            target.mkdir(parents=True)
            shutil.copy2(item, target / item.name)
    results = root / "transform" / "output"
    results.mkdir(parents=True, exist_ok=True)
    os.chmod(results, 0o777)  # the container may run as another user
    name = f"multimodal-serve-{uuid.uuid4().hex[:8]}"
    command = [docker, "run", "-d", "--rm", "--name", name, "--network", "none", *(READ_ONLY_FLAGS if read_only else []),
               *mounts, "-v", f"{(root / 'model').resolve()}:{ML_ROOT.default}/model:ro",
               "-v", f"{(root / 'transform').resolve()}:{ML_ROOT.default}/transform"]
    for key, value in server_env.items():
        command += ["-e", f"{key}={value}"]
    subprocess.run(command + [image, "serve"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    report: dict = {"succeeded": [], "failed": {}}
    try:
        for staged_item in sorted(staged.iterdir()):
            inside = f"{ML_ROOT.default}/transform/output/{staged_item.name}"
            client = [docker, "exec", name, "multimodal", "local", "transform", "--endpoint",
                      "http://127.0.0.1:8080", "--output", inside, "--content-type", settings.content_type,
                      "--accept", settings.accept, "--split-type", settings.split_type,
                      "--assemble-with", settings.assemble_with,
                      "--report", f"{inside}.report.json"]
            for flag, value in (("--max-payload-mb", settings.max_payload_mb),
                                ("--max-concurrent-transforms", settings.max_concurrent),
                                ("--batch-strategy", settings.strategy)):
                if value:
                    client += [flag, str(value)]
            code = subprocess.call(client + [f"{ML_ROOT.default}/transform/input/{staged_item.name}"],
                                   stdin=subprocess.DEVNULL)
            part_file = results / f"{staged_item.name}.report.json"
            part = json.loads(part_file.read_text()) if part_file.is_file() else {
                "succeeded": [], "failed": {str(staged_item): f"transform client exited with code {code}"}}
            report["succeeded"] += part["succeeded"]
            report["failed"].update(part["failed"])
            # outputs mirror the inputs' relative names, as SageMaker mirrors S3 keys
            produced = results / staged_item.name
            for path in produced.rglob("*.out") if produced.is_dir() else []:
                target = output / path.relative_to(produced)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), target)
        return report
    finally:
        subprocess.call([docker, "stop", "--time", "30", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
