#!/usr/bin/env python
"""The inference server's latency and photo throughput, two code trees side by side (issue 21).

Usage::

    .venv/bin/python bench/latency.py [--baseline COMMIT] [--folds 2 5] [--one-row 100] [--batches 5]

Trains the small model of ``bench/serve_bench.py`` (toy quality, synthetic rows with a text, a category, two
numbers and an image column) once per ``--folds`` value, with the baseline's code (which both trees can load). Then, for the baseline (a git worktree of
``--baseline``, default the commit before issue 21's work) and for this tree, one after the other on the same
model, it starts ``multimodal-serve`` with one worker (every core: what a batch transform with one concurrent
transform runs) on 127.0.0.1 and measures through HTTP:

* one-row requests (text/csv) without an image and with one ~300 KB photo: p50 / p99 / max latency;
* requests of 64 rows with a ~300 KB photo each (26 MB bodies, so ``SAGEMAKER_MAX_PAYLOAD_IN_MB=50``): rows/s.

This tree runs twice: with the default encoder runtime and with ``MULTIMODAL_ENCODER_PRECISION=bf16``.

Prints a markdown table and writes bench/results/latency.json. The server is stopped by its PID.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from encoders import photos  # noqa: E402
from serve_bench import csv_body, request  # noqa: E402
from startup_bench import HOST, free_port, ping  # noqa: E402

BASELINE = "4668019"  # main before issue 21


def train(path: Path, folds: int, tree: Path = ROOT) -> None:
    """The benchmark's model, trained by the code in ``tree``: the baseline's, so that both trees can load it (a
    newer artifact format is refused by older code)."""
    code = ("from multimodal import MultimodalClassifier; from multimodal.tools.synthetic import make_dataset; "
            f"MultimodalClassifier(quality='toy', n_folds={folds}, n_mins=0, n_secs=45, n_epochs=40, patience=5, "
            "image_model='efficientnet_lite0').fit(make_dataset(150, seed=21))"
            f".save(__import__('pathlib').Path({str(path)!r}))")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1200)


def bodies() -> dict[str, tuple[int, bytes]]:
    from multimodal.tools.synthetic import make_dataset
    rows = make_dataset(64, seed=5).drop(columns=["label"])
    column = next(c for c in rows.columns if c.endswith("_image"))
    photo = [base64.b64encode(p).decode() for p in photos(64, seed=3)]
    without = rows.head(1).copy()
    without[column] = ""
    with_one = rows.head(1).copy()
    with_one[column] = photo[0]
    many = rows.copy()
    many[column] = photo
    return {"1 row, no image": (1, csv_body(without)), "1 row, one photo": (1, csv_body(with_one)),
            "64 rows, a photo each": (64, csv_body(many))}


def measure(tree: Path, model: Path, work: Path, cases: dict, one_row: int, batches: int,
            settings: dict[str, str]) -> dict:
    (work / "ml").mkdir(parents=True, exist_ok=True)
    link = work / "ml" / "model"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(model, target_is_directory=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MULTIMODAL_", "SAGEMAKER_", "OMP_", "MKL_"))}
    env.update(PYTHONPATH=str(tree), MULTIMODAL_ML_ROOT=str(work / "ml"), SAGEMAKER_BIND_TO_PORT=str(port),
               MULTIMODAL_BIND_HOST=HOST, SAGEMAKER_MODEL_SERVER_WORKERS="1", MULTIMODAL_LOG_LEVEL="warning",
               SAGEMAKER_MAX_PAYLOAD_IN_MB="50", MULTIMODAL_CACHE_DIR=str(work / "cache"))
    env.update(settings)  # a setting may override the ones above (MULTIMODAL_LOG_LEVEL=info to see each request)
    with open(work / "server.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "multimodal.sagemaker.serving"], env=env, cwd=work,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while ping(port) != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{tree}: the server did not start; see {work / 'server.log'}")
            time.sleep(0.2)
        out = {}
        for name, (rows, body) in cases.items():
            repeats = one_row if rows == 1 else batches
            for _ in range(3):  # warm-up
                request(port, "POST", "/invocations", body, {"Content-Type": "text/csv"})
            seconds = []
            for _ in range(repeats):
                t = time.perf_counter()
                status, answer = request(port, "POST", "/invocations", body, {"Content-Type": "text/csv"})
                seconds.append(time.perf_counter() - t)
                if status != 200:
                    raise RuntimeError(f"{name}: {status} {answer[:300]!r}")
            ordered = sorted(seconds)
            out[name] = {"requests": repeats, "p50_ms": round(1000 * statistics.median(ordered), 1),
                         "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
                         "max_ms": round(1000 * ordered[-1], 1),
                         "rows_per_s": round(rows / statistics.median(ordered), 1), "body_kb": len(body) // 1024}
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def markdown(results: dict) -> str:
    lines = ["| model | code | request | p50 ms | p99 ms | max ms | rows/s |", "|---|---|---|---:|---:|---:|---:|"]
    for model, trees in results["models"].items():
        for tree, cases in trees.items():
            for name, r in cases.items():
                lines.append(f"| {model} | {tree} | {name} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                             f"{r['rows_per_s']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with (a git worktree of it)")
    parser.add_argument("--folds", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--one-row", type=int, default=100, help="one-row requests per case")
    parser.add_argument("--batches", type=int, default=5, help="64-row requests")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    baseline = work / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.baseline],
                   check=True, capture_output=True)
    results = {"baseline": args.baseline, "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0]
               .strip(": "), "models": {}}
    try:
        cases = bodies()
        for folds in args.folds:
            model = work / f"model-{folds}-folds"
            print(f"training the {folds}-fold model…", flush=True)
            train(model, folds, baseline)
            name = f"toy, {folds} folds"
            results["models"][name] = {}
            for label, tree, settings in ((f"before ({args.baseline})", baseline, {}), ("now", ROOT, {}),
                                          ("now, bf16 opt-in", ROOT, {"MULTIMODAL_ENCODER_PRECISION": "bf16"})):
                print(f"  {label}…", flush=True)
                results["models"][name][label] = measure(tree, model, work / label.split()[0], cases, args.one_row,
                                                         args.batches, settings)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], capture_output=True)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "latency.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
