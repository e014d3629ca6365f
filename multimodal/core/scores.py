"""Scores of class probabilities against true classes: what ``evaluate``, the metric lines and the reports show."""
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
