#!/usr/bin/env python
"""The image expert alone on all embedding dimensions against a few principal components of them.

Usage::

    .venv/bin/python bench/image_expert_pca.py        # clothing from /tmp/bench-data, 2,000 / 1,000 rows

The trial behind issue 19's memory plan (an image expert on principal components, so that AutoGluon copies a
smaller matrix): the image column of ``bench/datasets.py``'s clothing set embedded once (efficientnet_lite0),
then one image expert (``Expert.fit``, 5 folds, 120 s) per quality and width — all 1,280 dimensions, 256 and
128 principal components (``Reducer``, fitted on the training rows) — scored on the test rows. One JSON line
each.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from compare import embed_images, read_split  # noqa: E402


def main() -> int:
    from multimodal.core.experts import Expert, ExpertSpec
    from multimodal.core.reduction import Reducer
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench-data"))
    parser.add_argument("--dataset", default="clothing")
    args = parser.parse_args()
    train, test = read_split(args.data, args.dataset, 2000, 1000)
    embedded_train, embedded_test = embed_images(train), embed_images(test)
    column = next(iter(embedded_train))
    classes = {c: i for i, c in enumerate(sorted(train["label"].unique()))}
    y, y_test = train["label"].map(classes).to_numpy(), test["label"].map(classes).to_numpy()
    for quality in ("toy", "light"):
        for dims in (0, 256, 128):
            a, b = embedded_train[column], embedded_test[column]
            if dims:
                reducer = Reducer.fit(a, dims, seed=0)
                a, b = reducer.transform(a), reducer.transform(b)
            names = [f"{column}__{i}" for i in range(a.shape[1])]
            with tempfile.TemporaryDirectory() as tmp:
                expert, oof = Expert.fit(ExpertSpec(column, "image", [column]), pd.DataFrame(a, columns=names), y,
                                         path=Path(tmp) / "expert", quality=quality, n_folds=5, time_limit=120,
                                         seed=0, text_columns=[])
                proba = expert.outputs(pd.DataFrame(b, columns=names))
            n = len(classes)
            print(json.dumps({"quality": quality, "dims": a.shape[1],
                              "test_accuracy": float((proba[:, :n].argmax(1) == y_test).mean()),
                              "oof_accuracy": float((oof[:, :n].argmax(1) == y).mean())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
