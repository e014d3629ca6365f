#!/usr/bin/env python
"""The same real-size photos given three ways — (a) base64 inside the CSV, (b) an ``images`` channel of files with
relative paths in the CSV, (c) ``s3://`` URIs on a local S3 server (moto's server mode on 127.0.0.1) — side by
side in one run: the training job's read + embed wall time and peak memory, and ``/invocations`` rows/s.

Usage::

    .venv/bin/python bench/image_sources.py [--photos 5000] [--work /tmp/image-sources] [--write-docs]

1. Writes ``--photos`` distinct JPEGs of 100 KB–1 MB (``multimodal.tools.synthetic.photo_jpeg``, sizes spread
   evenly over that range) once under WORK/photos, and three training CSVs of the same rows (ID, price_num,
   colour_cat, photo_image, label) that differ only in photo_image.
2. Runs the training job (``python -m multimodal.sagemaker.training.job``; quality=toy, n_folds=2, n_secs=30,
   efficientnet_lite0, joint_expert=false: the job is dominated by reading and embedding) once per source, one
   after another, polling the RSS of its process tree (``bench/train_memory.py``'s ``measure``). Reported: the
   job's wall time, its seconds from start to the end of embedding (the "embedded N images" log line), images/s,
   and the peak RSS of the job's process tree.
3. Serves the model of (a) (``python -m multimodal.sagemaker.serving``, one worker, MULTIMODAL_IMAGE_DIR set, the
   S3 server's endpoint in its environment) and posts the first 400 rows of each source, as many records per
   request as fit in 6 MB (at most 100): rows/s through /invocations.

The S3 server runs on the same machine: its CPU time competes with the job's, as a real S3 does not.
"""
from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import http.client
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from train_memory import EMBED_LINE, MB, measure  # noqa: E402

log = logging.getLogger("image_sources")
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Images as files and S3 objects"
HYPERPARAMETERS = {"quality": "toy", "n_folds": "2", "n_hours": "0", "n_mins": "0", "n_secs": "30",
                   "image_model": "efficientnet_lite0", "joint_expert": "false"}
SOURCES = ("base64", "images channel", "s3 URIs")
BUCKET = "bench-photos"
PAYLOAD_BYTES = 6 * 1024 * 1024
SERVED_ROWS = 400


def write_photos(directory: Path, count: int, kilobytes: float | None = None) -> list[Path]:
    """``count`` distinct JPEGs under ``directory`` (kept from an earlier run): of ``kilobytes`` KB, or by default
    of sizes spread evenly over 100 KB–1 MB."""
    from multimodal.tools.synthetic import photo_jpeg
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"{i:06d}.jpg"
        if not path.exists():
            path.write_bytes(photo_jpeg(kilobytes or 100 + 900 * (i % 19) / 18, seed=i))
        paths.append(path)
        if i and i % 500 == 0:
            log.info("photos: %d/%d", i, count)
    return paths


def write_csvs(work: Path, photos: list[Path]) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    colours = ["red", "blue", "green", "black"]
    out = {}
    for source in SOURCES:
        path = work / f"train-{source.replace(' ', '-')}.csv"
        out[source] = path
        if path.exists():
            continue
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ID", "price_num", "colour_cat", "photo_image", "label"])
            for i, photo in enumerate(photos):
                relative = f"photos/{photo.name}"
                value = {"base64": lambda: base64.b64encode(photo.read_bytes()).decode(),
                         "images channel": lambda: relative,
                         "s3 URIs": lambda: f"s3://{BUCKET}/catalogue/{relative}"}[source]()
                price = rng.normal()
                writer.writerow([f"p{i}", f"{price:.3f}", colours[i % 4], value, "dear" if price > 0 else "cheap"])
    return out


def job_root(work: Path, source: str, csv_path: Path, photos_dir: Path) -> Path:
    root = work / "jobs" / source.replace(" ", "-")
    if root.exists():
        shutil.rmtree(root)
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (root / "model").mkdir()
    (root / "output").mkdir()
    config.joinpath("hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    channels = {"train": {"ContentType": "text/csv", "TrainingInputMode": "File",
                          "S3DistributionType": "FullyReplicated"}}
    (root / "input" / "data" / "train").mkdir(parents=True)
    os.link(csv_path, root / "input" / "data" / "train" / "train.csv")
    if source == "images channel":
        channels["images"] = {"ContentType": "application/x-image", "TrainingInputMode": "File",
                              "S3DistributionType": "FullyReplicated"}
        target = root / "input" / "data" / "images" / "photos"
        target.mkdir(parents=True)
        for photo in photos_dir.iterdir():
            os.link(photo, target / photo.name)
    config.joinpath("inputdataconfig.json").write_text(json.dumps(channels))
    return root


def run_job(root: Path, env: dict[str, str], timeout: float) -> dict:
    env = dict(env, MULTIMODAL_ML_ROOT=str(root), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    measured = measure([sys.executable, "-m", "multimodal.sagemaker.training.job"], env, root, root, timeout)
    embedded = [(t, EMBED_LINE.search(line)) for t, line in measured.lines if EMBED_LINE.search(line)]
    if measured.exit_status != 0:
        raise SystemExit(f"the job in {root} failed (exit {measured.exit_status}): see {root / 'stderr.txt'}")
    end_of_embedding = max(t for t, _ in embedded)
    images = sum(int(m.group(1)) for _, m in embedded)
    return {"wall_s": round(measured.wall, 1), "read_and_embed_s": round(end_of_embedding, 1),
            "images_per_s": round(images / sum(float(m.group(2)) for _, m in embedded), 1),
            "peak_tree_mb": round(max(s.tree_rss for s in measured.samples) / MB, 1),
            "maxrss_mb": round(measured.maxrss / MB, 1)}


def serve(model_dir: Path, work: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    from support import free_port
    port = free_port()
    root = work / "serve"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(model_dir, root / "model")
    server = subprocess.Popen([sys.executable, "-m", "multimodal.sagemaker.serving"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "w"),
                              env=dict(env, MULTIMODAL_ML_ROOT=str(root), SAGEMAKER_BIND_TO_PORT=str(port),
                                       MULTIMODAL_BIND_HOST="127.0.0.1", SAGEMAKER_MODEL_SERVER_WORKERS="1",
                                       MULTIMODAL_IMAGE_DIR=str(work / "jobs" / "images-channel" / "input" / "data"
                                                                / "images")))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"the server did not become ready; see {work / 'serve.log'}")


def requests_of(csv_path: Path, rows: int) -> list[bytes]:
    """The first ``rows`` records without label or header, packed into bodies of at most 6 MB / 100 records."""
    csv.field_size_limit(2**31 - 1)  # base64 photos are longer than the csv module's default limit
    bodies, current, size = [], [], 0
    with open(csv_path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for k, row in enumerate(reader):
            if k == rows:
                break
            line = ",".join(row[:-1]).encode() + b"\n"
            if current and (size + len(line) > PAYLOAD_BYTES or len(current) == 100):
                bodies.append(b"".join(current))
                current, size = [], 0
            current.append(line)
            size += len(line)
    return bodies + ([b"".join(current)] if current else [])


def rows_per_second(port: int, bodies: list[bytes]) -> dict:
    started = time.monotonic()
    rows = 0
    for body in bodies:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
        response = connection.getresponse()
        text = response.read()
        if response.status != 200:
            raise SystemExit(f"/invocations answered {response.status}: {text[:500]!r}")
        rows += body.count(b"\n")
    seconds = time.monotonic() - started
    return {"rows_per_s": round(rows / seconds, 1), "records_per_request": round(rows / len(bodies), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/image-sources"))
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--reuse-jobs", action="store_true",
                        help="take the training jobs' figures from an earlier run in WORK (only serve again)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from support import S3Server
    work = args.work / str(args.photos)
    photos = write_photos(args.work / "photos", args.photos)
    photos_dir = work / "photos"
    if not photos_dir.exists():
        photos_dir.mkdir(parents=True)
        for photo in photos:
            os.link(photo, photos_dir / photo.name)
    csvs = write_csvs(work, photos)
    s3 = S3Server()
    try:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        for photo in photos:
            client.upload_file(str(photo), BUCKET, f"catalogue/photos/{photo.name}")
        env = {**os.environ, **s3.env}
        results = {}
        for source in SOURCES:
            done = work / "jobs" / source.replace(" ", "-") / "result.json"
            if args.reuse_jobs and done.is_file():
                results[source] = json.loads(done.read_text())
                continue
            log.info("training job, %s…", source)
            results[source] = run_job(job_root(work, source, csvs[source], photos_dir), env, timeout=3600)
            done.write_text(json.dumps(results[source]))
            log.info("  → %s", results[source])
        server, port = serve(work / "jobs" / "base64" / "model", work, env)
        try:
            for source in SOURCES:
                results[source].update(rows_per_second(port, requests_of(csvs[source], SERVED_ROWS)))
        finally:
            server.terminate()
            server.wait(60)
    finally:
        s3.stop()
    table = markdown(results, args, sum(p.stat().st_size for p in photos))
    print(table)
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "image_sources.json").write_text(json.dumps(results, indent=1))
    if args.write_docs:
        with open(DOCS, "a", encoding="utf-8") as doc:
            doc.write(f"\n\n{SECTION}\n\n{table}\n")
    return 0


def markdown(results: dict, args: argparse.Namespace, photo_bytes: int) -> str:
    lines = [f"Command: `python bench/image_sources.py --photos {args.photos}`  ",
             f"Run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M}Z, {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}); {args.photos} photos, {photo_bytes / MB:.0f} MB "
             "of JPEG; S3 = moto's server on the same machine.", "",
             "| source | job wall s | read + embed s | images/s | peak RSS MB (process tree) | /invocations rows/s "
             "| records per request |", "|---|---:|---:|---:|---:|---:|---:|"]
    for source, r in results.items():
        lines.append(f"| {source} | {r['wall_s']} | {r['read_and_embed_s']} | {r['images_per_s']} | "
                     f"{r['peak_tree_mb']} | {r['rows_per_s']} | {r['records_per_request']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
