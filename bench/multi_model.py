#!/usr/bin/env python
"""Multi-model endpoint benchmark: load and unload times, and the worker's memory per model.

Usage::

    .venv/bin/python bench/multi_model.py [--work DIR] [--models 20] [--concurrency 4] [--write-docs]

Uses the server tests' small model (``startup_bench``'s ``images`` model: toy quality, an image column;
trained once into ``--work``), copied ``--models`` times as SageMaker lays models out
(``<root>/models/<name>/model``). Starts the real server (``SAGEMAKER_MULTI_MODEL=true``) on 127.0.0.1, loads
and unloads one model first (the libraries a model needs stay imported: the baseline is measured after), then:
loads the models one at a time (seconds and RSS growth each), invokes each once (one CSV row), unloads them one at
a time (seconds each, RSS after), and loads them all again ``--concurrency`` at a time while /ping is measured.
Every wait is bounded; the server is stopped by its PID. Prints a markdown table; ``--write-docs`` also appends
it to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from startup_bench import (DOCS, HOST, ROOT, START_TIMEOUT, children, ensure_model, free_port, memory_mb, ping,
                           server_environment, stop)

ROW = ("m-1,great soft cotton shirt,red,3.5,120,\n").encode()


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 300.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json" if path == "/models" else "text/csv"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def timed(port: int, method: str, path: str, body: bytes | None = None) -> float:
    started = time.monotonic()
    status, answer = request(port, method, path, body)
    if status != 200:
        raise RuntimeError(f"{method} {path}: {status} {answer[:500]!r}")
    return time.monotonic() - started


def load_body(name: str, url: Path) -> bytes:
    return json.dumps({"model_name": name, "url": str(url)}).encode()


def run(root: Path, work: Path, urls: dict[str, Path], concurrency: int) -> dict:
    port = free_port()
    env = server_environment(ROOT, SAGEMAKER_BIND_TO_PORT=str(port), MULTIMODAL_BIND_HOST=HOST,
                             MULTIMODAL_ML_ROOT=str(root), SAGEMAKER_MULTI_MODEL="true",
                             MULTIMODAL_CACHE_DIR=str(work / "cache"), MULTIMODAL_LOG_LEVEL="warning")
    with open(work / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "multimodal.sagemaker.serving.launcher"], env=env, cwd=work,
                                stdout=log, stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while ping(port) != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the server did not start:\n{(work / 'server.log').read_text()[-3000:]}")
            time.sleep(0.1)
        workers = children(proc.pid)
        rss = lambda: memory_mb(workers[0])["rss_mb"]  # noqa: E731
        names = list(urls)
        first = timed(port, "POST", "/models", load_body(names[0], urls[names[0]]))
        timed(port, "DELETE", f"/models/{names[0]}")
        baseline = rss()
        loads, growth = [], []
        for name in names:
            before = rss()
            loads.append(timed(port, "POST", "/models", load_body(name, urls[name])))
            growth.append(rss() - before)
        full = rss()
        invokes = [timed(port, "POST", f"/models/{name}/invoke", ROW) for name in names]
        unloads = [timed(port, "DELETE", f"/models/{name}") for name in names]
        after = rss()
        pings, done = [], threading.Event()

        def pinger() -> None:
            while not done.is_set():
                started = time.monotonic()
                ping(port, timeout=5)
                pings.append(time.monotonic() - started)
                time.sleep(0.05)
        thread = threading.Thread(target=pinger)
        thread.start()
        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda n: timed(port, "POST", "/models", load_body(n, urls[n])), names))
        together = time.monotonic() - started
        done.set()
        thread.join(10)
        return {"models": len(names), "first_load_s": first, "baseline_mb": baseline, "full_mb": full,
                "after_unload_mb": after, "load_s": loads, "growth_mb": growth, "invoke_s": invokes,
                "unload_s": unloads, "concurrent_load_s": together, "concurrency": concurrency,
                "ping_max_s": max(pings), "peak_mb": memory_mb(workers[0])["peak_rss_mb"]}
    finally:
        stop(proc, workers)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def markdown(r: dict, model_mb: float) -> str:
    med = statistics.median
    return "\n".join([
        f"### Multi-model endpoint: {r['models']} copies of the server tests' model ({dt.date.today()})",
        "",
        f"`python bench/multi_model.py --models {r['models']} --concurrency {r['concurrency']}` on "
        f"{cpu_model()} ({os.cpu_count()} cores), one worker, model directory {model_mb:.1f} MB.",
        "",
        "| measure | figure |",
        "|---|---|",
        f"| first load (imports AutoGluon and the encoders) | {r['first_load_s']:.1f} s |",
        f"| load, one at a time (median / max) | {med(r['load_s']):.2f} s / {max(r['load_s']):.2f} s |",
        f"| RSS growth per model (median) | {med(r['growth_mb']):.1f} MB |",
        f"| worker RSS: no model (after the first load and unload) / {r['models']} loaded / all unloaded | "
        f"{r['baseline_mb']:.0f} / {r['full_mb']:.0f} / {r['after_unload_mb']:.0f} MB |",
        f"| one-row invoke (median) | {1000 * med(r['invoke_s']):.0f} ms |",
        f"| unload (median / max) | {1000 * med(r['unload_s']):.0f} ms / {1000 * max(r['unload_s']):.0f} ms |",
        f"| {r['models']} loads, {r['concurrency']} at a time | {r['concurrent_load_s']:.1f} s "
        f"(slowest /ping meanwhile {1000 * r['ping_max_s']:.0f} ms) |",
        f"| worker peak RSS | {r['peak_mb']:.0f} MB |",
        ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "startup-bench")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = ensure_model(args.work, "images", True, ROOT) / "model"
    root = args.work / "multi-model"
    shutil.rmtree(root, ignore_errors=True)
    urls = {f"model-{i:03d}": shutil.copytree(model, root / "models" / f"model-{i:03d}" / "model")
            for i in range(args.models)}
    results = run(root, args.work, urls, args.concurrency)
    model_mb = sum(f.stat().st_size for f in model.rglob("*") if f.is_file()) / 2**20
    text = markdown(results, model_mb)
    print(text)
    (args.work / "multi_model.json").write_text(json.dumps(results, indent=1))
    if args.write_docs:
        with open(DOCS, "a") as docs:
            docs.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
