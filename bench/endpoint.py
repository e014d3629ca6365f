#!/usr/bin/env python
"""The inference image as an endpoint runs it: start-up, one-row latency per content type and memory, by model
and by the container's memory limit (real-time endpoints, and serverless endpoints' `MemorySizeInMB`).

Usage::

    eval "$(tools/docker-up.sh)"
    .venv/bin/python bench/endpoint.py --image multimodal-ci-inference:test \\
        [--model NAME=MODEL_DIR=ROWS_CSV ...] [--memory-mb 0 1024 2048 3072] [--cpus 2] [--requests 30] [--write-docs]

Each model is a model directory (``model_config.json`` at its top) and a CSV of rows of its schema (a header;
``label`` is dropped). Without ``--model``: the server tests' small model (toy, 2 folds, a photo column), trained
once under ``--work``. For each model and memory limit (0: none, as a real-time instance of this machine's size)
the container starts as SageMaker starts it: ``docker run --memory M --memory-swap M --cpus C --read-only
--tmpfs /tmp -v MODEL:/opt/ml/model:ro IMAGE serve``, published on 127.0.0.1 only. Measured through HTTP:

* seconds from ``docker run`` to the first ``/ping`` 200 (serverless endpoints must answer within 180 s), and the
  worker count the server chose (its log);
* one-row requests, one at a time: ``text/csv`` without an image, ``text/csv`` with a ~300 KB photo,
  ``application/jsonlines`` and ``application/json`` (the same row): median and slowest;
* a request of rows with a ~300 KB photo each, just under 4 MB (a serverless endpoint's largest payload);
* memory: the container's cgroup peak (``memory.peak``: everything the limit counts, page cache of the model's
  files included) and the largest process's peak RSS (``VmHWM``: the worker), warm and after the requests.

A container killed by its limit is reported as such (the run goes on). Prints a markdown table, writes
bench/results/endpoint.json, and ``--write-docs`` appends the table to docs/benchmarks.md. Every container is
removed by name; every wait is bounded.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from encoders import photos  # noqa: E402
from serve_bench import csv_body, request, rss_mb, train_model  # noqa: E402
from startup_bench import directory_mb, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
START_TIMEOUT = 300.0
SERVERLESS_PAYLOAD = 4 * 1024 * 1024
CONTAINER = "multimodal-bench-endpoint"


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def parse_model(spec: str) -> tuple[str, Path, pd.DataFrame]:
    name, model, rows = spec.split("=", 2)
    return name, Path(model), pd.read_csv(rows, nrows=2000).drop(columns=["label"], errors="ignore")


def default_model(work: Path) -> tuple[str, Path, pd.DataFrame]:
    from multimodal.tools.synthetic import make_dataset
    model = work / "small" / "model"
    if not (model / "model_config.json").is_file():
        print("training the server tests' small model (about a minute)…", flush=True)
        train_model(model)
    return "small (toy, photo column)", model, make_dataset(200, seed=22).drop(columns=["label"])


def bodies(rows: pd.DataFrame) -> dict[str, tuple[str, bytes]]:
    """Request bodies by case: (content type, body)."""
    image = next((c for c in rows.columns if c.endswith("_image")), None)
    complete = rows.dropna()
    one = (complete if len(complete) else rows).head(1).copy()
    cases = {}
    if image:
        photo = base64.b64encode(photos(1, seed=4)[0]).decode()
        without, with_photo = one.copy(), one.copy()
        without[image], with_photo[image] = "", photo
        cases["1 row, CSV, no image"] = ("text/csv", csv_body(without))
        cases["1 row, CSV, one photo"] = ("text/csv", csv_body(with_photo))
        one = with_photo
    else:
        cases["1 row, CSV"] = ("text/csv", csv_body(one))
    record = json.loads(one.to_json(orient="records"))[0]
    cases["1 row, JSON Lines"] = ("application/jsonlines", json.dumps(record).encode())
    cases["1 row, JSON"] = ("application/json", json.dumps([record]).encode())
    big = rows.head(64).copy()
    if image:
        big[image] = [base64.b64encode(p).decode() for p in photos(len(big), seed=5)]
    body = csv_body(big)
    while len(body) > SERVERLESS_PAYLOAD:
        big = big.head(len(big) - 1)
        body = csv_body(big)
    cases[f"{len(big)} rows{', a photo each' if image else ''} ({len(body) / 2**20:.1f} MB)"] = ("text/csv", body)
    return cases


def container_memory(name: str) -> dict[str, float]:
    """cgroup peak and current (MB), and the largest process's peak RSS (MB)."""
    cgroup = docker("exec", name, "sh", "-c", "cat /sys/fs/cgroup/memory.peak /sys/fs/cgroup/memory.current "
                    "2>/dev/null || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes "
                    "/sys/fs/cgroup/memory/memory.usage_in_bytes").split()  # cgroup v2, else v1
    rss = []
    for line in docker("top", name, "-eo", "pid").splitlines()[1:]:
        try:
            rss.append(rss_mb(int(line))["peak_rss_mb"])
        except OSError:  # the process ended meanwhile
            continue
    return {"cgroup_peak_mb": round(int(cgroup[0]) / 2**20), "cgroup_now_mb": round(int(cgroup[1]) / 2**20),
            "worker_peak_rss_mb": round(max(rss, default=0))}


def start(image: str, model: Path, memory_mb: int, cpus: float) -> tuple[int, float, str]:
    """Runs the container; (port, seconds to the first /ping 200, the server's worker line)."""
    docker("rm", "-f", CONTAINER, check=False)
    port = free_port()
    limits = ["--memory", f"{memory_mb}m", "--memory-swap", f"{memory_mb}m"] if memory_mb else []
    started = time.monotonic()
    docker("run", "-d", "--name", CONTAINER, *limits, "--cpus", str(cpus), "--read-only", "--tmpfs", "/tmp",
           "-v", f"{model.resolve()}:/opt/ml/model:ro", "-p", f"127.0.0.1:{port}:8080", image, "serve")
    while time.monotonic() - started < START_TIMEOUT:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", CONTAINER))
        if not state["Running"]:
            raise RuntimeError(f"exited with {state['ExitCode']}" + (" (killed by its memory limit)"
                                                                     if state.get("OOMKilled") else ""))
        try:
            if request(port, "GET", "/ping", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError(f"no /ping 200 within {START_TIMEOUT:.0f} s")
    seconds = time.monotonic() - started
    logs = subprocess.run(["docker", "logs", CONTAINER], capture_output=True, text=True, timeout=60)
    line = next((x for x in (logs.stdout + logs.stderr).splitlines() if "worker(s)" in x), "")
    return port, seconds, line.split("INFO", 1)[-1].strip()


def latencies(port: int, content_type: str, body: bytes, count: int) -> dict:
    times = []
    for _ in range(count):
        started = time.monotonic()
        status, answer = request(port, "POST", "/invocations", body,
                                 {"Content-Type": content_type, "Accept": content_type if "json" in content_type
                                  else "text/csv"}, timeout=120)
        if status != 200:
            raise RuntimeError(f"{content_type}: {status} {answer[:300]!r}")
        times.append(time.monotonic() - started)
    times.sort()
    return {"p50_ms": round(1000 * statistics.median(times), 1), "max_ms": round(1000 * times[-1], 1)}


def run_one(image: str, model: Path, rows: pd.DataFrame, memory_mb: int, cpus: float, count: int) -> dict:
    result: dict = {"memory_mb": memory_mb, "model_mb": round(directory_mb(model), 1)}
    try:
        port, seconds, workers = start(image, model, memory_mb, cpus)
        result.update(ping_s=round(seconds, 1), workers=workers, warm=container_memory(CONTAINER))
        result["cases"] = {case: latencies(port, kind, body, count if case.startswith("1 row") else 3)
                           for case, (kind, body) in bodies(rows).items()}
        result["after"] = container_memory(CONTAINER)
    except (RuntimeError, OSError) as exc:
        state = docker("inspect", "--format", "{{.State.OOMKilled}}", CONTAINER, check=False)
        result["failed"] = str(exc) + (" (killed by its memory limit)" if state == "true" and "limit" not in
                                       str(exc) else "")
    finally:
        docker("rm", "-f", CONTAINER, check=False)
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| model (MB) | memory limit | workers | first /ping 200 s | case | p50 ms | slowest ms | "
             "container peak MB | worker peak RSS MB |", "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for r in results:
        limit = f"{r['memory_mb']} MB" if r["memory_mb"] else "none"
        head = f"| {r['name']} ({r['model_mb']}) | {limit} |"
        if "failed" in r:
            lines.append(f"{head} — | — | **{r['failed']}** | | | | |")
            continue
        workers = r["workers"].split(" worker(s)")[0].rsplit(" ", 1)[-1]
        for k, (case, figures) in enumerate(r["cases"].items()):
            memory = r["after"] if k == len(r["cases"]) - 1 else r["warm"] if k == 0 else {}
            start = f"{head} {workers} | {r['ping_s']} |" if k == 0 else "| | | | |"
            lines.append(f"{start} {case} | {figures['p50_ms']} | {figures['max_ms']} | "
                         f"{memory.get('cgroup_peak_mb', '')} | {memory.get('worker_peak_rss_mb', '')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=MODEL_DIR=ROWS_CSV")
    parser.add_argument("--memory-mb", type=int, nargs="+", default=[0, 1024, 2048, 3072])
    parser.add_argument("--cpus", type=float, default=float(len(os.sched_getaffinity(0))))
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/endpoint-bench"))
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    models = [parse_model(spec) for spec in args.model] or [default_model(args.work)]
    results = []
    for name, model, rows in models:
        for memory_mb in args.memory_mb:
            print(f"{name}, memory limit {memory_mb or 'none'} MB…", flush=True)
            results.append({"name": name, **run_one(args.image, model, rows, memory_mb, args.cpus, args.requests)})
            print(json.dumps(results[-1]), flush=True)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = markdown(results)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "endpoint.json").write_text(json.dumps({"when": when, "machine": platform.processor() or
                                                       platform.machine(), "cpus": args.cpus,
                                                       "results": results}, indent=1))
    if args.write_docs:
        with open(DOCS, "a", encoding="utf-8") as docs:
            docs.write(f"\n### The inference image as an endpoint ({when}, {args.cpus:g} CPUs)\n\n"
                       f"```\npython bench/endpoint.py {' '.join(sys.argv[1:])}\n```\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
