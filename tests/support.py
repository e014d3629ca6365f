"""Helpers shared by several test modules (not fixtures: those live in conftest.py)."""
from __future__ import annotations

import csv
import http.client
import io
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np
import pandas as pd

from multimodal.core.schema import Schema, prepare_features

HEADER = ["ID", "review_text", "colour_cat", "size_num", "weight_num", "photo_image", "label"]
CLASSES = ["alpha", "beta", "delta", "gamma"]


class StandInModel:
    """Behaves like MultimodalClassifier at the boundary the server uses: schema, classes_, predict_proba."""

    def __init__(self, header=HEADER, classes=CLASSES, delay: float = 0.0) -> None:
        self.schema_ = Schema.from_header(header)
        self.classes_ = list(classes)
        self.delay = delay
        self.calls: list[int] = []
        self.threads: list[str] = []

    def predict_proba(self, df: pd.DataFrame, *, images=None) -> pd.DataFrame:
        from multimodal.core.images import decode_image
        from multimodal.core.schema import describe_row
        features = prepare_features(df, self.schema_)
        for name in self.schema_.names("image"):
            for i, value in enumerate(features.values[name]):
                if value is not None:
                    decode_image(value, column=name, row=describe_row(i, features.ids))
        self.calls.append(len(df))
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        seeds = [sum(map(ord, "|".join(map(str, row)))) for row in df.astype(str).itertuples(index=False)]
        raw = np.array([[(s * (k + 3)) % 97 + 1 for k in range(len(self.classes_))] for s in seeds], dtype=float)
        proba = raw / raw.sum(axis=1, keepdims=True) if len(raw) else raw.reshape(0, len(self.classes_))
        return pd.DataFrame(proba, index=df.index, columns=pd.Index(self.classes_))


def csv_body(frame: pd.DataFrame) -> bytes:
    """Headerless CSV records, as a batch transform sends them."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(frame.astype(str).values.tolist())
    return buffer.getvalue().encode()


def jsonl_body(frame: pd.DataFrame) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in frame.to_dict("records")).encode()


def assert_learnt(predicted, truth, margin: float = 0.15) -> float:
    """The accuracy of ``predicted`` against ``truth``, asserted ``margin`` above the majority class's share: well
    beyond noise (about 3 binomial standard errors on 100 rows) for a model that learnt the labels, yet not a
    level a short time budget on a busy 2-core machine misses (those fits score 0.5-0.7 where the majority
    share is about 0.3). The accuracy a full budget reaches is held by tests/test_classifier.py."""
    predicted, truth = pd.Series(list(predicted), dtype=str), pd.Series(list(truth), dtype=str)
    accuracy = float((predicted == truth).mean())
    majority = float(truth.value_counts(normalize=True).iloc[0])
    assert accuracy >= majority + margin, f"accuracy {accuracy:.3f}, majority class share {majority:.3f}"
    return accuracy


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """The process IDs of ``pid``'s children (a server's workers)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class S3Server:
    """moto's S3 server on 127.0.0.1 in a process of its own (a real S3 API over HTTP, not a mock inside the test
    process), and the environment that points boto3 at it: ``env`` for subprocesses, ``apply(monkeypatch)`` for
    this process."""

    def __init__(self) -> None:
        import subprocess
        import sys
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start")
                time.sleep(0.1)
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"}

    def apply(self, monkeypatch) -> None:
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)

    def client(self):
        import boto3
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                              aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()


def sh(*command: str, timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``command`` in the repository root without standard input; fails the test with its output's tail."""
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, env=env)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def http_request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float = 120.0, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange on a fresh connection: (status, headers with lower-case names, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
