"""Local SageMaker emulation of batch transforms, without an AWS account: extracts a ``model.tar.gz``, starts the
inference server (a local ``multimodal-serve``, or the inference image), and replays what batch transform does:
ping, ask ``/execution-parameters``, split input files on ``\\n``, pack MULTI_RECORD requests up to MaxPayloadInMB,
send them with MaxConcurrentTransforms in flight, and write ``<file>.out`` assembled as SageMaker does
(AssembleWith=Line: each response followed by a newline). Training jobs: ``local_training``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
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

from multimodal.sagemaker.contract import API_BATCH_STRATEGIES, CSV, MULTI_RECORD, PAYLOAD_BUDGET_MB, split_records
from multimodal.sagemaker.environment import ML_ROOT, child_environment
from multimodal.sagemaker.serving.launcher import IMAGE_DIR_ENV

from .local_training import READ_ONLY_FLAGS, channel_files, free_port

# the emulation's one logger, as before it was split in two: its lines keep their name
log = logging.getLogger("multimodal.tools.local")

PING_TIMEOUT_SECONDS = 240  # SageMaker gives an endpoint about 4 minutes to pass its first ping


RETRIES = 3  # batch transform retries a failed invocation up to 3 times


# where a container sees the image directory of a local batch transform (mounted read-only)
CONTAINER_IMAGE_DIR = "/opt/multimodal/images"


class TransformError(RuntimeError):
    pass


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
    strategy = settings.strategy or API_BATCH_STRATEGIES.get(offered.get("BatchStrategy", ""),
                                                             API_BATCH_STRATEGIES[MULTI_RECORD])
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
            multi_record = settings.strategy == API_BATCH_STRATEGIES[MULTI_RECORD]
            jobs.append((source, target, pack_requests(records, max_bytes=max_bytes, multi_record=multi_record)))
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
    port = free_port()
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
