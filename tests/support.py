"""Helpers shared by several test modules (not fixtures: those live in conftest.py)."""
from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
from pathlib import Path

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

    def predict_proba(self, df: pd.DataFrame) -> pd.DataFrame:
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
