#!/usr/bin/env python
"""The product against one AutoGluon predictor on all columns, side by side at the same total time budget.

Usage::

    .venv/bin/python bench/compare.py --data /tmp/bench-data --datasets clothing tweets ... \\
        --budgets 4:toy 10:light [--variant NAME:hp=value,hp=value ...] [--max-train-rows N] [--write-docs]

Data: the directories ``bench/datasets.py --out DIR`` writes (``DIR/<name>/train.csv`` and ``test.csv``). For
every budget (minutes:quality) and data set, each method runs in a child process of its own (so that its peak
RSS is its own), one after the other on the same machine:

* ``product`` — ``MultimodalClassifier(n_mins=…, quality=…, image_model=efficientnet_lite0)`` with the
  defaults of the spec file (and one more run per ``--variant``, e.g. ``minilm:text_model=minilm``): the
  fused accuracy and log-loss on the test rows, and each expert's alone (the joint expert's too), fit time,
  predict time per 1,000 rows (embedding included), artifact size, peak RSS, and the text encoder's
  sentences/s next to a bare forward of the same model when the product uses one;
* ``all-columns`` — what a user would pick instead: one bagged AutoGluon ``TabularPredictor`` given every column
  as a user would give it (text raw, numbers with missing values left missing, categories raw, each image as
  its efficientnet_lite0 embedding columns), the same hyperparameter preset and folds as the product's
  experts, and the same total budget (the image embedding time counts against it).

Regression data sets (``bench/datasets.py`` declares them: ``"problem_type": "regression"`` in their
``meta.json``, else its ``REGRESSION`` set; never guessed from the labels) are compared the same way:
``product`` is ``MultimodalRegressor`` (``multimodal.core.estimator``) with the same settings, scored by the fused
RMSE, MAE and R² on the test rows and each expert's alone; ``all-columns`` is the same bagged ``TabularPredictor``
with ``problem_type="regression"`` and ``eval_metric="root_mean_squared_error"``. Their table shows RMSE, MAE,
R², fit and predict time, in the units of the data set's label (``loans_income``: ln of the income).

Results: ``--out``/compare.json (appended run by run, so an interrupted run keeps what it finished) and a
markdown table (``--write-docs`` appends it to docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SEED = 0
IMAGE_MODEL = "efficientnet_lite0"
N_FOLDS = 5
REGRESSION = "regression"
log = logging.getLogger("bench.compare")


def dataset_meta(data: Path, name: str) -> dict:
    path = data / name / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def problem_type(data: Path, name: str) -> str:
    """"regression" or "classification", as bench/datasets.py declares it: the data set's meta.json, or (for
    directories written before it said so) its REGRESSION set of names."""
    declared = dataset_meta(data, name).get("problem_type")
    if declared:
        return declared
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_datasets", Path(__file__).with_name("datasets.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.problem_type(name)


def read_split(data: Path, name: str, max_train: int | None, max_test: int | None,
               kind: str | None = None, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """train.csv and test.csv as the training job reads them (every value text, empty = missing), capped (a
    stratified sample for classification, a random one for regression; ``seed`` draws it: repeated seeds give
    repeated samples of the rows)."""
    kind = kind or problem_type(data, name)
    frames = []
    for split, cap in (("train", max_train), ("test", max_test)):
        frame = pd.read_csv(data / name / f"{split}.csv", dtype=str, keep_default_na=False)
        if cap and len(frame) > cap:
            from sklearn.model_selection import train_test_split
            frame, _ = train_test_split(frame, train_size=cap, random_state=seed,
                                        stratify=None if kind == REGRESSION else frame["label"])
        frames.append(frame.reset_index(drop=True))
    return frames[0], frames[1]


def regression_target(frame: pd.DataFrame) -> np.ndarray:
    """The label column as numbers (a regression set's labels are all numbers; a blank one is an error)."""
    return pd.to_numeric(frame["label"], errors="raise").to_numpy(dtype=np.float64)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- the product

def run_product(train: pd.DataFrame, test: pd.DataFrame, budget_mins: int, quality: str,
                variant: dict[str, str], work: Path, kind: str = "classification", seed: int = SEED) -> dict:
    if kind == REGRESSION:
        return run_product_regression(train, test, budget_mins, quality, variant, work, seed)
    from multimodal import MultimodalClassifier
    model = MultimodalClassifier(n_mins=budget_mins, quality=quality, image_model=IMAGE_MODEL, seed=seed,
                                 n_folds=N_FOLDS, **variant)
    t = time.monotonic()
    model.fit(train)
    fit_seconds = time.monotonic() - t
    scores = model.evaluate(test)
    features = test.drop(columns="label")
    t = time.monotonic()
    model.predict_proba(features)
    predict_seconds = time.monotonic() - t
    size = model.save(work / "model")
    result = {"fit_seconds": fit_seconds, "budget_seconds": budget_mins * 60, "accuracy": scores["accuracy"],
              "log_loss": scores["log_loss"], "experts": {k: {"accuracy": v["accuracy"], "log_loss": v["log_loss"]}
                                                           for k, v in scores["experts"].items()},
              "predict_ms_per_1000_rows": 1000 * 1000 * predict_seconds / len(features),
              "artifact_mb": size / 1e6, "timings_seconds": model.metrics_.get("timings_seconds", {}),
              "fusion_choice": model.metrics_.get("fusion_choice"), "leftover": model.metrics_.get("leftover"),
              "params": {k: v for k, v in model.get_params().items()}, "rows_scored": product_rows(model, test)}
    result.update(text_throughput(model, test))
    return result


def fusion_inputs(model: Any, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The fusion's inputs for the test rows (every expert's outputs side by side) and their targets: class
    indices, or the numbers of a regression. Bench only: reaches into the estimator's steps as evaluate() does."""
    from multimodal.core.imagerefs import ImageSource
    from multimodal.core.schema import prepare_features
    features = prepare_features(test, model.schema_)
    with ImageSource() as images:
        x = model._fusion_inputs(features, model._embed(features, images=images))
    y, _ = model.target_.encode(test["label"], numbers=np.arange(len(test)), ids=None, source="the test rows")
    return x, y


def product_rows(model: Any, test: pd.DataFrame) -> dict[str, list[float]]:
    """Per test row, for standard errors paired over rows when a set runs at one seed: whether the fused model
    and each expert alone got the class right (classes) or the squared error (regression)."""
    from multimodal.core.targets import each_expert_probabilities
    x, y = fusion_inputs(model, test)
    if model.problem_type_ == REGRESSION:
        outputs = {"fused": model.target_.predicted(model.fusion_.predict(x))}
        outputs.update({e.name: model.target_.on_target_scale(x[:, i]) for i, e in enumerate(model.experts_)})
        return {k: ((v - y) ** 2).tolist() for k, v in outputs.items()}
    n = len(model.classes_)
    each = each_expert_probabilities(x, [e.classes for e in model.experts_], n)
    outputs = {"fused": model.fusion_.predict(x), **{e.name: p for e, p in zip(model.experts_, each)}}
    return {k: (v.argmax(axis=1) == y).astype(float).tolist() for k, v in outputs.items()}


def text_throughput(model: Any, test: pd.DataFrame) -> dict:
    """The text encoder's sentences/s on the test rows' first text column, when the product uses one."""
    text_columns = model.schema_.names("text")
    if model.text_model != "ngrams" and text_columns:
        from text_throughput import text_embedding_throughput
        sentences = [s for s in test[text_columns[0]].tolist() if s][:1000]
        return {"text_throughput": text_embedding_throughput(model._get_featurizer().embedder("text"), sentences)}
    return {}


def run_product_regression(train: pd.DataFrame, test: pd.DataFrame, budget_mins: int, quality: str,
                           variant: dict[str, str], work: Path, seed: int = SEED) -> dict:
    """The product on a regression set (the estimator contract of issue 12): the frames go in as the training
    job reads them, labels as text."""
    from multimodal.core.estimator import MultimodalRegressor
    model = MultimodalRegressor(n_mins=budget_mins, quality=quality, image_model=IMAGE_MODEL, seed=seed,
                                n_folds=N_FOLDS, **variant)
    t = time.monotonic()
    model.fit(train)
    fit_seconds = time.monotonic() - t
    if model.problem_type_ != REGRESSION:
        raise RuntimeError(f"MultimodalRegressor fitted a {model.problem_type_!r} model")
    scores = model.evaluate(test)
    features = test.drop(columns="label")
    t = time.monotonic()
    predicted = model.predict(features)
    predict_seconds = time.monotonic() - t
    if len(predicted) != len(features) or not np.isfinite(predicted.to_numpy(dtype=np.float64)).all():
        raise RuntimeError(f"predict() gave {len(predicted)} values for {len(features)} rows, or non-finite ones")
    size = model.save(work / "model")
    metrics = ("rmse", "mae", "r2")
    validation = model.metrics_.get("validation", {})
    result = {"fit_seconds": fit_seconds, "budget_seconds": budget_mins * 60,
              **{m: scores[m] for m in metrics},
              "experts": {k: {m: v[m] for m in metrics} for k, v in scores["experts"].items()},
              "validation": {m: validation.get(m) for m in metrics},
              "validation_source": model.metrics_.get("validation_source"),
              "predict_ms_per_1000_rows": 1000 * 1000 * predict_seconds / len(features),
              "artifact_mb": size / 1e6, "timings_seconds": model.metrics_.get("timings_seconds", {}),
              "fusion_choice": model.metrics_.get("fusion_choice"), "leftover": model.metrics_.get("leftover"),
              "params": {k: v for k, v in model.get_params().items()}, "rows_scored": product_rows(model, test)}
    result.update(text_throughput(model, test))
    return result


# ---------------------------------------------------------------------------------------------- the baseline

def user_frame(frame: pd.DataFrame, embeddings: dict[str, np.ndarray]) -> pd.DataFrame:
    """The columns as a user gives them to AutoGluon: numbers parsed with missing values left missing,
    categories and text raw (empty = missing), each image as its embedding columns."""
    from multimodal.core.schema import Schema, parse_numbers
    schema = Schema.from_header(list(frame.columns) + ([] if "label" in frame else ["label"]))
    out = {}
    for column in schema.columns:
        raw = frame[column.name]
        if column.modality == "num":
            out[column.name] = parse_numbers(raw).values
        elif column.modality in ("text", "cat"):
            out[column.name] = raw.where(raw.str.strip() != "", None)
    parts = [pd.DataFrame(out, index=frame.index)]
    for column, matrix in embeddings.items():
        parts.append(pd.DataFrame(matrix, index=frame.index, columns=[f"{column}__{i}" for i in range(matrix.shape[1])]))
    return pd.concat(parts, axis=1)


def embed_images(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    from multimodal.core.images import ImageEmbedder
    columns = [c for c in frame.columns if c.endswith("_image")]
    if not columns:
        return {}
    embedder = ImageEmbedder(IMAGE_MODEL)
    return {c: embedder.embed([v if v.strip() else None for v in frame[c]], column=c, row_names=str) for c in columns}


def run_all_columns(train: pd.DataFrame, test: pd.DataFrame, budget_mins: int, quality: str, work: Path,
                    kind: str = "classification", seed: int = SEED) -> dict:
    """One AutoGluon predictor on all columns. At ``best`` exactly what a user who picks AutoGluon instead runs:
    ``TabularPredictor(label).fit(df, presets="best_quality", time_limit=T)`` (its own metric, its dynamic
    stacking and zero-shot portfolio); at the other qualities the product's experts' preset and folds."""
    from autogluon.tabular import TabularPredictor

    from multimodal.core.experts import QUALITY, hyperparameters_for
    from multimodal.core.scores import classification_scores, regression_scores
    regression = kind == REGRESSION
    started = time.monotonic()
    if regression:
        y_train, y_test = regression_target(train), regression_target(test)
    else:
        classes = sorted(set(train["label"]))
        y_train = train["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        y_test = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    x_train = user_frame(train.drop(columns="label"), embed_images(train))
    embed_seconds = time.monotonic() - started
    data = x_train.assign(__label__=y_train)
    _, stack_levels, min_folds = QUALITY[quality]
    # at best the metric is AutoGluon's default, as a user leaves it; the problem type is given only because the
    # labels here are class indices (a user's strings would tell AutoGluon the same)
    metric = None if quality == "best" else ("root_mean_squared_error" if regression else "log_loss")
    predictor = TabularPredictor(label="__label__", eval_metric=metric, path=str(work / "ag"), verbosity=1,
                                 problem_type=REGRESSION if regression else
                                 ("binary" if len(classes) == 2 else "multiclass"))
    time_limit = max(budget_mins * 60 - (time.monotonic() - started), 1.0)
    if quality == "best":
        predictor.fit(data, presets="best_quality", time_limit=time_limit)
    else:
        predictor.fit(data, time_limit=time_limit, hyperparameters=hyperparameters_for(quality),
                      num_bag_folds=max(N_FOLDS, min_folds), num_bag_sets=1, num_stack_levels=stack_levels,
                      dynamic_stacking=False, ag_args_ensemble={"model_random_seed": seed})
    fit_seconds = time.monotonic() - started
    features = test.drop(columns="label")
    t = time.monotonic()
    if regression:
        predicted = predictor.predict(user_frame(features, embed_images(features)))
        predict_seconds = time.monotonic() - t
        scores = regression_scores(y_test, predicted.to_numpy(dtype=np.float64))
        metrics = {"rmse": scores["rmse"], "mae": scores["mae"], "r2": scores["r2"],
                   "rows_scored": ((predicted.to_numpy(dtype=np.float64) - y_test) ** 2).tolist()}
    else:
        proba = predictor.predict_proba(user_frame(features, embed_images(features)), as_multiclass=True)
        predict_seconds = time.monotonic() - t
        proba = proba.reindex(columns=range(len(classes)), fill_value=0.0).to_numpy(dtype=np.float64)
        scores = classification_scores(y_test, proba, len(classes))
        metrics = {"accuracy": scores["accuracy"], "log_loss": scores["log_loss"],
                   "rows_scored": (proba.argmax(axis=1) == y_test).astype(float).tolist()}
    # which models AutoGluon fitted in the budget (and their validation scores): what the product's joint expert
    # is compared with
    leaderboard = [[row.model, round(float(row.score_val), 4)]
                   for row in predictor.leaderboard(silent=True).itertuples()]
    predictor.clone_for_deployment(str(work / "deploy"), dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in (work / "deploy").rglob("*") if f.is_file())
    return {"fit_seconds": fit_seconds, "budget_seconds": budget_mins * 60, "embed_seconds": embed_seconds,
            **metrics, "best_model": predictor.model_best, "leaderboard": leaderboard,
            "predict_ms_per_1000_rows": 1000 * 1000 * predict_seconds / len(features), "artifact_mb": size / 1e6}


# ---------------------------------------------------------------------------------------------- driver

def child(spec: dict) -> dict:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kind = spec.get("problem_type") or problem_type(Path(spec["data"]), spec["dataset"])
    seed = spec.get("seed", SEED)
    train, test = read_split(Path(spec["data"]), spec["dataset"], spec["max_train"], spec["max_test"], kind, seed)
    work = Path(tempfile.mkdtemp(prefix="compare-"))
    try:
        if spec["method"] == "all-columns":
            result = run_all_columns(train, test, spec["budget_mins"], spec["quality"], work, kind, seed)
        else:
            result = run_product(train, test, spec["budget_mins"], spec["quality"], spec["variant"], work, kind,
                                 seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extra = {"target_sd": float(np.std(regression_target(test)))} if kind == REGRESSION else {}
    return {**spec, **result, **extra, "rows": {"train": len(train), "test": len(test)}, "peak_rss_mb": peak_rss_mb(),
            "load_average": os.getloadavg()[0]}


def read_results(path: Path) -> str:
    """A compare.jsonl, or its gzip (how docs/results keeps earlier runs, with their per-row scores, for pooling
    with later seeds)."""
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def run_child(spec: dict, log_file: Path) -> dict:
    with open(log_file, "ab") as handle:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                             stderr=handle, timeout=spec["budget_mins"] * 60 * 4 + 900)
    if out.returncode != 0:
        return {**spec, "error": f"exit {out.returncode} (see {log_file})"}
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def parse_variants(items: list[str]) -> dict[str, dict[str, str]]:
    variants = {"product": {}}
    for item in items or []:
        name, _, settings = item.partition(":")
        variants[f"product:{name}"] = dict(pair.split("=", 1) for pair in settings.split(",") if pair)
    return variants


def method_cell(result: dict) -> str:
    """The method, and the seed when it is not the default one (repeated seeds give one row each)."""
    seed = result.get("seed", SEED)
    return result["method"] + (f" (seed {seed})" if seed != SEED else "")


def best_expert(result: dict) -> tuple[str, float]:
    if result.get("problem_type") == REGRESSION:  # the lowest RMSE
        experts = {k: v["rmse"] for k, v in result.get("experts", {}).items() if k != "joint"}
        name = min(experts, key=experts.get) if experts else "—"
        return name, experts.get(name, float("nan"))
    experts = {k: v["accuracy"] for k, v in result.get("experts", {}).items() if k != "joint"}
    name = max(experts, key=experts.get) if experts else "—"
    return name, experts.get(name, float("nan"))


def regression_markdown(results: list[dict]) -> list[str]:
    """The regression runs' table: RMSE, MAE, R² on the test rows (in the label's units), fit and predict time."""
    lines = ["| data (train/test rows, test target sd) | budget | method | RMSE | MAE | R² | best single expert (RMSE) "
             "| joint alone (RMSE) | fit s | predict ms / 1,000 rows | artifact MB | peak RSS MB |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['budget_mins']} min {r['quality']} | {r['method']} | error | | | | | | | | |")
            continue
        name, rmse = best_expert(r)
        joint = r.get("experts", {}).get("joint", {}).get("rmse")
        expert_cell = f"{name} {rmse:.3f}" if r["method"] != "all-columns" else "—"
        lines.append(f"| {r['dataset']} ({r['rows']['train']:,}/{r['rows']['test']:,}, sd {r['target_sd']:.3f}) | "
                     f"{r['budget_mins']} min {r['quality']} | {method_cell(r)} | **{r['rmse']:.3f}** | {r['mae']:.3f} | "
                     f"{r['r2']:.3f} | {expert_cell} | {'' if joint is None else f'{joint:.3f}'} | "
                     f"{r['fit_seconds']:.0f} | {r['predict_ms_per_1000_rows']:.0f} | {r['artifact_mb']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    targets = {r["dataset"]: r["target"] for r in results if r.get("target")}
    if targets:
        lines += ["", "Targets: " + "; ".join(f"{name}: {target}" for name, target in targets.items()) + "."]
    return lines + experts_markdown([r for r in results if "error" not in r and r.get("experts")])


def experts_markdown(results: list[dict]) -> list[str]:
    """Each expert of the product alone on the test rows, next to the fused model (RMSE / R²)."""
    experts = list(dict.fromkeys(name for r in results for name in r["experts"]))
    if not experts:
        return []
    lines = ["", "Each expert of the product alone on the test rows (RMSE / R²):", "",
             "| data | budget | method | " + " | ".join(experts) + " | fused |",
             "|---|---|---|" + "---:|" * (len(experts) + 1)]
    for r in results:
        cells = [f"{r['experts'][e]['rmse']:.3f} / {r['experts'][e]['r2']:.3f}" if e in r["experts"] else ""
                 for e in experts]
        lines.append(f"| {r['dataset']} | {r['budget_mins']} min {r['quality']} | {r['method']} | "
                     + " | ".join(cells) + f" | **{r['rmse']:.3f}** / {r['r2']:.3f} |")
    return lines


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    regression = [r for r in results if r.get("problem_type") == REGRESSION]
    results = [r for r in results if r.get("problem_type") != REGRESSION]
    lines = classification_markdown(results) if results else []
    if regression:
        lines += ([""] if lines else []) + regression_markdown(regression)
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    seeds = ", ".join(str(s) for s in sorted({r.get("seed", SEED) for r in results + regression}))
    lines += ["", f"Command: `python bench/compare.py {' '.join(sys.argv[1:])}`  ",
              f"Run: {when}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), seeds {seeds}, "
              f"{N_FOLDS} folds, image model {IMAGE_MODEL}; rows = train/test."]
    return "\n".join(lines)


def classification_markdown(results: list[dict]) -> list[str]:
    lines = ["| data | budget | method | accuracy | log-loss | best single expert | joint alone | fit s | "
             "predict ms / 1,000 rows | artifact MB | peak RSS MB |", "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['budget_mins']} min {r['quality']} | {r['method']} | error | | | | | | | |")
            continue
        name, accuracy = best_expert(r)
        joint = r.get("experts", {}).get("joint", {}).get("accuracy")
        expert_cell = f"{name} {accuracy:.3f}" if r["method"] != "all-columns" else "—"
        lines.append(f"| {r['dataset']} ({r['rows']['train']:,}/{r['rows']['test']:,}) | {r['budget_mins']} min "
                     f"{r['quality']} | {method_cell(r)} | **{r['accuracy']:.3f}** | {r['log_loss']:.3f} | {expert_cell} | "
                     f"{'' if joint is None else f'{joint:.3f}'} | {r['fit_seconds']:.0f} | "
                     f"{r['predict_ms_per_1000_rows']:.0f} | {r['artifact_mb']:.1f} | {r['peak_rss_mb']:.0f} |")
    throughput = [r for r in results if r.get("text_throughput")]
    if throughput:
        lines += ["", "| text encoder on the test rows' first text column | sentences | `embed()` sentences/s | bare "
                  "forward, same length-sorted batches | bare forward, batches in input order |", "|---|---:|---:|---:|---:|"]
    for r in throughput:
        t = r["text_throughput"]
        lines.append(f"| {r['dataset']}: {t['encoder']} | {t['sentences']} | {t['embed_sentences_per_s']:.0f} | "
                     f"{t['forward_sentences_per_s']:.0f} | {t['forward_unsorted_sentences_per_s']:.0f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory written by bench/datasets.py --out")
    parser.add_argument("--datasets", nargs="+", help="data set names (directories under --data)")
    parser.add_argument("--budgets", nargs="+", default=["4:toy", "10:light"], help="MINUTES:QUALITY pairs")
    parser.add_argument("--variant", action="append", help="NAME:hp=value,hp=value (an extra product run)")
    parser.add_argument("--methods", nargs="+", help="only these methods (product, product:NAME, all-columns)")
    parser.add_argument("--max-train-rows", type=int)
    parser.add_argument("--max-test-rows", type=int)
    parser.add_argument("--seeds", nargs="+", type=int, default=[SEED],
                        help="repeat every run per seed (rows sampled and models seeded by it): standard errors")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--table", nargs="+", type=Path, metavar="JSONL",
                        help="print (and with --write-docs append) the table of earlier runs' compare.jsonl "
                             "files (or .jsonl.gz)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child)), default=float))
        return 0
    if args.table:
        results = [json.loads(line) for path in args.table for line in read_results(path).splitlines() if line]
        return write_table(results, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    methods = {**parse_variants(args.variant), "all-columns": {}}
    results = []
    for budget in args.budgets:
        minutes, _, quality = budget.partition(":")
        for dataset, seed in [(d, s) for d in args.datasets for s in args.seeds]:
            kind, meta = problem_type(args.data, dataset), dataset_meta(args.data, dataset)
            for method, variant in methods.items():
                if args.methods and method not in args.methods:
                    continue
                spec = {"data": str(args.data), "dataset": dataset, "budget_mins": int(minutes), "quality": quality,
                        "method": method, "variant": variant, "max_train": args.max_train_rows,
                        "max_test": args.max_test_rows, "problem_type": kind, "seed": seed,
                        **({"target": meta.get("target")} if kind == REGRESSION else {})}
                log.info("%s (seed %d), %s min %s: %s…", dataset, seed, minutes, quality, method)
                result = run_child(spec, args.out / "children.log")
                log.info("  → %s", {k: result.get(k) for k in ("accuracy", "rmse", "r2", "fit_seconds", "error")
                                     if k in result})
                results.append(result)
                with open(args.out / "compare.jsonl", "a") as handle:
                    handle.write(json.dumps(result, default=float) + "\n")
    return write_table(results, args)


def summary_markdown(results: list[dict]) -> list[str]:
    """Per data set and budget, over the seeds: each method's mean score, the product's fused model against the
    all-columns predictor and against its own best expert (the joint one included), and the joint expert alone
    against the all-columns predictor: differences paired by seed, with their standard errors (accuracy points
    for classes, RMSE for regression, where the ratio of the means is given too)."""
    groups = defaultdict(dict)
    for r in results:
        if "error" not in r:
            groups[(r["dataset"], r["budget_mins"], r["quality"])].setdefault(r["method"], {})[r.get("seed", SEED)] = r
    lines = ["| data | budget | seeds | product | all-columns | product − all-columns (± se) | product ÷ all-columns | "
             "fused − its best expert (± se) | joint − all-columns (± se) | fusion chose |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (dataset, minutes, quality), methods in groups.items():
        product, baseline = methods.get("product", {}), methods.get("all-columns", {})
        seeds = sorted(set(product) & set(baseline))
        if seeds:
            lines.append(_summary_row(dataset, f"{minutes} min {quality}", seeds, product, baseline))
    return lines


def _summary_row(dataset: str, budget: str, seeds: list[int], product: dict, baseline: dict) -> str:
    regression = product[seeds[0]].get("problem_type") == REGRESSION
    metric = "rmse" if regression else "accuracy"

    def own_best(s: int) -> str:
        experts = product[s].get("experts", {})
        return (min if regression else max)(experts, key=lambda k: experts[k][metric])

    rows = {"fused": lambda s: product[s].get("rows_scored", {}).get("fused"),
            "best": lambda s: product[s].get("rows_scored", {}).get(own_best(s)),
            "joint": lambda s: product[s].get("rows_scored", {}).get("joint"),
            "baseline": lambda s: baseline[s].get("rows_scored")}
    scores = {"fused": lambda s: product[s][metric], "best": lambda s: product[s]["experts"][own_best(s)][metric],
              "joint": lambda s: product[s]["experts"]["joint"][metric], "baseline": lambda s: baseline[s][metric]}

    def diff(a: str, b: str) -> str:
        d = np.array([scores[a](s) - scores[b](s) for s in seeds]) * (1.0 if regression else 100.0)
        se = paired_se(d, rows[a](seeds[0]), rows[b](seeds[0]), regression)
        return f"{d.mean():+.3f} ± {se:.3f}" if regression else f"{d.mean():+.2f} ± {se:.2f}"

    has_joint = all("joint" in product[s].get("experts", {}) for s in seeds)
    chose = ", ".join(f"{k} {v}" for k, v in sorted(Counter(
        (product[s].get("fusion_choice") or {}).get("chosen", "?") for s in seeds).items()))
    mean_product = np.mean([product[s][metric] for s in seeds])
    mean_baseline = np.mean([baseline[s][metric] for s in seeds])
    return (f"| {dataset} | {budget} | {len(seeds)} | {mean_product:.4f} | {mean_baseline:.4f} | "
            f"{diff('fused', 'baseline')} | {mean_product / mean_baseline:.3f} | {diff('fused', 'best')} | "
            + (diff("joint", "baseline") if has_joint else "—") + f" | {chose} |")


def paired_se(differences: np.ndarray, rows_a: list | None, rows_b: list | None, regression: bool) -> float:
    """Standard error of a paired difference: over the seeds where there are several; at one seed over the test
    rows both methods scored (accuracy, in points: of the per-row difference in correctness; RMSE: bootstrap of
    the rows, 1,000 resamples)."""
    if len(differences) > 1:
        return float(differences.std(ddof=1) / np.sqrt(len(differences)))
    if rows_a is None or rows_b is None:
        return float("nan")
    a, b = np.asarray(rows_a), np.asarray(rows_b)
    if not regression:
        return float(100 * (a - b).std(ddof=1) / np.sqrt(len(a)))
    draws = np.random.default_rng(0).integers(0, len(a), size=(1000, len(a)))
    return float((np.sqrt(a[draws].mean(axis=1)) - np.sqrt(b[draws].mean(axis=1))).std(ddof=1))


def write_table(results: list[dict], args: argparse.Namespace) -> int:
    table = markdown(results, args) + "\n\n" + "\n".join(summary_markdown(results))
    print(table)
    if args.write_docs:
        with open(DOCS, "a", encoding="utf-8") as doc:
            doc.write("\n\n## The product against one AutoGluon predictor on all columns\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
