"""Training reports written to ``output/data``: metrics.json, leaderboards, training curve, and per problem type

* classification: the confusion matrix (confusion_matrix.png);
* regression: predicted against actual values (predicted_vs_actual.png: a scatter with the line y = x, at most
  ``MAX_SCATTER_POINTS`` points, a random sample of larger sets) and the residuals (residuals.png: histogram of
  predicted − actual), both on the validation rows the metrics were computed on.

Plots use matplotlib's Agg backend (no display). matplotlib writes a font cache under ``$MPLCONFIGDIR``
(default ``~/.config/matplotlib``); when it is unset a directory under the temporary directory is used, so a
read-only or absent home does not matter.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from multimodal.core import scores
from multimodal.core.artifact import REGRESSION
from multimodal.core.jsonsafe import to_json
from multimodal.sagemaker.environment import matplotlib_config

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
TRAINING_CURVE_FILE = "fusion_training_curve.png"
PREDICTED_VS_ACTUAL_FILE = "predicted_vs_actual.png"
RESIDUALS_FILE = "residuals.png"
BAD_IMAGES_FILE = "bad_images.csv"
BAD_IMAGES_COLUMNS = ["data", "row", "ID", "column", "reference", "reason"]
MAX_SCATTER_POINTS = 5000
LEADERBOARD_PATTERN = "leaderboard_{}.csv"
MAX_ANNOTATED_CLASSES = 30
MAX_LABEL_CHARS = 24


def pyplot() -> Any:
    matplotlib_config()
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def safe_name(name: str) -> str:
    """A file-name fragment: column names come from the user's header and may hold '/', '..' or spaces."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)).lstrip(".") or "_"


def write_metrics_json(metrics: Mapping, directory: Path) -> Path:
    path = directory / METRICS_FILE
    path.write_text(json.dumps(to_json(metrics), indent=2, allow_nan=False), encoding="utf-8")
    return path


def write_bad_images(records: Sequence[Mapping], directory: Path) -> Path:
    """bad_images.csv: every image value that gave no image and was counted as missing (``bad_images=missing``)."""
    path = directory / BAD_IMAGES_FILE
    pd.DataFrame(list(records), columns=BAD_IMAGES_COLUMNS).to_csv(path, index=False)
    return path


def write_leaderboards(leaderboards: Mapping[str, pd.DataFrame], directory: Path) -> list[Path]:
    """One CSV per expert: AutoGluon's leaderboard (model, validation score, fit time, ...)."""
    written, used = [], set()
    for expert, board in leaderboards.items():
        if board is None:
            continue
        stem = safe_name(expert)
        while stem in used:
            stem += "_"
        used.add(stem)
        path = directory / LEADERBOARD_PATTERN.format(stem)
        board.to_csv(path, index=False)
        written.append(path)
    return written


def confusion_matrix(y_true: Sequence, y_pred: Sequence, classes: Sequence) -> np.ndarray:
    """Counts from labels (as the user writes them): rows = true class, columns = predicted class, in the order
    of ``classes``; labels that are not classes are left out."""
    lookup = {str(c): i for i, c in enumerate(classes)}
    return scores.confusion_matrix([lookup.get(str(t).strip(), -1) for t in y_true],
                                   [lookup.get(str(p).strip(), -1) for p in y_pred], len(classes))


def plot_confusion_matrix(matrix: Any, classes: Sequence, path: Path, *, title: str) -> Path:
    plt = pyplot()
    matrix = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    labels = [_short(c) for c in classes]
    side = min(max(4.0, 0.45 * n + 2.5), 24.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    try:
        totals = matrix.sum(axis=1, keepdims=True)
        shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        accuracy = np.trace(matrix) / max(matrix.sum(), 1)
        ax.set_title(f"{title}\n{int(matrix.sum())} rows, accuracy {accuracy:.3f}", fontsize=10)
        if n <= MAX_ANNOTATED_CLASSES:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_training_curve(curve: Mapping[str, Any], path: Path) -> Path:
    """Loss (and, for classification, accuracy) per epoch of the fusion network, training and validation, best
    epoch marked. The loss axis is labelled after ``curve["loss_name"]`` when given ("Huber" → "Huber loss",
    "mean squared error" as is), else "cross-entropy loss" when the curve has accuracy (classification) and "loss"
    otherwise; a curve without accuracy (regression) gets a single panel."""
    plt = pyplot()
    has_accuracy = bool(curve.get("accuracy") or curve.get("val_accuracy"))
    loss_name = str(curve.get("loss_name") or ("cross-entropy" if has_accuracy else "loss"))
    if not loss_name.lower().endswith(("loss", "error")):
        loss_name += " loss"
    panels = [("loss", loss_name)] + ([("accuracy", "accuracy")] if has_accuracy else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    try:
        for ax, (key, label) in zip(axes[0], panels):
            for prefix, style, name in (("", "-", "training"), ("val_", "--", "validation")):
                values = curve.get(prefix + key) or []
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, marker="." if len(values) < 40 else None,
                            label=name)
            best = curve.get("best_epoch")
            if isinstance(best, (int, float)) and best > 0:
                ax.axvline(best, color="grey", linestyle=":", label=f"best epoch ({int(best)})")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("fusion network training")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def finite_pairs(actual: Any, predicted: Any) -> tuple[np.ndarray, np.ndarray]:
    """Actual and predicted values as float arrays, rows where either is not a finite number left out."""
    actual = pd.to_numeric(pd.Series(np.asarray(actual).ravel()), errors="coerce").to_numpy(dtype=np.float64)
    predicted = pd.to_numeric(pd.Series(np.asarray(predicted).ravel()), errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(actual) & np.isfinite(predicted)
    return actual[keep], predicted[keep]


def sample_indices(n: int, limit: int = MAX_SCATTER_POINTS, seed: int = 0) -> np.ndarray:
    """All of ``range(n)``, or a reproducible random sample of ``limit`` of them, in order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def plot_predicted_vs_actual(actual: Any, predicted: Any, path: Path, *, title: str,
                             max_points: int = MAX_SCATTER_POINTS) -> Path:
    """Scatter of predicted against actual values with the line y = x; RMSE and R² (of every row) in the title.
    Above ``max_points`` rows a random sample of them is drawn, and the title says so."""
    plt = pyplot()
    actual, predicted = finite_pairs(actual, predicted)
    n = len(actual)
    fig, ax = plt.subplots(figsize=(6, 6))
    try:
        if n:
            found = scores.regression_scores(actual, predicted)
            shown = sample_indices(n, max_points)
            ax.scatter(actual[shown], predicted[shown], s=8 if len(shown) > 500 else 16,
                       alpha=0.3 if len(shown) > 1000 else 0.6, edgecolors="none", label="rows")
            low = float(min(actual.min(), predicted.min()))
            high = float(max(actual.max(), predicted.max()))
            pad = (high - low) * 0.03 or 1.0
            ax.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=1, linestyle="--",
                    label="y = x")
            ax.set_xlim(low - pad, high + pad)
            ax.set_ylim(low - pad, high + pad)
            sampled = f", {len(shown)} of them drawn (random sample)" if len(shown) < n else ""
            ax.set_title(f"{title}\n{n} rows{sampled}\nRMSE {found['rmse']:.4g}, R² {found['r2']:.3f}", fontsize=10)
            ax.legend(fontsize=8, loc="upper left")
        else:
            _no_rows(ax, title)
        _save(fig, ax, path, xlabel="actual", ylabel="predicted")
    finally:
        plt.close(fig)
    return path


def plot_residuals(actual: Any, predicted: Any, path: Path, *, title: str) -> Path:
    """Histogram of the residuals predicted − actual (every row), zero and the mean residual marked."""
    plt = pyplot()
    actual, predicted = finite_pairs(actual, predicted)
    residuals = predicted - actual
    n = len(residuals)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        if n:
            bins = int(min(60, max(10, np.sqrt(n))))
            ax.hist(residuals, bins=bins, color="tab:blue", alpha=0.8)
            ax.axvline(0.0, color="black", linewidth=1, label="0")
            mean = float(residuals.mean())
            ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1, label=f"mean {mean:.4g}")
            ax.legend(fontsize=8)
            ax.set_title(f"{title}\n{n} rows, residual mean {mean:.4g}, std {float(residuals.std()):.4g}, "
                         f"MAE {float(np.abs(residuals).mean()):.4g}", fontsize=10)
        else:
            _no_rows(ax, title)
        _save(fig, ax, path, xlabel="residual (predicted − actual)", ylabel="rows")
    finally:
        plt.close(fig)
    return path


def _no_rows(ax: Any, title: str) -> None:
    ax.text(0.5, 0.5, "no rows with a finite actual and predicted value", ha="center", va="center",
            transform=ax.transAxes)
    ax.set_title(title, fontsize=10)


def _save(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _short(label: Any) -> str:
    text = str(label)
    return text if len(text) <= MAX_LABEL_CHARS else text[:MAX_LABEL_CHARS - 1] + "…"


# ---------------------------------------------------------------------------------------------- the job's reports

def write_reports(model: Any, out: Path, channels: dict[str, dict], clock: Any, budget: int,
                  model_bytes: int) -> None:
    """output/data: metrics.json (the model's ``metrics_`` and a ``job`` block), the experts' leaderboards, the
    fusion training curve, and the confusion matrix (classification) or the predicted-vs-actual scatter and the
    residual histogram (regression), in ``out`` (output/data). ``clock``: the job's ``Stopwatch``."""
    kind = _report_kind(model)
    metrics = dict(model.metrics_)  # for regression this holds "target" (mean, std, min, max of the training target)
    title = f"fused model on the {model.metrics_.get('validation_source', 'validation')}"
    metrics["job"] = {
        "time_budget_seconds": budget,
        "seconds_before_reports": round(clock.elapsed(), 2),
        "stages_seconds": dict(clock.stages),
        "channels": channels,
        "model_megabytes": round(model_bytes / 1e6, 3),
        "problem_type": model.problem_type_,
        **kind.job_fields(),
        "experts": model.expert_names_,
    }
    metrics.update(kind.metrics(title))
    write_metrics_json(metrics, out)
    if getattr(model, "bad_images_", None):
        write_bad_images(model.bad_images_, out)
    boards = write_leaderboards(model.leaderboards_, out)
    kind.plot(out, title)
    curve = model.metrics_.get("fusion_curve") or {}
    if curve:
        plot_training_curve(curve, out / TRAINING_CURVE_FILE)
    log.info("reports in %s: %s", out, ", ".join(sorted(p.name for p in out.iterdir())))
    if not boards:
        log.warning("no expert leaderboard to write")


class _ClassReports:
    """A classifier's reports: its classes, and the confusion matrix of the validation rows."""

    def __init__(self, model: Any) -> None:
        self.classes = list(model.classes_)
        self.matrix = (model.metrics_.get("validation") or {}).get("confusion_matrix") or None

    def job_fields(self) -> dict:
        return {"classes": self.classes}

    def metrics(self, title: str) -> dict:
        if self.matrix is None:
            return {}
        return {"confusion_matrix": {"title": title, "classes": self.classes,
                                     "rows_true_columns_predicted": self.matrix}}

    def plot(self, out: Path, title: str) -> None:
        if self.matrix is not None:
            plot_confusion_matrix(self.matrix, self.classes, out / CONFUSION_MATRIX_FILE, title=title)


class _NumberReports:
    """A regressor's reports: predicted against actual and the residuals of the validation rows."""

    def __init__(self, model: Any) -> None:
        self.predictions = getattr(model, "validation_predictions_", None)

    def job_fields(self) -> dict:
        return {}

    def metrics(self, title: str) -> dict:
        return {}

    def plot(self, out: Path, title: str) -> None:
        if self.predictions is None or not len(self.predictions):
            log.warning("no validation predictions: %s and %s not written", PREDICTED_VS_ACTUAL_FILE,
                        RESIDUALS_FILE)
            return
        actual, predicted = self.predictions["actual"], self.predictions["predicted"]
        plot_predicted_vs_actual(actual, predicted, out / PREDICTED_VS_ACTUAL_FILE, title=title)
        plot_residuals(actual, predicted, out / RESIDUALS_FILE, title=title)


def _report_kind(model: Any) -> _ClassReports | _NumberReports:
    """The reports of a model of classes or of numbers, read once from its ``problem_type_``."""
    if model.problem_type_ == REGRESSION:
        return _NumberReports(model)
    return _ClassReports(model)
