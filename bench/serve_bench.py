#!/usr/bin/env python
"""Benchmark of the inference server: rows/s through /invocations against in-process predict_proba.

Usage::

    .venv/bin/python bench/serve_bench.py [--model DIR] [--workers N] [--quick]

Starts ``multimodal-serve`` on 127.0.0.1 (a free port) with the model in DIR (default: trains the small
test model, toy quality, 150 synthetic rows with an image column), then measures on the same synthetic rows
(text, category, two numbers, a 64×64 JPEG each; about 1.3 KB per CSV record):

* rows/s for payloads of 1 record, 100 records and ~6 MB (about 4,700 records), one request at a time,
  through /invocations (text/csv in, text/csv out) and through ``predict_proba`` in this process with the
  same number of compute threads as one server worker; the two alternate run by run (medians reported), so
  that both see the same background load;
* rows/s with as many concurrent clients as workers (100-record payloads);
* /ping latency (p50, p99, max) from a client pinging every 50 ms while invocations run;
* start-up: seconds to the first accepted connection and to the first 200 from /ping;
* RSS (and peak RSS) of each worker process after the runs.

Results are printed as a markdown table and written to bench/results/serve.json.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup_bench import HOST, children, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIX_MB = 6 * 1024 * 1024


def cores() -> int:
    return len(os.sched_getaffinity(0))


def rss_mb(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields.get("VmRSS", 0), 1), "peak_rss_mb": round(fields.get("VmHWM", 0), 1)}


def csv_body(frame) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(frame.astype(str).values.tolist())
    return buffer.getvalue().encode()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 900.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Pinger:
    """Pings every 50 ms in a thread; latencies are kept while ``recording`` is set."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures = 0
        self.recording = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.recording.is_set():
                started = time.monotonic()
                try:
                    status, _ = request(self.port, "GET", "/ping", timeout=10)
                except OSError:
                    status = None
                self.latencies.append(time.monotonic() - started)
                self.failures += status != 200
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def summary(self) -> dict:
        values = sorted(self.latencies)
        if not values:
            return {}
        return {"count": len(values), "failures": self.failures, "p50_ms": round(1000 * values[len(values) // 2], 1),
                "p99_ms": round(1000 * values[min(len(values) - 1, int(0.99 * len(values)))], 1),
                "max_ms": round(1000 * values[-1], 1)}


def train_model(path: Path) -> None:
    from multimodal import MultimodalClassifier
    from multimodal.tools.synthetic import make_dataset
    MultimodalClassifier(quality="toy", n_folds=2, n_mins=0, n_secs=45, n_epochs=40, patience=5,
                         image_model="efficientnet_lite0").fit(make_dataset(150, seed=21)).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a saved model directory (default: train the small test model)")
    parser.add_argument("--workers", type=int, help="SAGEMAKER_MODEL_SERVER_WORKERS (default: the server's choice)")
    parser.add_argument("--quick", action="store_true", help="a ~1 MB payload instead of ~6 MB, fewer repeats")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model_dir = args.model
    if model_dir is None:
        model_dir = work / "model"
        print("training the small test model…", flush=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                        f"from serve_bench import train_model; from pathlib import Path; "
                        f"train_model(Path({str(model_dir)!r}))"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=900)
        print(f"  trained in {time.monotonic() - started:.0f} s", flush=True)
    root = work / "ml"
    root.mkdir()
    (root / "model").symlink_to(model_dir.resolve(), target_is_directory=True)

    # ------------------------------------------------------------------ the server
    port = free_port()
    env = {**os.environ, "MULTIMODAL_ML_ROOT": str(root), "SAGEMAKER_BIND_TO_PORT": str(port),
           "MULTIMODAL_BIND_HOST": HOST, "MULTIMODAL_LOG_LEVEL": "warning"}
    if args.workers:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(args.workers)
    script = Path(sys.executable).with_name("multimodal-serve")
    log = open(work / "server.log", "wb")
    started = time.monotonic()
    proc = subprocess.Popen([str(script)], env=env, stdout=log, stderr=subprocess.STDOUT)
    results: dict = {"machine": {"cores": cores(), "load_average_at_start": os.getloadavg()},
                     "model_dir_mb": round(sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) / 1e6, 2)}
    try:
        first_connect = ready = None
        startup_pings: list[float] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                t = time.monotonic()
                status, _ = request(port, "GET", "/ping", timeout=5)
                startup_pings.append(time.monotonic() - t)
                first_connect = first_connect or time.monotonic() - started
                if status == 200:
                    ready = time.monotonic() - started
                    break
            except OSError:
                pass
            time.sleep(0.05)
        if ready is None:
            raise SystemExit(f"the server did not become ready:\n{(work / 'server.log').read_text()[-3000:]}")
        workers = children(proc.pid)
        status, data = request(port, "GET", "/execution-parameters")
        params = json.loads(data)
        results["server"] = {"workers": len(workers), "execution_parameters": params,
                             "seconds_to_first_connection": round(first_connect, 2),
                             "seconds_to_ping_200": round(ready, 2),
                             "pings_while_loading": {"count": len(startup_pings),
                                                     "max_ms": round(1000 * max(startup_pings), 1)}}
        threads = max(1, cores() // len(workers))
        print(f"server ready in {ready:.1f} s (first connection after {first_connect:.2f} s), {len(workers)} "
              f"worker(s), {threads} compute thread(s) each", flush=True)

        # in-process: same compute threads as one worker (set before numpy/torch/TF load)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ[name] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import logging
        logging.disable(logging.WARNING)
        import torch
        torch.set_num_threads(threads)
        from multimodal import MultimodalClassifier
        from multimodal.sagemaker.serving.model_slot import warm_up
        from multimodal.tools.synthetic import make_dataset
        model = MultimodalClassifier.load(model_dir)
        warm_up(model)

        big_rows = 800 if args.quick else int(SIX_MB / 1330)
        data = make_dataset(big_rows + 200, seed=77).drop(columns="label")
        payloads = {"1 record": data.iloc[:1], "100 records": data.iloc[1:101]}
        big = data.iloc[101:101 + big_rows]
        while len(csv_body(big)) > SIX_MB:
            big = big.iloc[:-25]
        payloads[f"~{len(csv_body(big)) / 2**20:.1f} MiB ({len(big)} records)"] = big
        repeats = {"1 record": 10 if args.quick else 30, "100 records": 2 if args.quick else 6}
        pinger = Pinger(port)
        rows = []
        for name, frame in payloads.items():
            body = csv_body(frame)
            local_frame = frame.astype(str).reset_index(drop=True)
            n = repeats.get(name, 1)
            server_times, local_times = [], []

            def via_server() -> None:
                pinger.recording.set()
                t = time.monotonic()
                status, out = request(port, "POST", "/invocations", body, {"Content-Type": "text/csv"})
                server_times.append(time.monotonic() - t)
                pinger.recording.clear()
                assert status == 200 and out.count(b"\n") + 1 == len(frame), (status, out[:200])

            def in_process() -> None:
                t = time.monotonic()
                model.predict_proba(local_frame)
                local_times.append(time.monotonic() - t)

            for k in range(n):  # interleaved, order alternating: both see the same background load
                for run in ((via_server, in_process) if k % 2 == 0 else (in_process, via_server)):
                    run()
            server_s, local_s = statistics.median(server_times), statistics.median(local_times)
            row = {"payload": name, "records": len(frame), "bytes": len(body), "repeats": n,
                   "server_seconds_per_request": round(server_s, 4),
                   "server_rows_per_s": round(len(frame) / server_s, 1),
                   "in_process_seconds": round(local_s, 4), "in_process_rows_per_s": round(len(frame) / local_s, 1),
                   "server_over_in_process": round(server_s / local_s, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        results["sequential"] = rows
        results["ping_during_sequential_invocations"] = pinger.summary()

        # as many concurrent clients as workers against the same requests one after another, interleaved
        pinger.latencies.clear()
        pinger.failures = 0
        body = csv_body(payloads["100 records"])
        clients = len(workers)
        rounds = 2 if args.quick else 4

        def batch_of_requests(concurrent: bool) -> float:
            t = time.monotonic()
            if concurrent:
                with ThreadPoolExecutor(clients) as pool:
                    statuses = list(pool.map(lambda _: request(port, "POST", "/invocations", body,
                                                               {"Content-Type": "text/csv"})[0], range(clients)))
            else:
                statuses = [request(port, "POST", "/invocations", body, {"Content-Type": "text/csv"})[0]
                            for _ in range(clients)]
            assert statuses == [200] * clients
            return time.monotonic() - t

        pinger.recording.set()
        concurrent_times, sequential_times = [], []
        for k in range(rounds):
            for concurrent in ((True, False) if k % 2 == 0 else (False, True)):
                (concurrent_times if concurrent else sequential_times).append(batch_of_requests(concurrent))
        pinger.recording.clear()
        c_s, s_s = statistics.median(concurrent_times), statistics.median(sequential_times)
        results["concurrent"] = {"clients": clients, "rounds": rounds, "records_per_request": 100,
                                 "rows_per_s": round(100 * clients / c_s, 1),
                                 "sequential_rows_per_s": round(100 * clients / s_s, 1),
                                 "speedup": round(s_s / c_s, 2)}
        results["ping_during_concurrent_invocations"] = pinger.summary()
        pinger.stop()
        results["worker_memory"] = {str(pid): rss_mb(pid) for pid in children(proc.pid)}
        results["in_process_memory"] = rss_mb(os.getpid())
        results["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(results, indent=2))
    print()
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    lines = ["| payload | records | server rows/s | in-process rows/s | server time / in-process |",
             "|---|---:|---:|---:|---:|"]
    for row in results["sequential"]:
        lines.append(f"| {row['payload']} | {row['records']} | {row['server_rows_per_s']:,} | "
                     f"{row['in_process_rows_per_s']:,} | {row['server_over_in_process']:.2f}× |")
    c = results["concurrent"]
    lines.append(f"| 100 records, {c['clients']} concurrent clients (one per worker) | {100 * c['clients']} per "
                 f"round | {c['rows_per_s']:,} (one client: {c['sequential_rows_per_s']:,}; speed-up "
                 f"{c['speedup']}×) | — | — |")
    lines.append("")
    for key in ("ping_during_sequential_invocations", "ping_during_concurrent_invocations"):
        p = results[key]
        if p:
            lines.append(f"- /ping {key.replace('ping_', '').replace('_', ' ')}: p50 {p['p50_ms']} ms, p99 "
                         f"{p['p99_ms']} ms, max {p['max_ms']} ms over {p['count']} pings ({p['failures']} not 200)")
    s = results["server"]
    lines.append(f"- start-up: first connection accepted after {s['seconds_to_first_connection']} s, /ping 200 "
                 f"after {s['seconds_to_ping_200']} s (slowest of {s['pings_while_loading']['count']} pings while "
                 f"loading: {s['pings_while_loading']['max_ms']} ms); {s['workers']} worker(s); "
                 f"{s['execution_parameters']}")
    for pid, memory in results["worker_memory"].items():
        lines.append(f"- worker {pid}: RSS {memory['rss_mb']} MB (peak {memory['peak_rss_mb']} MB)")
    lines.append(f"- machine: {results['machine']['cores']} cores, load average {results['machine']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
