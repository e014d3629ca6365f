#!/usr/bin/env python
"""What checkpoints save a spot-interrupted training job: total wall time to a model, with and without them.

Usage::

    .venv/bin/python bench/spot_resume.py --data /tmp/bench-data-blank --dataset clothing [--rows 2000]
        [--test-rows 1000] [--n-secs 180] [--quality light] [--stop-at 0.5] [--work /tmp/spot-resume]

Runs the training job (``python -m multimodal.sagemaker.training.job``) on the first ``--rows`` training rows of a
``bench/datasets.py`` set, one run after another:

1. ``plain``: no checkpoint directory (a job without CheckpointConfig);
2. ``checkpoints``: the same with a checkpoint directory, uninterrupted (the cost of keeping them);
3. ``interrupted, resumed``: with a checkpoint directory, SIGTERM after ``--stop-at`` of run 1's wall time (a spot
   interruption), then started again with the same directory;
4. ``interrupted, from nothing``: the same interruption without checkpoints, then started again.

Reported per run: wall time of each attempt and in all, what the resumed attempt took back, the job's exit
statuses, and the final model's accuracy on ``--test-rows`` test rows. One JSON line per run on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def layout(root: Path, train: pd.DataFrame, hyperparameters: dict[str, str], checkpoints: bool) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "output").mkdir()
    train.to_csv(root / "input" / "data" / "train" / "train.csv", index=False)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    if checkpoints:
        (root / "checkpoints").mkdir()  # what SageMaker creates for a job with a CheckpointConfig
    return root


def attempt(root: Path, log: Path, stop_after: float | None) -> tuple[int, float]:
    """Run the job once (SIGTERM after ``stop_after`` seconds if given): (exit status, wall seconds)."""
    env = dict(os.environ, MULTIMODAL_ML_ROOT=str(root), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "multimodal.sagemaker.training.job"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            code = process.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
    return code, time.monotonic() - started


def accuracy(root: Path, test: pd.DataFrame) -> float:
    from multimodal import MultimodalEstimator
    model = MultimodalEstimator.load(root / "model")
    return round(float((model.predict(test.drop(columns="label")).astype(str) == test["label"].astype(str)).mean()), 4)


def run(name: str, work: Path, train: pd.DataFrame, test: pd.DataFrame, hp: dict[str, str], *, checkpoints: bool,
        stop_after: float | None) -> dict:
    root = layout(work / name.replace(" ", "-").replace(",", ""), train, hp, checkpoints)
    codes, walls = [], []
    for k in range(2 if stop_after else 1):
        code, wall = attempt(root, root / f"attempt-{k + 1}.log", stop_after if k == 0 else None)
        codes.append(code)
        walls.append(round(wall, 1))
    text = (root / f"attempt-{len(codes)}.log").read_text()
    result = {"run": name, "exit_statuses": codes, "attempt_wall_s": walls, "total_wall_s": round(sum(walls), 1),
              "taken_back": re.findall(r"expert (\S+): fitted by an earlier attempt", text)
              + (["rows"] if "read and embedded by an earlier attempt" in text else [])
              + (["fusion"] if "fusion: fitted by an earlier attempt" in text else []),
              "accuracy": accuracy(root, test) if codes[-1] == 0 else None}
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="clothing")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--n-secs", type=int, default=180)
    parser.add_argument("--quality", default="light")
    parser.add_argument("--stop-at", type=float, default=0.5, help="SIGTERM after this share of the plain run's wall")
    parser.add_argument("--work", type=Path, default=Path("/tmp/spot-resume"))
    args = parser.parse_args()
    train = pd.read_csv(args.data / args.dataset / "train.csv", dtype=str, keep_default_na=False).head(args.rows)
    test = pd.read_csv(args.data / args.dataset / "test.csv", dtype=str, keep_default_na=False).head(args.test_rows)
    hp = {"quality": args.quality, "n_hours": "0", "n_mins": "0", "n_secs": str(args.n_secs),
          "image_model": "efficientnet_lite0"}
    args.work.mkdir(parents=True, exist_ok=True)
    plain = run("plain", args.work, train, test, hp, checkpoints=False, stop_after=None)
    run("checkpoints", args.work, train, test, hp, checkpoints=True, stop_after=None)
    stop_after = plain["total_wall_s"] * args.stop_at
    run("interrupted, resumed", args.work, train, test, hp, checkpoints=True, stop_after=stop_after)
    run("interrupted, from nothing", args.work, train, test, hp, checkpoints=False, stop_after=stop_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
