#!/usr/bin/env python
"""/ping latency of the inference server while other connections misbehave or keep it busy.

Usage::

    .venv/bin/python bench/ping_bench.py [--work DIR] [--baseline /tmp/baseline] [--slow 24] [--busy 8]
                                         [--seconds 20] [--write-docs]

SageMaker takes an endpoint out of service when /ping does not answer within 2 s. For the small model of
``bench/startup_bench.py`` (trained once, cached in ``--work``) and the server's default worker count, two
scenarios run for ``--seconds`` each while a client pings every 200 ms (each ping times out after 5 s):

* ``slow``: ``--slow`` connections that send their requests a byte every 200 ms, half still in their headers,
  half in their bodies (as slow or stalled clients, or a slowloris, would);
* ``busy``: ``--busy`` clients that each send 50-record requests (10 with an image) back to back.

With ``--baseline TREE`` the same runs are made against a second code tree (through ``PYTHONPATH``), one after
the other on the same machine. Prints a markdown table (pings, how many took over 2 s or got no answer,
p50/p99/max latency); ``--write-docs`` appends it to docs/benchmarks.md. Every server is stopped by its PID;
every wait is bounded.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import http.client
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup_bench import (  # noqa: E402
    DOCS,
    HOST,
    START_TIMEOUT,
    children,
    ensure_model,
    free_port,
    modules,
    ping,
    server_environment,
    stop,
)

PING_EVERY = 0.2
PING_TIMEOUT = 5.0
SAGEMAKER_PING_TIMEOUT = 2.0


def start(tree: Path, ml_root: Path, work: Path, log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = server_environment(tree, SAGEMAKER_BIND_TO_PORT=str(port), MULTIMODAL_BIND_HOST=HOST,
                             MULTIMODAL_ML_ROOT=str(ml_root), MULTIMODAL_CACHE_DIR=str(work / "cache"))
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", modules(tree)["serve"]], env=env, cwd=work, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if ping(port) == 200:
            return proc, port
        time.sleep(0.2)
    stop(proc, children(proc.pid))
    raise RuntimeError(f"the server ({tree}) did not become ready; see {log_path}")


def trickle(port: int, payload: bytes, stop_event: threading.Event) -> None:
    try:
        with socket.create_connection((HOST, port), timeout=10) as sock:
            for i in range(len(payload)):
                if stop_event.wait(PING_EVERY):
                    return
                sock.sendall(payload[i:i + 1])
    except OSError:
        return


def busy_client(port: int, body: bytes, stop_event: threading.Event, answered: list[int]) -> None:
    while not stop_event.is_set():
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
            response = conn.getresponse()
            response.read()
            answered.append(response.status)
        except OSError:
            answered.append(0)
        finally:
            conn.close()


def timed_pings(port: int, seconds: float) -> list[float | None]:
    latencies: list[float | None] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        status = ping(port, timeout=PING_TIMEOUT)
        latencies.append(time.monotonic() - started if status == 200 else None)
        time.sleep(max(0.0, PING_EVERY - (time.monotonic() - started)))
    return latencies


def records_body(n: int, images: int) -> bytes:
    from multimodal.tools.synthetic import make_dataset
    frame = make_dataset(n, seed=48).drop(columns="label")
    frame.loc[frame.index[images:], "photo_image"] = ""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(frame.astype(str).values.tolist())
    return buffer.getvalue().encode()


def scenario(name: str, port: int, args: argparse.Namespace) -> dict:
    stop_event = threading.Event()
    answered: list[int] = []
    if name == "slow":
        head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        payloads = [head if i % 2 else head + b"Content-Length: 100000\r\n\r\n" for i in range(args.slow)]
        threads = [threading.Thread(target=trickle, args=(port, p, stop_event), daemon=True) for p in payloads]
    else:
        body = records_body(50, 10)
        threads = [threading.Thread(target=busy_client, args=(port, body, stop_event, answered), daemon=True)
                   for _ in range(args.busy)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        latencies = timed_pings(port, args.seconds)
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(PING_TIMEOUT + 120)
    answered_ms = sorted(x for x in latencies if x is not None)
    late = sum(1 for x in latencies if x is None or x > SAGEMAKER_PING_TIMEOUT)

    def quantile(q: float) -> float | None:
        return answered_ms[min(len(answered_ms) - 1, int(q * len(answered_ms)))] if answered_ms else None

    return {"pings": len(latencies), "late_or_unanswered": late, "p50": quantile(0.5), "p99": quantile(0.99),
            "max": answered_ms[-1] if answered_ms else None,
            "requests_answered": sum(1 for s in answered if s == 200)}


def fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    lines = ["| scenario | code | pings | over 2 s or unanswered | p50 | p99 | max (answered) | requests answered |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        what = f"{args.slow} slow connections" if r["scenario"] == "slow" else f"{args.busy} busy clients"
        lines.append(f"| {what} | {r['code']} | {r['pings']} | **{r['late_or_unanswered']}** | {fmt(r['p50'])} | "
                     f"{fmt(r['p99'])} | {fmt(r['max'])} | {r['requests_answered'] if r['scenario'] == 'busy' else '—'} |")
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines += ["", f"Command: `python bench/ping_bench.py{' --baseline ' + str(args.baseline) if args.baseline else ''} "
              f"--slow {args.slow} --busy {args.busy} --seconds {args.seconds}`  ",
              f"Run: {when} on {os.cpu_count()} cores; a ping every {PING_EVERY:g} s for {args.seconds:g} s per "
              f"scenario, each timing out after {PING_TIMEOUT:g} s; the server's default worker count; the model "
              "of bench/startup_bench.py with an image column."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "startup-bench")
    parser.add_argument("--baseline", type=Path, help="a second code tree to compare with (run via PYTHONPATH)")
    parser.add_argument("--slow", type=int, default=24, help="slow connections (default 24)")
    parser.add_argument("--busy", type=int, default=8, help="busy clients (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of pinging per scenario")
    parser.add_argument("--write-docs", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    trees = {"this tree": Path(__file__).resolve().parents[1]}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    root = ensure_model(args.work, "images", True, trees["this tree"])
    results = []
    for code, tree in trees.items():
        proc, port = start(tree, root, args.work, args.work / f"ping-{code.replace(' ', '-')}.log")
        try:
            for name in ("slow", "busy"):
                print(f"{code}: {name}…", flush=True)
                results.append({"scenario": name, "code": code, **scenario(name, port, args)})
        finally:
            stop(proc, children(proc.pid))
    table = markdown(results, args)
    print(table)
    if args.write_docs:
        with open(DOCS, "a", encoding="utf-8") as doc:
            doc.write("\n\n## /ping while other connections are slow or busy\n\n" + table + "\n")
        print(f"appended to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
