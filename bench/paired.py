#!/usr/bin/env python
"""A product variant (``fit_variant.py --rows``) against an earlier ``compare.py`` run on the same set, seed and
rows: the differences to AutoGluon on all columns, to the product as it was, and to the variant's own best expert,
each paired over the test rows.

Usage::

    .venv/bin/python bench/paired.py --compare docs/results/i18-best-seed1-zen3.jsonl.gz [more.jsonl.gz ...] \\
        --budget 10:best /tmp/variant-movielens.json [/tmp/variant-films.json ...] [/tmp/later/compare.jsonl]

A later ``compare.py --methods product`` run (changed code, same seeds and rows) can stand for a variant: its
product runs are read, its AutoGluon runs (if any) ignored.

Accuracy differences are in points, regression ones in RMSE (standard errors as ``compare.py --table``'s: of the
per-row difference in correctness, or a bootstrap of the rows). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import paired_se, read_results  # noqa: E402


def score(rows: list[float], regression: bool) -> float:
    return float(np.sqrt(np.mean(rows))) if regression else float(np.mean(rows))


def difference(a: list[float], b: list[float], regression: bool) -> str:
    if len(a) != len(b):
        raise SystemExit(f"{len(a)} rows against {len(b)}: not the same test rows (same seed and --max-*-rows?)")
    d = np.array([score(a, regression) - score(b, regression)]) * (1.0 if regression else 100.0)
    se = paired_se(d, a, b, regression)
    return f"{d[0]:+.4f} ± {se:.4f}" if regression else f"{d[0]:+.2f} ± {se:.2f}"


def row(variant: dict, earlier: dict[tuple[str, str, int], dict]) -> str:
    name, seed = variant["dataset"], variant["seed"]
    try:
        product, baseline = earlier[(name, "product", seed)], earlier[(name, "all-columns", seed)]
    except KeyError:
        raise SystemExit(f"{name}: the compare.py results hold no product and all-columns run of seed {seed} at "
                         "this budget") from None
    regression = "rmse" in variant
    mine = variant["rows_scored"]
    # fit_variant.py gives each expert's primary score, compare.py each expert's scores by metric
    experts = {k: v["rmse" if regression else "accuracy"] if isinstance(v, dict) else v
               for k, v in variant["experts"].items()}
    best = (min if regression else max)(experts, key=experts.get)
    fused = score(mine["fused"], regression)
    return (f"| {name} | {seed} | {fused:.4f} | {score(product['rows_scored']['fused'], regression):.4f} | "
            f"{score(baseline['rows_scored'], regression):.4f} | "
            f"{difference(mine['fused'], baseline['rows_scored'], regression)} | "
            f"{difference(mine['fused'], product['rows_scored']['fused'], regression)} | "
            f"{difference(mine['fused'], mine[best], regression)} ({best}) | "
            f"{difference(mine['joint'], baseline['rows_scored'], regression)} | "
            f"{difference(mine['joint'], product['rows_scored']['joint'], regression)} | "
            f"{variant['fusion_choice']['chosen']} | {variant['fit_seconds']:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, nargs="+", required=True,
                        help="compare.py's results (.jsonl or .jsonl.gz; several: e.g. one file per seed)")
    parser.add_argument("--budget", required=True, help="which of its runs: MINUTES:QUALITY, e.g. 10:best")
    parser.add_argument("variants", nargs="+", type=Path,
                        help="fit_variant.py --rows output lines, or a later compare.py's results (its product runs)")
    args = parser.parse_args()
    minutes, quality = args.budget.split(":")
    lines = [line for path in args.compare for line in read_results(path).splitlines() if line.strip()]
    earlier = {(r["dataset"], r["method"], r["seed"]): r for r in map(json.loads, lines)
               if r.get("budget_mins") == int(minutes) and r.get("quality") == quality and "error" not in r}
    print("| data | seed | variant | product before | all-columns | variant − all-columns | variant − before | "
          "variant − its best expert | its joint − all-columns | its joint − joint before | fusion chose | fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for path in args.variants:
        for line in filter(str.strip, read_results(path).splitlines()):
            variant = json.loads(line)
            if variant.get("method", "product") != "product" or "error" in variant:
                continue  # AutoGluon's runs and failed runs of a later compare.py
            if "rows_scored" not in variant:
                raise SystemExit(f"{path}: a run of {variant['dataset']} without per-row scores (fit_variant.py "
                                 "needs --rows)")
            print(row(variant, earlier))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
