"""Training reports written to ``output/data``: metrics.json, leaderboards, confusion matrix, training curve.

Plots use matplotlib's Agg backend (no display). matplotlib writes a font cache under ``$MPLCONFIGDIR``
(default ``~/.config/matplotlib``); when it is unset a directory under the temporary directory is used, so a
read-only or absent home does not matter.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from multimodal.core import scores
from multimodal.core.jsonsafe import to_json

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
TRAINING_CURVE_FILE = "fusion_training_curve.png"
LEADERBOARD_PATTERN = "leaderboard_{}.csv"
MAX_ANNOTATED_CLASSES = 30
MAX_LABEL_CHARS = 24


def pyplot() -> Any:
    if not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = os.path.join(tempfile.gettempdir(), f"matplotlib-{os.getuid()}")
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
    """Loss and accuracy per epoch of the fusion network, training and validation, best epoch marked."""
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for ax, key, label in ((loss_ax, "loss", "cross-entropy loss"), (acc_ax, "accuracy", "accuracy")):
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


def _short(label: Any) -> str:
    text = str(label)
    return text if len(text) <= MAX_LABEL_CHARS else text[:MAX_LABEL_CHARS - 1] + "…"
