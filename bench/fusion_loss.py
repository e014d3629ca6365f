#!/usr/bin/env python
"""The regression fusion network's loss: mean squared error against Huber, on the same experts.

Usage::

    .venv/bin/python bench/fusion_loss.py --data /tmp/bench-reg --datasets films_rating loans_income \\
        [--minutes 2] [--quality toy] [--write-docs]

For each data set (``bench/datasets.py --out DIR`` writes them) one ``MultimodalRegressor`` is fitted; its
experts' out-of-fold predictions are then given to the fusion network once per loss, everything else equal
(same inputs, seed, early stopping on the same held-out rows), and each fused model is scored on the test rows.
Only the loss differs, so the comparison needs no second fit of the experts. Prints a markdown table (and
appends it to docs/benchmarks.md with ``--write-docs``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("fusion_loss")


def compare_losses(train: pd.DataFrame, test: pd.DataFrame, minutes: int, quality: str) -> dict[str, dict]:
    from multimodal.core import fusion
    from multimodal.core.estimator import MultimodalEstimator, MultimodalRegressor
    from multimodal.core.timebudget import TimeBudget
    captured = {}
    original = MultimodalEstimator._fit_fusion

    def capture(self, *args):  # the experts' out-of-fold inputs, kept to refit the fusion network alone
        captured["args"] = args
        return original(self, *args)

    MultimodalEstimator._fit_fusion = capture
    try:
        model = MultimodalRegressor(n_mins=minutes, quality=quality, image_model="efficientnet_lite0", seed=0)
        model.fit(train)
    finally:
        MultimodalEstimator._fit_fusion = original
    results = {}
    for loss in fusion.REGRESSION_LOSSES:
        fusion.REGRESSION_LOSS = loss
        train_split, x, validation, _ = captured["args"]
        original(model, train_split, x, validation, TimeBudget(3600))  # same generous limit for each loss
        scores = model.evaluate(test)
        results[loss] = {"rmse": scores["rmse"], "mae": scores["mae"], "r2": scores["r2"],
                         "epochs": model.metrics_["fusion_curve"]["best_epoch"]}
        log.info("%s: %s", loss, results[loss])
    return results


def table(results: dict[str, dict[str, dict]], minutes: int, quality: str) -> str:
    lines = [f"### Regression fusion loss ({dt.date.today()}, experts {minutes} min {quality}, "
             f"{platform.processor() or platform.machine()})", "",
             "| data | loss | RMSE | MAE | R² | best epoch |", "|---|---|---:|---:|---:|---:|"]
    for name, by_loss in results.items():
        for loss, s in by_loss.items():
            lines.append(f"| {name} | {loss} | {s['rmse']:.4f} | {s['mae']:.4f} | {s['r2']:.4f} | {s['epochs']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument("--quality", default="toy")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = {}
    for name in args.datasets:
        train = pd.read_csv(args.data / name / "train.csv", dtype=str, keep_default_na=False)
        test = pd.read_csv(args.data / name / "test.csv", dtype=str, keep_default_na=False)
        results[name] = compare_losses(train, test, args.minutes, args.quality)
    text = table(results, args.minutes, args.quality)
    print(text)
    if args.write_docs:
        with open(ROOT / "docs" / "benchmarks.md", "a", encoding="utf-8") as docs:
            docs.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
