"""Scores of predictions against true targets (class probabilities, or numbers for regression): what
``evaluate``, the metric lines and the reports show."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: rows = true class index, columns = predicted class index; indices outside 0..n-1 are ignored."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    keep = (y_true >= 0) & (y_true < n_classes) & (y_pred >= 0) & (y_pred < n_classes)
    return np.bincount(y_true[keep] * n_classes + y_pred[keep], minlength=n_classes ** 2).reshape(n_classes,
                                                                                                  n_classes)


def classification_scores(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict:
    """accuracy, balanced_accuracy, log_loss (probabilities clipped and renormalised) and the row count."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss
    if len(y) == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "log_loss": float("nan"), "rows": 0}
    predicted = proba.argmax(axis=1)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "log_loss": float(log_loss(y, clipped, labels=list(range(n_classes)))),
        "rows": int(len(y)),
    }


def regression_scores(y: np.ndarray, predicted: np.ndarray) -> dict:
    """rmse, mae, r2 (1 - residual / total sum of squares; NaN when the targets are all equal) and the row count."""
    y, predicted = np.asarray(y, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if len(y) == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "rows": 0}
    residual = y - predicted
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(residual ** 2))),
        "mae": float(np.mean(np.abs(residual))),
        "r2": 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else float("nan"),
        "rows": int(len(y)),
    }
