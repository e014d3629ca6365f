#!/usr/bin/env python
"""Peak memory of one image expert's fit, in copies of its embedding matrix.

Usage::

    .venv/bin/python bench/expert_memory.py --rows 5000 50000 [--width 1280] [--seconds 60]

For each row count a fresh Python process builds an embedding matrix (rows × width, float32, random but with a
label that depends on it, as an image column's embeddings would be), then does what the estimator does once the
rows are embedded: fits the principal components and replaces the matrix by them where
``reduce_image_embeddings`` says so (``Views.fit_reducers`` and ``Views.reduce``, at the spec's
``image_embedding_dims``), builds the image expert's frame (``Views.frame``) and
fits the expert (``Expert.fit``, quality toy, 2 folds). It reports the process's resident memory with the full
matrix built, its high-water mark (``ru_maxrss``) at the end, and their difference in copies of the matrix.
The growth of the peak between row counts, against the growth of the matrix, is the figure of issue 19 ("≤ 2×
the growth of the embedding matrices"). Runs go one after another.

Variants: ``product`` (the spec's defaults: ``reduce_image_embeddings=auto``, which reduces above 25,000 rows),
``reduced`` (``reduce_image_embeddings=true``), ``full`` (``false``: the expert reads all dimensions, as every
fit did before issue 19's fix), ``identity`` (``full`` with AutoGluon's feature generation replaced by a
pass-through, a trial).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, {root!r})
from multimodal.core.experts import Expert, ExpertSpec
from multimodal.core.schema import Column, Schema
from multimodal.core.views import Views
import autogluon.tabular  # imported before the baseline: its import is not the expert's memory
variant = {variant!r}
models = {models!r}
if models:  # only these model families of the quality's portfolio
    from multimodal.core import experts as _experts
    _portfolio = _experts.hyperparameters_for
    _experts.hyperparameters_for = lambda quality, modality=None: {{k: v for k, v in _portfolio(quality, modality).items() if k in models}}
if "identity" in variant:  # AutoGluon's feature generation replaced by a pass-through (bench only: a trial)
    from autogluon.features.generators import IdentityFeatureGenerator
    from multimodal.core import experts as _experts
    _fit = _experts._fit_in_time
    _experts._fit_in_time = lambda predictor, data, **kw: _fit(predictor, data,
                                                                 feature_generator=IdentityFeatureGenerator(), **kw)

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
rows, width, seconds = {rows}, {width}, {seconds}
rng = np.random.default_rng(0)
matrix = rng.standard_normal((rows, width), dtype=np.float32)
target = (matrix[:, :8].sum(axis=1) > 0).astype(int) + (matrix[:, 8:16].sum(axis=1) > 0).astype(int)
matrix_mb = matrix.nbytes / 2**20
schema = Schema(["ID", "photo_image", "label"], [Column("photo_image", "image")])
from multimodal.core.hyperparameters import defaults
from multimodal.core.views import reduces_images
setting = {{"full": "false", "identity": "false", "reduced": "true"}}.get(variant,
                                                                         defaults()["reduce_image_embeddings"])
dims = defaults()["image_embedding_dims"] if reduces_images(setting, rows) else 0
views = Views(schema, text_model="ngrams")
spec = ExpertSpec("photo_image", "image", ["photo_image"])
before = rss_mb()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
embeddings = {{"photo_image": matrix}}
del matrix  # the estimator's embeddings dict is the only reference
views.fit_reducers(embeddings, image_dims=dims, joint=False, seed=0)
views.reduce(embeddings)
frame = views.frame(spec, None, embeddings)
with tempfile.TemporaryDirectory() as tmp:
    Expert.fit(spec, frame, target, path=Path(tmp) / "photo_image", quality="toy", n_folds=2, time_limit=seconds,
               seed=0, text_columns=[])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"variant": variant + (":" + "+".join(models) if models else ""), "rows": rows, "width": width,
                  "matrix_mb": matrix_mb, "expert_width": frame.shape[1], "rss_before_mb": before,
                  "peak_before_fit_mb": peak_before, "peak_mb": peak}}))
"""


def run(rows: int, width: int, seconds: int, variant: str = "product", models: list[str] | None = None) -> dict:
    code = CHILD.format(root=str(ROOT), rows=rows, width=width, seconds=seconds, variant=variant, models=models or [])
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"{rows} rows: exit {out.returncode}\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["fit_growth_mb"] = result["peak_mb"] - result["rss_before_mb"]
    result["copies"] = result["fit_growth_mb"] / result["matrix_mb"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[5000, 50000])
    parser.add_argument("--width", type=int, default=1280, help="embedding width (efficientnet_lite0: 1280)")
    parser.add_argument("--seconds", type=int, default=60, help="the expert's time limit")
    parser.add_argument("--variants", nargs="+", default=["product", "reduced", "full"],
                        choices=["product", "reduced", "full", "identity"],
                        help="reduced / full: reduce_image_embeddings=true / false; identity: full with AutoGluon's "
                             "feature generation replaced by IdentityFeatureGenerator (a trial)")
    parser.add_argument("--models", nargs="+", metavar="FAMILY",
                        help="one run per family (GBM, CAT, XGB, NN_TORCH, …): which model holds the peak")
    args = parser.parse_args()
    families = [[m] for m in args.models] if args.models else [None]
    results = [run(rows, args.width, args.seconds, variant, models) for variant in args.variants
               for models in families for rows in args.rows]
    for r in results:
        print(json.dumps(r))
    report(results, {"variant": "{}", "rows": "{:,}", "matrix MiB": "{:.0f}", "expert's columns": "{:,}",
                     "RSS with the matrix MiB": "{:.0f}", "peak MiB": "{:.0f}", "growth after embedding MiB": "{:.0f}",
                     "copies of the matrix": "{:.1f}"},
           ["variant", "rows", "matrix_mb", "expert_width", "rss_before_mb", "peak_mb", "fit_growth_mb", "copies"],
           "peak_mb", "MiB")
    return 0


def report(results: list[dict], columns: dict[str, str], keys: list[str], peak: str, unit: str) -> None:
    """A markdown table of ``results`` (column title → format, one result key per column), then the growth lines."""
    print("| " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * (len(columns) - 1))
    for r in results:
        print("| " + " | ".join(f.format(r[k]) for f, k in zip(columns.values(), keys)) + " |")
    for line in growth_lines(results, peak, unit):
        print(f"\n{line}")


def growth_lines(results: list[dict], peak: str, unit: str) -> list[str]:
    """Per variant, the growth of ``peak`` from its first to its last row count against the matrix's growth (the
    figure of issue 19's bound)."""
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        if len(runs) >= 2:
            first, last = runs[0], runs[-1]
            growth, matrix = last[peak] - first[peak], last["matrix_mb"] - first["matrix_mb"]
            lines.append(f"{variant}: from {first['rows']:,} to {last['rows']:,} rows the peak grows by "
                         f"{growth:,.0f} {unit} for {matrix:,.0f} {unit} more embedding matrix "
                         f"({growth / matrix:.1f}× its growth)")
    return lines


if __name__ == "__main__":
    sys.exit(main())
