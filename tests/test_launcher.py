"""The real server: `multimodal-serve` (gunicorn) as a subprocess on 127.0.0.1, with a small trained model.

Every loop is bounded in count and time, traffic goes to 127.0.0.1 only, and each server started here is
stopped by its PID (SIGTERM, then SIGKILL of it and its workers if it has not exited).
"""
from __future__ import annotations

import base64
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import children, csv_body, free_port, http_request, jsonl_body

from multimodal.sagemaker.serving.app import SLICE_BYTES
from multimodal.tools.synthetic import make_dataset

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
START_TIMEOUT = 240.0


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("multimodal-serve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "multimodal.sagemaker.serving.launcher"]


class Server:
    """One `multimodal-serve` process and its log; every call to it is bounded by a timeout."""

    def __init__(self, root: Path, work: Path, **env: str) -> None:
        self.port = free_port()
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        (work / "tmp").mkdir(exist_ok=True)
        self.log_path = work / "server.log"
        environ = {**os.environ, "MULTIMODAL_ML_ROOT": str(root), "SAGEMAKER_BIND_TO_PORT": str(self.port),
                   "MULTIMODAL_BIND_HOST": HOST, "HOME": str(self.home), "TMPDIR": str(work / "tmp"),
                   "XDG_RUNTIME_DIR": "", **env}
        for name in ("KERAS_HOME", "TORCH_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR"):
            environ.pop(name, None)
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(serve_command(), env=environ, stdout=self._log, stderr=subprocess.STDOUT)
        self.workers: list[int] = []

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 120.0) -> tuple[int, dict, bytes, float]:
        started = time.monotonic()
        status, response_headers, data = http_request(self.port, method, path, body, headers, timeout, HOST)
        return status, response_headers, data, time.monotonic() - started

    def invoke(self, body: bytes, content_type: str = "text/csv", accept: str = "text/csv", timeout: float = 120.0):
        return self.request("POST", "/invocations", body, {"Content-Type": content_type, "Accept": accept},
                            timeout=timeout)

    def ping(self, timeout: float = 5.0) -> tuple[int | None, float]:
        started = time.monotonic()
        try:
            status, _, _, _ = self.request("GET", "/ping", timeout=timeout)
        except (ConnectionError, OSError):
            status = None
        return status, time.monotonic() - started

    def wait_ready(self, timeout: float = START_TIMEOUT) -> list[tuple[float, int | None, float]]:
        """Ping every 0.1 s until 200: returns (seconds since start, status, latency) of each ping."""
        samples = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, latency = self.ping()
            samples.append((time.monotonic() - self.started, status, latency))
            if status == 200:
                self.workers = children(self.proc.pid)
                return samples
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout} s:\n{self.log[-4000:]}")

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            workers = children(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(60) is None:
                for pid in [self.proc.pid, *workers]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.wait_exit(10)
        self._log.close()


def model_root(model_dir: Path, work: Path) -> Path:
    root = work / "ml"
    root.mkdir(parents=True, exist_ok=True)
    (root / "model").symlink_to(model_dir, target_is_directory=True)
    return root


def records(n: int, seed: int, images: int | None = None) -> pd.DataFrame:
    """Feature records; only the first ``images`` carry an image (image encoding dominates the time)."""
    frame = make_dataset(n, seed=seed).drop(columns="label")
    if images is not None:
        frame.loc[frame.index[images:], "photo_image"] = ""
    return frame


def csv_rows(data: bytes) -> list[list[str]]:
    assert not data.endswith(b"\n")  # AssembleWith=Line adds the newline after each response
    return [next(csv.reader([line.decode()])) for line in data.split(b"\n")]


@pytest.fixture(scope="module")
def model_dir(serving_model_dir):
    return serving_model_dir


@pytest.fixture(scope="module")
def in_process(model_dir):
    from multimodal import MultimodalClassifier
    return MultimodalClassifier.load(model_dir)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("gunicorn")
    import torch
    # The same compute threads as the in-process reference: a conv with another thread count differs in the
    # last bits, which can move a tree split and flip a near-tie, and these tests compare exact labels.
    srv = Server(model_root(model_dir, work), work, SAGEMAKER_MODEL_SERVER_WORKERS="2",
                 MULTIMODAL_THREADS=str(torch.get_num_threads()))
    try:
        srv.startup = srv.wait_ready()
        yield srv
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------- start-up

def test_port_accepts_at_once_and_ping_is_503_then_200_within_2_s(server):
    samples = server.startup
    connected = [t for t, status, _ in samples if status is not None]
    statuses = [status for _, status, _ in samples if status is not None]
    assert connected[0] < 5.0, samples[:5]  # SageMaker asks for 250 ms; see the report for the measured value
    assert 503 in statuses and statuses[-1] == 200 and statuses.index(200) == len(statuses) - 1
    assert max(latency for _, _, latency in samples) < 2.0, max(samples, key=lambda s: s[2])
    assert len(server.workers) == 2


def test_first_requests_after_200_pay_no_warm_up(server):
    for body in (csv_body(records(1, seed=40)), csv_body(records(20, seed=40))):
        first = [server.invoke(body)[3] for _ in range(4)]  # both workers, each one's first requests
        later = sorted(server.invoke(body)[3] for _ in range(4))
        assert max(first) < max(1.0, 2.5 * later[len(later) // 2]), (first, later)


def test_execution_parameters(server):
    status, _, data, _ = server.request("GET", "/execution-parameters")
    assert status == 200 and json.loads(data) == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD",
                                                  "MaxPayloadInMB": 6}


# ---------------------------------------------------------------------------------------------- predictions

def test_one_record_and_a_thousand(server, in_process):
    one = records(1, seed=41)
    status, headers, data, _ = server.invoke(csv_body(one))
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert csv_rows(data) == [[one["ID"][0], str(in_process.predict(one.astype(str))[0])]]
    many = records(1000, seed=42, images=20)
    status, _, data, elapsed = server.invoke(csv_body(many))
    rows = csv_rows(data)
    assert status == 200 and len(rows) == 1000 and [r[0] for r in rows] == many["ID"].tolist()
    assert [r[1] for r in rows] == in_process.predict(many.astype(str)).astype(str).tolist()


@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonlines", "application/json"])
def test_every_content_type_and_accept(server, in_process, content_type):
    frame = records(5, seed=43)
    body = {"text/csv": csv_body, "application/jsonlines": jsonl_body,
            "application/json": lambda f: json.dumps(f.to_dict("records")).encode()}[content_type](frame)
    proba = in_process.predict_proba(frame.astype(str))
    for accept in ("text/csv", "application/jsonlines", "application/json"):
        status, headers, data, _ = server.invoke(body, content_type, accept)
        assert status == 200 and headers["content-type"].startswith(accept), (accept, data)
        if accept == "text/csv":
            assert [r[0] for r in csv_rows(data)] == frame["ID"].tolist()
            continue
        out = json.loads(data) if accept == "application/json" else [json.loads(x) for x in data.splitlines()]
        assert [o["ID"] for o in out] == frame["ID"].tolist()
        np.testing.assert_allclose([list(o["probabilities"].values()) for o in out], proba.to_numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------------- bad input

def raw_exchange(port: int, payload: bytes, timeout: float = 20.0, close_early: bool = False) -> bytes:
    """Send raw bytes, then read until the server closes (no half-close: HTTP clients keep sending or wait)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(payload)
        if close_early:
            return b""
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_bad_inputs_get_4xx_and_the_server_keeps_answering(server):
    good = csv_body(records(2, seed=44))
    image_line = csv_body(records(1, seed=45, images=1)).decode().rstrip("\n")
    cases = [
        (b"", "text/csv", "text/csv", 400, "empty body"),
        (b"a,b\n", "text/csv", "text/csv", 400, "line 1: expected 6 fields"),
        (good + b"r1,t,red,abc,1,\n", "text/csv", "text/csv", 400, "line 3, column 'size_num': 'abc' is not a number"),
        (good + b"r1,t,red,1,1,%%%\n", "text/csv", "text/csv", 400, "line 3, column 'photo_image'"),
        (good + b"r1,t,red,1,1,aGVsbG8gd29ybGQ=\n", "text/csv", "text/csv", 400, "not an image"),
        ((image_line[: len(image_line) // 2] + "\n").encode(), "text/csv", "text/csv", 400, "line 1"),
        (b'{"ID": "a"}\n{broken\n', "application/jsonlines", "application/jsonlines", 400, "line 2: not valid JSON"),
        (b"[1]", "application/json", "application/json", 400, "record 1: expected a JSON object"),
        (b'[{"ID": "a", "size_num": ' + b"9" * 5000 + b"}]", "application/json", "application/json", 400,
         "record 1, column 'size_num'"),
        (b'{"ID": "a"}\n' + b"[" * 5000 + b"]" * 5000, "application/jsonlines", "text/csv", 400,
         "line 2: JSON nested too deeply"),
        (good, "application/x-protobuf", "text/csv", 415, "unsupported Content-Type"),
        (good, "text/csv", "application/xml", 406, "cannot answer"),
        (b"x" * (6 * 1024 * 1024 + 1), "text/csv", "text/csv", 413, "payload limit"),
    ]
    for body, content_type, accept, status, text in cases:
        got, _, data, _ = server.invoke(body, content_type, accept)
        assert got == status and text in data.decode(errors="replace"), (text, got, data[:300])
    # a chunked body over the limit, a Content-Length far over it with no body, garbage, a client that leaves
    chunks = iter([b"x" * 1024 * 1024] * 6 + [b"x" * 200_000])
    conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
    conn.request("POST", "/invocations", body=chunks, headers={"Content-Type": "text/csv"}, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    reply = raw_exchange(server.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                                      b"Content-Length: 100000000\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413")
    assert raw_exchange(server.port, b"\x16\x03\x01 not http at all\r\n\r\n").startswith(b"HTTP/1.1 400")
    raw_exchange(server.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nr1,a",
                 close_early=True)
    # still serving, with the same workers
    assert server.ping()[0] == 200
    status, _, data, _ = server.invoke(good)
    assert status == 200 and len(csv_rows(data)) == 2
    assert children(server.proc.pid) == server.workers and server.proc.poll() is None


def test_concurrent_requests_are_bounded_and_ping_stays_fast(server):
    body = csv_body(records(50, seed=46, images=10))
    pings: list[float] = []
    stop = threading.Event()

    def pinger():
        for _ in range(2000):
            if stop.is_set():
                return
            status, latency = server.ping(timeout=10)
            assert status == 200
            pings.append(latency)
            time.sleep(0.05)

    watcher = threading.Thread(target=pinger, daemon=True)
    started = time.monotonic()
    watcher.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: server.invoke(body, timeout=60), range(8)))
    total = time.monotonic() - started
    stop.set()
    watcher.join(15)
    assert [r[0] for r in results] == [200] * 8 and all(len(csv_rows(r[2])) == 50 for r in results)
    assert len({r[2] for r in results}) == 1  # same answer whichever worker served it
    assert total <= 30, total
    assert pings and max(pings) < 2.0, max(pings)


def test_slow_clients_cannot_delay_ping(server):
    """Clients that send their requests slowly hold no request thread, and /ping never queues behind requests:
    with more slow connections than both workers' request threads, pings answer within SageMaker's 2 s."""
    stop = threading.Event()
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"

    def trickle(payload: bytes) -> None:
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            for i in range(len(payload)):
                if stop.wait(0.2):
                    return
                try:
                    sock.sendall(payload[i:i + 1])
                except OSError:
                    return

    # half stuck in their headers, half in their bodies (headers sent at once, then a byte at a time)
    payloads = [head if i % 2 else head + b"Content-Length: 100000\r\n\r\n" for i in range(24)]
    threads = [threading.Thread(target=trickle, args=(p,), daemon=True) for p in payloads]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        latencies = []
        for _ in range(15):
            status, latency = server.ping(timeout=5)
            assert status == 200, latencies
            latencies.append(latency)
            time.sleep(0.2)
        status, _, data, elapsed = server.invoke(csv_body(records(2, seed=48)), timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert max(latencies) < 2.0, latencies
    assert status == 200 and len(csv_rows(data)) == 2 and elapsed < 10, (status, elapsed)


def test_real_size_photos_in_quoted_rows(server, in_process):
    """A text field with commas and quotes and a 200 KB / 900 KB JPEG in the same record: predicted."""
    from multimodal.tools.synthetic import photo_jpeg
    frame = records(3, seed=49)
    frame["review_text"] = 'Soft, warm "merino" jumper'
    frame.loc[0, "photo_image"] = base64.b64encode(photo_jpeg(200, seed=1)).decode()
    frame.loc[1, "photo_image"] = base64.b64encode(photo_jpeg(900, seed=2)).decode()
    status, _, data, _ = server.invoke(csv_body(frame))
    assert status == 200, data[:300]
    assert csv_rows(data) == [[i, str(label)] for i, label in zip(frame["ID"], in_process.predict(frame.astype(str)))]


def test_nothing_is_written_to_home(server):
    assert list(server.home.iterdir()) == []


# ---------------------------------------------------------------------------------------------- lifecycle

def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(model_dir, tmp_path):
    srv = Server(model_root(model_dir, tmp_path), tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        srv.wait_ready()
        # several seconds of work: 150 records took about 5 s with the torch encoder, under 1.5 s with OpenVINO
        frame = records(1500, seed=47)
        result = {}

        def call():
            result["response"] = srv.invoke(csv_body(frame), timeout=120)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.5)
        assert caller.is_alive(), "the request finished before SIGTERM: make it longer"
        srv.proc.send_signal(signal.SIGTERM)
        caller.join(120)
        status, _, data, _ = result["response"]
        assert status == 200 and [r[0] for r in csv_rows(data)] == frame["ID"].tolist()
        assert srv.wait_exit(60) == 0, srv.log[-3000:]
        assert srv.ping()[0] is None  # nothing listens any more
    finally:
        srv.stop()


def test_a_broken_model_directory_exits_non_zero_quickly(model_dir, tmp_path):
    empty = tmp_path / "empty"
    (empty / "model").mkdir(parents=True)
    srv = Server(empty, tmp_path / "a")
    try:
        assert srv.wait_exit(30) == 3 and "model_config.json not found" in srv.log
    finally:
        srv.stop()
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken / "model")
    shutil.rmtree(broken / "model" / "wholistic")  # the fusion network is gone
    srv = Server(broken, tmp_path / "b", SAGEMAKER_MODEL_SERVER_WORKERS="2")
    try:
        statuses = []
        deadline = time.monotonic() + 120
        while srv.proc.poll() is None and time.monotonic() < deadline:
            statuses.append(srv.ping()[0])
            time.sleep(0.2)
        assert srv.wait_exit(5) == 3, srv.log[-3000:]
        assert 200 not in statuses
        assert "cannot serve" in srv.log and "fusion" in srv.log and "Reason: the model could not be loaded" in srv.log
    finally:
        srv.stop()
    truncated = tmp_path / "truncated"
    shutil.copytree(model_dir, truncated / "model")
    config = truncated / "model" / "model_config.json"
    config.write_bytes(config.read_bytes()[:100])  # an interrupted copy
    srv = Server(truncated, tmp_path / "c", SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        assert srv.wait_exit(120) == 3, srv.log[-3000:]
        assert f"{config} is not readable JSON" in srv.log, srv.log[-3000:]
    finally:
        srv.stop()


def test_a_worker_dying_while_loading_stops_the_server(model_dir, tmp_path):
    srv = Server(model_root(model_dir, tmp_path), tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        deadline = time.monotonic() + 60
        while srv.ping()[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = children(srv.proc.pid)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
        assert srv.wait_exit(30) == 3, srv.log[-3000:]
        assert "died while loading the model" in srv.log
    finally:
        srv.stop()


def worker_peak_rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def test_an_async_endpoint_body_of_200_mb_is_answered_in_slices_within_bounded_memory(model_dir, tmp_path):
    """MULTIMODAL_MAX_PAYLOAD_MB lifts the body limit for async endpoints; a 200 MB CSV of rows with 200 KB
    photos is predicted slice by slice: one line per record in order, the answer of the same rows sent in small
    requests, and the worker's peak memory a small multiple of the body."""
    from multimodal.tools.synthetic import photo_jpeg
    photos = [base64.b64encode(photo_jpeg(200, seed=s)).decode() for s in range(4)]
    frame = records(760, seed=51, images=0)
    frame["photo_image"] = [photos[i % 4] for i in range(len(frame))]
    frame["review_text"] = 'Soft, warm "merino" jumper'
    body = csv_body(frame)
    assert len(body) > 200 * 2**20
    work = tmp_path / "srv"
    srv = Server(model_root(model_dir, work), work, SAGEMAKER_MODEL_SERVER_WORKERS="1", MULTIMODAL_MAX_PAYLOAD_MB="256")
    try:
        srv.wait_ready()
        (worker,) = srv.workers
        small = [srv.invoke(csv_body(frame.iloc[i:i + 20]))[2] for i in (0, len(frame) - 20)]
        rss_before, _ = worker_peak_rss(worker)
        status, _, data, elapsed = srv.invoke(body, timeout=900)
        _, peak = worker_peak_rss(worker)
        assert status == 200, data[:500]
        lines = data.split(b"\n")
        assert len(lines) == len(frame) and [r[0] for r in csv_rows(data)] == frame["ID"].tolist()
        assert b"\n".join(lines[:20]) == small[0] and b"\n".join(lines[-20:]) == small[1]
        # the body held twice (as it arrives, then joined: ~2.3×) and one slice's working memory (~6× the slice);
        # parsing the body whole would need ~6× the body. Measured: 639–669 MB, 3.1× this body
        assert peak - rss_before < 2.5 * len(body) + 8 * SLICE_BYTES, (rss_before, peak)
        assert "slice 7 of 7" in srv.log  # 32 MB slices (app.SLICE_BYTES)
        print(f"200 MB body: {len(body) / 2**20:.0f} MB, {len(frame)} records, {elapsed:.1f} s, worker RSS "
              f"{rss_before / 2**20:.0f} MB before, peak {peak / 2**20:.0f} MB")
        too_big = srv.request("POST", "/invocations", b"x" * (257 * 2**20), {"Content-Type": "text/csv"})
        assert too_big[0] == 413 and "256 MB" in too_big[2].decode()
    finally:
        srv.stop()
