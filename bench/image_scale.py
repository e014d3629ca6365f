#!/usr/bin/env python
"""Peak memory of a whole training job by the number of image rows given as files (issue 19's "at scale").

Usage::

    .venv/bin/python bench/image_scale.py --rows 5000 50000 [--variants auto true] [--kilobytes 30] \\
        [--minutes 12] [--work /tmp/image-scale]

Writes ``max(--rows)`` distinct JPEGs of about ``--kilobytes`` KB (``multimodal.tools.synthetic.photo_jpeg``) once
under WORK/photos, then for each row count and ``reduce_image_embeddings`` variant runs one training job
(``bench/image_sources.py``'s ``run_job``: an ``images`` channel of the first N photos, hard-linked, and a
CSV of ID, price_num, colour_cat, photo_image as a relative path, label; quality=toy, n_folds=2, efficientnet_lite0,
the other hyperparameters at the spec's defaults), one after another, polling the RSS of the job's process tree
(``bench/train_memory.py``'s ``measure``). Reported: wall time, the end of embedding, the peak RSS of the tree, and
per variant the growth of that peak between the smallest and largest row count against the growth of the
embedding matrix (rows × 1,280 float32): issue 19's bound is 2×.

The photos are small (the memory in question is the embedding matrix and the experts' copies of it, not the
pixels, which are decoded one batch at a time): 50,000 real-size product photos would need about 27 GB of disk.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from expert_memory import report  # noqa: E402
from image_sources import run_job, write_photos  # noqa: E402
from train_memory import MB  # noqa: E402

log = logging.getLogger("image_scale")
WIDTH = 1280  # efficientnet_lite0's embedding


def job_root(work: Path, name: str, photos: list[Path], hyperparameters: dict[str, str]) -> Path:
    """An /opt/ml tree: the train channel's CSV of relative paths and an images channel of hard links."""
    root = work / "jobs" / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "input" / "config").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "output").mkdir()
    (root / "input" / "data" / "train").mkdir(parents=True)
    target = root / "input" / "data" / "images" / "photos"
    target.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = ["red", "blue", "green", "black"]
    with open(root / "input" / "data" / "train" / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "price_num", "colour_cat", "photo_image", "label"])
        for i, photo in enumerate(photos):
            os.link(photo, target / photo.name)
            price = rng.normal()
            writer.writerow([f"p{i}", f"{price:.3f}", colours[i % 4], f"photos/{photo.name}",
                             "dear" if price > 0 else "cheap"])
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    channel = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps({
        "train": {"ContentType": "text/csv", **channel}, "images": {"ContentType": "application/x-image", **channel}}))
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[5000, 50000])
    parser.add_argument("--variants", nargs="+", default=["auto", "true"], choices=["auto", "true", "false"],
                        help="reduce_image_embeddings values")
    parser.add_argument("--kilobytes", type=float, default=30)
    parser.add_argument("--minutes", type=int, default=12, help="the jobs' n_mins")
    parser.add_argument("--work", type=Path, default=Path("/tmp/image-scale"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    photos = write_photos(args.work / "photos", max(args.rows), args.kilobytes)
    results = []
    for variant in args.variants:
        for rows in sorted(args.rows):
            hyperparameters = {"quality": "toy", "n_folds": "2", "n_hours": "0", "n_mins": str(args.minutes),
                               "n_secs": "0", "image_model": "efficientnet_lite0",
                               "reduce_image_embeddings": variant}
            log.info("training job: %d image rows, reduce_image_embeddings=%s…", rows, variant)
            root = job_root(args.work, f"{variant}-{rows}", photos[:rows], hyperparameters)
            result = {"variant": variant, "rows": rows, "matrix_mb": round(rows * WIDTH * 4 / MB, 1),
                      **run_job(root, dict(os.environ), timeout=args.minutes * 60 * 3)}
            log.info("  → %s", result)
            results.append(result)
            shutil.rmtree(root / "input" / "data" / "images", ignore_errors=True)
    print(json.dumps(results))
    report(results, {"reduce_image_embeddings": "{}", "image rows": "{:,}", "embedding matrix MB": "{:,.0f}",
                     "embedded by s": "{:.0f}", "job wall s": "{:.0f}", "peak RSS of the job MB": "{:,.0f}"},
           ["variant", "rows", "matrix_mb", "read_and_embed_s", "wall_s", "peak_tree_mb"], "peak_tree_mb", "MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
