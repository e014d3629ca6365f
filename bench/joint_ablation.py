#!/usr/bin/env python
"""The joint expert alone against one AutoGluon predictor on the same columns, one difference at a time.

Usage::

    .venv/bin/python bench/joint_ablation.py --data /tmp/bench-data --datasets films movielens tweets \\
        [--quality toy] [--seconds 120] [--max-train-rows 3000] [--max-test-rows 2000]

Each variant is one bagged AutoGluon expert (``multimodal.core.experts.Expert.fit``, the product's settings:
5 folds, log-loss, no calibration) fitted on the training rows and scored alone on the test rows:

* ``product``: the joint expert's input as the product builds it (numbers with a missing value as 0 plus a 0/1
  indicator, categories with "unknown", text columns forced to AutoGluon's text type);
* ``autodetect-text``: the same frame, AutoGluon deciding itself whether a text column is text or a category;
* ``nan-numbers``: missing numbers left missing (NaN, no indicators), the rest as the product;
* ``user-frame``: the columns as a user gives them to AutoGluon (``bench/compare.py``'s all-columns input:
  numbers NaN, categories and text raw with empty = missing, AutoGluon's own type detection);
* ``all-columns``: ``bench/compare.py``'s baseline itself (AutoGluon's defaults: calibration on);
* ``stacked``: the product's frame with one stacking level inside the expert (what ``quality=best`` did before
  issue 18: ``num_stack_levels=1``, ``dynamic_stacking=False``);
* ``text-embeddings``: the product's frame plus, for each text column, the first ``TEXT_PCS`` principal components
  of its all-MiniLM-L6-v2 sentence embedding (fitted on the training rows): meaning the n-grams cannot see;
* ``on-experts``: the product's frame plus every expert's outputs from a fitted product (out-of-fold on the
  training rows, the fitted bags' on the test rows), read from ``bench/fusion_choice.py``'s ``<set>.npz`` in
  ``--experts-npz``: AutoGluon as a second-level stacker over the experts with the original columns, in place of
  the fusion. The npz must come from the same rows (same ``--max-*-rows`` and seed 0).

Each expert variant also reports its out-of-fold scores on the training rows (what the fusion trains on): an
out-of-fold accuracy far above the test accuracy means the out-of-fold outputs leak, and a fusion fitted on them
learns to trust the expert more than it deserves (AutoGluon calls this "stacked overfitting").

Classification sets only. Prints one JSON line per variant and a table.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import N_FOLDS, SEED, read_split, run_all_columns, user_frame  # noqa: E402

VARIANTS = ("product", "autodetect-text", "nan-numbers", "user-frame", "all-columns", "stacked", "on-experts",
            "text-embeddings")
TEXT_PCS = 32


def joint_frames(train, test, variant: str):
    """(train frame, test frame, text columns forced to the text type, class list, y_train, y_test)."""
    from multimodal.core.schema import Schema, encode_labels, labels_to_indices, prepare_features
    from multimodal.core.views import Views, expert_specs, missing_indicators
    schema = Schema.from_header(list(train.columns))
    classes, y_train, _ = encode_labels(train["label"], source="train")
    y_test, _ = labels_to_indices(test["label"], classes, source="test")
    if variant == "user-frame":
        return (user_frame(train.drop(columns="label"), {}), user_frame(test.drop(columns="label"), {}), [],
                classes, y_train, y_test)
    f_train, f_test = prepare_features(train, schema), prepare_features(test, schema)
    views = Views(schema, text_model="ngrams")
    indicators = [] if variant == "nan-numbers" else missing_indicators(schema, f_train)
    spec = next(s for s in expert_specs(schema, indicators=indicators, joint=True) if s.modality == "joint")
    frames = [views.frame(spec, f, {}) for f in (f_train, f_test)]
    if variant == "nan-numbers":
        for frame, features in zip(frames, (f_train, f_test)):
            for column in schema.names("num"):
                frame.loc[features.missing[column].to_numpy(), column] = np.nan
    text = [] if variant == "autodetect-text" else views.raw_text_columns(spec)
    return frames[0], frames[1], text, classes, y_train, y_test


def with_expert_outputs(x_train, x_test, y_train, npz: Path):
    """The frames with the fitted product's expert outputs appended as numeric columns (rows checked by label)."""
    import pandas as pd
    saved = np.load(npz)
    if len(saved["y"]) != len(x_train) or not np.array_equal(saved["y"], y_train):
        raise SystemExit(f"{npz}: its training rows are not these (fit it with the same rows and seed)")
    names = [f"expert_output_{i}" for i in range(saved["x"].shape[1])]
    return tuple(pd.concat([frame.reset_index(drop=True), pd.DataFrame(values, columns=names)], axis=1)
                 for frame, values in ((x_train, saved["x"]), (x_test, saved["x_test"])))


def with_text_embeddings(x_train, x_test, text_columns: list[str], seed: int):
    """The frames with each text column's first ``TEXT_PCS`` MiniLM principal components appended."""
    import pandas as pd
    from multimodal.core.reduction import Reducer
    from multimodal.core.text import TextEmbedder
    encoder = TextEmbedder("minilm")
    parts_train, parts_test = [x_train.reset_index(drop=True)], [x_test.reset_index(drop=True)]
    for column in text_columns:
        e_train = encoder.embed(x_train[column].tolist(), column=column)
        e_test = encoder.embed(x_test[column].tolist(), column=column)
        reducer = Reducer.fit(e_train, TEXT_PCS, seed=seed)
        names = [f"{column}__pc{i}" for i in range(reducer.dims)]
        parts_train.append(pd.DataFrame(reducer.transform(e_train), columns=names))
        parts_test.append(pd.DataFrame(reducer.transform(e_test), columns=names))
    return pd.concat(parts_train, axis=1), pd.concat(parts_test, axis=1)


def run(train, test, variant: str, quality: str, seconds: int, experts_npz: Path | None = None) -> dict:
    from multimodal.core.experts import QUALITY, Expert, ExpertSpec
    from multimodal.core.scores import classification_scores
    from multimodal.core.targets import real_class_probabilities
    work = Path(tempfile.mkdtemp(prefix="joint-ablation-"))
    started = time.monotonic()
    if variant == "all-columns":
        result = run_all_columns(train, test, max(1, seconds // 60), quality, work)
        return {"accuracy": result["accuracy"], "log_loss": result["log_loss"],
                "fit_seconds": result["fit_seconds"], "best_model": result["best_model"]}
    x_train, x_test, text, classes, y_train, y_test = joint_frames(
        train, test, "product" if variant in ("stacked", "on-experts", "text-embeddings") else variant)
    if variant == "on-experts":
        x_train, x_test = with_expert_outputs(x_train, x_test, y_train, experts_npz)
    if variant == "text-embeddings":
        x_train, x_test = with_text_embeddings(x_train, x_test, text, SEED)
    spec = ExpertSpec("joint", "joint", list(x_train.columns))
    if variant == "stacked":  # the same preset and folds with one stacking level (and no dynamic stacking)
        preset, _, folds = QUALITY[quality]
        QUALITY["stacked"] = (preset, 1, folds)
        quality = "stacked"
    expert, oof = Expert.fit(spec, x_train, y_train, path=work / "joint", quality=quality, n_folds=N_FOLDS,
                             time_limit=seconds, seed=SEED, text_columns=text)
    fit_seconds = time.monotonic() - started
    proba = real_class_probabilities(expert.outputs(x_test), expert.classes, len(classes))
    scores = classification_scores(y_test, proba, len(classes))
    oof_scores = classification_scores(y_train, real_class_probabilities(oof, expert.classes, len(classes)),
                                       len(classes))
    return {"accuracy": scores["accuracy"], "log_loss": scores["log_loss"], "fit_seconds": fit_seconds,
            "oof_accuracy": oof_scores["accuracy"], "oof_log_loss": oof_scores["log_loss"],
            "best_model": expert.predictor.model_best,
            "models": int(len(expert.leaderboard)) if expert.leaderboard is not None else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--quality", default="toy")
    parser.add_argument("--seconds", type=int, default=120, help="time limit of each fit")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--max-train-rows", type=int, default=3000)
    parser.add_argument("--max-test-rows", type=int, default=2000)
    parser.add_argument("--experts-npz", type=Path, help="bench/fusion_choice.py's output folder (on-experts)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for dataset in args.datasets:
        train, test = read_split(args.data, dataset, args.max_train_rows, args.max_test_rows)
        for variant in args.variants:
            result = {"dataset": dataset, "variant": variant, "quality": quality_name(args),
                      **run(train, test, variant, args.quality, args.seconds,
                             args.experts_npz and args.experts_npz / f"{dataset}.npz")}
            print(json.dumps(result), flush=True)
            rows.append(result)
    print("\n| data | variant | accuracy | log-loss | out-of-fold accuracy | out-of-fold log-loss | fit s | best model |"
          "\n|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        oof = (f"{r['oof_accuracy']:.4f} | {r['oof_log_loss']:.4f}" if "oof_accuracy" in r else "— | —")
        print(f"| {r['dataset']} | {r['variant']} | {r['accuracy']:.4f} | {r['log_loss']:.4f} | {oof} | "
              f"{r['fit_seconds']:.0f} | {r['best_model']} |")
    return 0


def quality_name(args: argparse.Namespace) -> str:
    return f"{args.quality}, {args.seconds} s"


if __name__ == "__main__":
    sys.exit(main())
