"""Greedy ensemble selection over the experts' out-of-fold outputs, and the choice between it and the fusion
network.

A stacker that does worse than one of its inputs is a defect: on small data sets the fusion network can
overfit its few hundred training rows and fall below the best expert alone. The weighted ensemble of Caruana
et al. (2004), the one AutoGluon's ``WeightedEnsemble`` fits, cannot do much worse than its best input on the
rows it is fitted on (one expert with weight 1 is among the ensembles it tries), has one weight per expert
instead of thousands, and needs no training beyond a few dozen passes over a matrix.

The choice between the two is cross-validated (``compare_by_cross_validation``): both are fitted on k - 1 folds
of the fusion's rows and scored on the k-th, so every row gets an out-of-fold loss from each, and the network is
used only when its mean loss is lower by more than one standard error of the paired difference. Choosing on the
rows the network early-stops on flattered it: on films_rating at ``best`` (600 held-out rows) it won the choice
(0.619 against 0.628) and then lost to the ensemble, which was the joint expert alone, on the test rows
(RMSE +0.008 ± 0.004, docs/benchmarks.md). The choice, both losses and the difference are in
``metrics_["fusion_choice"]``.

The ensemble sees the same input matrix as the network (the experts' outputs side by side) and gives the
same outputs: probabilities over the real classes (each expert's "insufficient information" probability
left out and the rest renormalised; an expert that abstains contributes uniform probabilities), or the
standardised prediction of a regression (one column).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
# AutoGluon's WeightedEnsemble default (ensemble_size=25) and a few more: the weights are multiples of 1/ITERATIONS
ITERATIONS = 40
_EPSILON = 1e-15
# Folds of the network-or-ensemble choice, and the fewest rows a fold may hold for its losses to mean anything
CHOICE_FOLDS = 5
MIN_CHOICE_ROWS_PER_FOLD = 20


def real_class_probabilities(proba: np.ndarray, expert_classes: list[int], n_classes: int) -> np.ndarray:
    """An expert's probabilities restricted to the real classes and renormalised (uniform if it abstains)."""
    out = np.zeros((len(proba), n_classes))
    for j, c in enumerate(expert_classes):
        if c < n_classes:
            out[:, c] = proba[:, j]
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1), 1.0 / n_classes)


def each_expert_probabilities(x: np.ndarray, experts: list[list[int]], n_classes: int) -> list[np.ndarray]:
    """The fusion inputs ``x`` (the experts' probabilities side by side, each over its own ``experts`` classes)
    split per expert, each restricted to the real classes (``real_class_probabilities``)."""
    offsets = np.cumsum([0] + [len(classes) for classes in experts])
    return [real_class_probabilities(x[:, start:stop], classes, n_classes)
            for classes, start, stop in zip(experts, offsets[:-1], offsets[1:])]


def row_losses(outputs: np.ndarray, y: np.ndarray, regression: bool) -> np.ndarray:
    """Each row's term of ``loss``."""
    if regression:
        return (np.asarray(outputs, dtype=np.float64)[:, 0] - y) ** 2
    picked = np.clip(np.asarray(outputs, dtype=np.float64)[np.arange(len(y)), y], _EPSILON, 1.0)
    return -np.log(picked)


def loss(outputs: np.ndarray, y: np.ndarray, regression: bool) -> float:
    """What both fusions minimise: cross-entropy of class probabilities, or the mean squared error of the
    standardised prediction."""
    return float(np.mean(row_losses(outputs, y, regression)))


class WeightedEnsemble:
    """A weighted average of the experts' outputs; ``experts`` is each expert's classes in the input's column
    order (empty lists for a regression, where expert i is input column i)."""

    def __init__(self, weights: list[float], experts: list[list[int]], n_classes: int | None) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.experts = [list(map(int, classes)) for classes in experts]
        self.n_classes = n_classes  # None for a regression

    @property
    def regression(self) -> bool:
        return self.n_classes is None

    def _each(self, x: np.ndarray) -> list[np.ndarray]:
        """Each expert's outputs in the ensemble's terms: real-class probabilities, or a one-column prediction."""
        x = np.asarray(x, dtype=np.float64)
        if self.regression:
            return [x[:, [i]] for i in range(len(self.experts))]
        return each_expert_probabilities(x, self.experts, self.n_classes)

    def predict(self, x: np.ndarray) -> np.ndarray:
        parts = self._each(x)
        return sum(w * part for w, part in zip(self.weights, parts) if w > 0).astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, experts: list[list[int]], n_classes: int | None,
            iterations: int = ITERATIONS) -> "WeightedEnsemble":
        """Caruana's forward selection with replacement: each step adds the expert whose addition lowers the
        loss on (x, y) most; the weights are how often each was added."""
        ensemble = cls([0.0] * len(experts), experts, n_classes)
        parts = ensemble._each(x)
        counts = np.zeros(len(parts))
        total = np.zeros_like(parts[0])
        for step in range(1, iterations + 1):
            losses = [loss((total + part) / step, y, ensemble.regression) for part in parts]
            best = int(np.argmin(losses))
            counts[best] += 1
            total += parts[best]
        ensemble.weights = counts / counts.sum()
        return ensemble

    def describe(self, names: list[str]) -> dict[str, float]:
        return {name: round(float(w), 4) for name, w in zip(names, self.weights) if w > 0}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (ENSEMBLE_FILE + ".tmp")
        tmp.write_text(json.dumps({"weights": self.weights.tolist(), "experts": self.experts,
                                   "n_classes": self.n_classes}), encoding="utf-8")
        tmp.replace(directory / ENSEMBLE_FILE)

    @classmethod
    def load(cls, directory: Path) -> "WeightedEnsemble":
        data = json.loads((directory / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        return cls(data["weights"], data["experts"], data["n_classes"])


class Fusion(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray: ...


def choice_folds(y: np.ndarray, regression: bool, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, scored rows) of each fold of the choice; empty when there are too few rows to cross-validate.
    Classes are stratified when every class has a row in each fold."""
    from sklearn.model_selection import KFold, StratifiedKFold
    folds = min(CHOICE_FOLDS, len(y) // MIN_CHOICE_ROWS_PER_FOLD)
    if folds < 2:
        return []
    stratify = not regression and np.bincount(y).min(initial=len(y)) >= folds
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y if stratify else None))


def compare_by_cross_validation(x: np.ndarray, y: np.ndarray, regression: bool,
                                fit: dict[str, Callable[[np.ndarray, np.ndarray], Fusion]],
                                folds: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Each candidate of ``fit`` (name → fit(x, y) → fusion) fitted on k - 1 of ``folds`` (``choice_folds``) and
    scored on the k-th: every row's out-of-fold loss per candidate, their means, and the first candidate's mean
    difference to the second with its standard error (paired over rows)."""
    out = {name: np.zeros(len(y)) for name in fit}
    for i, (fit_rows, scored) in enumerate(folds):
        for name, fit_one in fit.items():
            out[name][scored] = row_losses(fit_one(x[fit_rows], y[fit_rows]).predict(x[scored]), y[scored],
                                           regression)
        log.info("fusion choice: fold %d/%d scored", i + 1, len(folds))
    first, second = list(fit)[:2]
    difference = out[first] - out[second]
    return {"folds": len(folds), "rows": int(len(y)),
            "loss": {name: float(losses.mean()) for name, losses in out.items()},
            "difference": float(difference.mean()),
            "standard_error": float(difference.std(ddof=1) / np.sqrt(len(difference)))}


def load_fusion(directory: Path):
    """The saved fusion: the weighted ensemble when it was chosen, else the network."""
    if (directory / ENSEMBLE_FILE).is_file():
        return WeightedEnsemble.load(directory)
    from .fusion import FusionNetwork
    return FusionNetwork.load(directory)
