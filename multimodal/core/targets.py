"""What the label column is: classes or a number (``problem_type``), decided once and then an object
(``ClassTarget`` or ``NumberTarget``) that knows how to encode the labels, build the experts' targets, scale,
score, and name what is predicted.

The ``auto`` rule: a label column whose values are all numbers (the ``_num`` columns' rules: ``1.5``, ``-3``,
``2e3``; empty labels and the ``_num`` missing spellings aside) with more than 20 distinct values (at least
``REGRESSION_MIN_DISTINCT``) is a regression target; anything else is classes (binary with two). Class ids
written as integers (1-5 star ratings, at most 20 product category codes) stay classes; prices, durations and
averaged ratings are numbers. The rule cannot know a user's intent for every column — set ``problem_type``
explicitly to override it; the choice and its reason are logged.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Union

import numpy as np
import pandas as pd

from .artifact import REGRESSION
from .errors import DataError
from .schema import LABEL_COLUMN, PREDICTION, describe_row, encode_labels, labels_to_indices, parse_numbers
from .scores import classification_scores, confusion_matrix, regression_scores

log = logging.getLogger(__name__)

REGRESSION_MIN_DISTINCT = 21
MAX_ROWS_NAMED = 5
_EPSILON = 1e-15  # probabilities are clipped to it before their logarithm


def choose_problem_type(labels: pd.Series) -> str:
    """``auto``'s rule: ``regression`` or ``classification`` (binary or multiclass then follows from the number of
    classes). Logs the choice and why."""
    parsed = parse_numbers(labels)
    numbers = parsed.values[~parsed.missing & ~parsed.bad]
    distinct = int(numbers.nunique())
    if parsed.bad.any() or distinct == 0:
        log.info("problem_type auto: classification (the label column holds values that are not numbers)")
        return "classification"
    if distinct >= REGRESSION_MIN_DISTINCT:
        log.info("problem_type auto: regression (every label is a number, %d distinct values; more than %d make a "
                 "number, not classes; set problem_type=multiclass to treat them as classes)", distinct,
                 REGRESSION_MIN_DISTINCT - 1)
        return REGRESSION
    log.info("problem_type auto: classification (numeric labels, but only %d distinct values: at most %d are "
             "treated as classes; set problem_type=regression to predict them as numbers)", distinct,
             REGRESSION_MIN_DISTINCT - 1)
    return "classification"


def numeric_targets(raw: pd.Series, *, numbers: np.ndarray, ids: pd.Series | None, source: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The label as numbers for regression, and which rows have one. A label that is empty or one of the ``_num``
    missing spellings (``NA``, ``null``, ``-``, …) is dropped with a warning, as an empty label is for classes.

    ``numbers`` are the rows' 0-based numbers in their source (for messages). A label that is not a number, or
    is infinite, is a ``DataError`` naming the column and the first rows.
    """
    parsed = parse_numbers(raw.reset_index(drop=True))
    for bad, problem, fix in ((parsed.bad, "is not a number", "fix these values, leave them empty to drop the rows, "
                               "or set problem_type=binary/multiclass (or auto) to predict classes"),
                              (parsed.infinite, "is infinite", "replace it with a finite number or leave it empty")):
        if bad.any():
            positions = np.flatnonzero(bad)
            shown = "; ".join(f"{describe_row(int(numbers[p]), None)}{_id(ids, p)}: {raw.iloc[p]!r}"
                              for p in positions[:MAX_ROWS_NAMED])
            more = f" and {len(positions) - MAX_ROWS_NAMED} more" if len(positions) > MAX_ROWS_NAMED else ""
            raise DataError(f"{source}: column {LABEL_COLUMN!r} {problem} for regression in {len(positions)} row(s): "
                            f"{shown}{more}. With problem_type=regression every label must be a number: {fix}",
                            column=LABEL_COLUMN, row=int(numbers[positions[0]]) + 1)
    present = ~parsed.missing
    dropped = int((~present).sum())
    if dropped:
        log.warning("%s: dropped %d row(s) with an empty label", source, dropped)
    return parsed.values.to_numpy(dtype=np.float64)[present], present


def _id(ids: pd.Series | None, position: int) -> str:
    return "" if ids is None else f" (ID {ids.iloc[position]!r})"


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


class ClassesOnly:
    """A method that exists only on models that predict classes: on a regression model (or a
    ``MultimodalRegressor``) reading it raises AttributeError, so ``hasattr(model, "predict_proba")`` is False
    (scikit-learn's ``available_if`` convention). The owner's ``_problem_family()`` says which it is."""

    def __init__(self, method: Callable) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if obj._problem_family() == REGRESSION:
            raise AttributeError(f"{self.name} does not exist for a regression model: predict() returns the numbers")
        return self.method.__get__(obj, owner)


# ---------------------------------------------------------------------------------------------- target objects
#
# The problem type is decided once, from the training labels, and then *is* one of these objects: everything that
# differs between classes and a number (the experts' targets, what the fusion learns, losses, scores, predictions,
# what is saved) is a method here, so that the estimator never asks which kind it holds.


class ClassTarget:
    """Labels that are classes (``binary`` or ``multiclass``): the experts learn the class index plus an
    "insufficient information" class (index ``n_classes``) for rows that lack their modality; the fusion outputs
    probabilities over the classes."""

    family = "classification"
    regressor = False  # whether the experts are AutoGluon regressors
    headline = "accuracy"  # the score named in the fit's last log line
    # measured (docs/benchmarks.md): the experts' "insufficient information" probabilities already carry it
    missing_fractions_as_inputs = False

    def __init__(self, problem_type: str, classes: list) -> None:
        self.problem_type = problem_type
        self.classes = list(classes)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int | None:
        """The fusion network's outputs: one probability per class."""
        return self.n_classes

    @classmethod
    def fit(cls, requested: str, labels: pd.Series, *, source: str) -> tuple["ClassTarget", np.ndarray, np.ndarray]:
        """(the target, class indices of the labelled rows, which rows are labelled) from the training labels;
        ``requested`` is ``classification`` (decided by ``auto``), ``binary`` or ``multiclass``."""
        classes, y, present = encode_labels(labels, source=source)
        kind = "binary" if len(classes) == 2 else "multiclass"
        if requested == "multiclass" and kind == "binary":
            log.warning("problem_type is multiclass but column %r has 2 classes (%s): fitting a binary model (the "
                        "same experts and fusion network)", LABEL_COLUMN, ", ".join(map(repr, classes)))
        if requested == "binary" and kind != "binary":
            shown = ", ".join(map(repr, classes[:10])) + (", …" if len(classes) > 10 else "")
            raise DataError(f"{source}: problem_type is binary but column {LABEL_COLUMN!r} has {len(classes)} classes "
                            f"({shown}): set problem_type=multiclass (or auto)", column=LABEL_COLUMN)
        return cls(kind, classes), y, present

    def encode(self, labels: pd.Series, *, numbers: np.ndarray, ids: pd.Series | None, source: str
               ) -> tuple[np.ndarray, np.ndarray]:
        """(class indices of the labelled rows, which rows are labelled) of rows scored after the fit; a class not
        seen in training is a ``DataError``."""
        y, present = labels_to_indices(labels, self.classes, source=source)
        return y[present], present

    def expert_target(self, y: np.ndarray, missing: np.ndarray, threshold: float
                      ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(an expert's target, which rows lack its modality, whether it has anything to learn): rows missing at
        least ``threshold`` of its columns get the "insufficient information" class."""
        insufficient = missing >= threshold
        target = np.where(insufficient, self.n_classes, y)
        return target, insufficient, len(np.unique(target)) >= 2

    def fusion_target(self, y: np.ndarray) -> np.ndarray:
        """What the fusion learns: the class index."""
        return y

    def fusion_inputs(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """The experts' outputs as the fusion sees them: their probabilities as they are."""
        return outputs

    def ensemble_layout(self, expert_classes: list[list[int]]) -> list[list[int]]:
        """Each expert's columns in the fusion inputs, for the weighted ensemble: its classes."""
        return expert_classes

    def stratify(self, y: np.ndarray, fraction: float) -> np.ndarray | None:
        """What a hold-out of ``fraction`` of the rows is stratified by: the class, when every class present has
        2 rows and both sides have room for one of each (scikit-learn refuses otherwise)."""
        counts = np.bincount(y)
        present = int((counts > 0).sum())
        held = int(np.ceil(fraction * len(y)))
        if counts[counts > 0].min() >= 2 and held >= present and len(y) - held >= present:
            return y
        return None

    def stratifies_folds(self, y: np.ndarray, folds: int) -> bool:
        """Whether ``folds`` cross-validation folds can be stratified by class (each class in every fold)."""
        return bool(np.bincount(y).min(initial=len(y)) >= folds)

    def row_losses(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each row's cross-entropy of the probabilities ``outputs`` for the true class."""
        picked = np.clip(np.asarray(outputs, dtype=np.float64)[np.arange(len(y)), y], _EPSILON, 1.0)
        return -np.log(picked)

    loss_name = "log-loss"

    def scores(self, y: np.ndarray, fused: np.ndarray, x: np.ndarray, expert_classes: list[list[int]],
               expert_names: list[str]) -> dict:
        """Scores of the fused probabilities ``fused`` (with the confusion matrix) and of each expert alone, whose
        probabilities are its columns of the fusion inputs ``x``."""
        scores = classification_scores(y, fused, self.n_classes)
        # rows: true class, columns: predicted class, both in the order of classes
        scores["confusion_matrix"] = (confusion_matrix(y, fused.argmax(axis=1), self.n_classes).tolist()
                                      if len(y) else [])
        each = each_expert_probabilities(x, expert_classes, self.n_classes)
        scores["experts"] = {name: classification_scores(y, proba, self.n_classes)
                             for name, proba in zip(expert_names, each)}
        return scores

    def predict(self, fused: np.ndarray, index: pd.Index) -> pd.Series:
        """The most probable class of each row, in the training labels' own values (named ``label``)."""
        return pd.Series(np.asarray(self.classes, dtype=object)[fused.argmax(axis=1)], index=index, name=LABEL_COLUMN)

    def probabilities(self, fused: np.ndarray, index: pd.Index) -> pd.DataFrame:
        """The fused probabilities, one column per class label."""
        return pd.DataFrame(fused, index=index, columns=pd.Index(self.classes))

    def describe(self) -> str:
        return f"{self.n_classes} classes"

    def kind(self) -> str:
        """What the fitted model predicts, in a word or two (its repr)."""
        return self.describe()

    def report(self, y: np.ndarray, y_validation: np.ndarray, predicted: Callable[[], np.ndarray]) -> dict:
        """Fitted facts for ``metrics_`` beyond the scores: none for classes."""
        return {}

    def attributes(self) -> dict[str, Any]:
        """The estimator's fitted attributes this target sets."""
        return {"problem_type_": self.problem_type, "classes_": self.classes}

    def to_config(self) -> dict:
        return {"problem_type": self.problem_type, "classes": self.classes}


class NumberTarget:
    """A numeric label (``regression``): every expert is an AutoGluon regressor (there is no "insufficient
    information" number); the fusion gets their predictions standardised like the target, plus each expert's
    missing fraction per row, and predicts the standardised target (so that one learning rate and one network
    size suit prices in the millions and ratings between 1 and 5 alike)."""

    family = REGRESSION
    problem_type = REGRESSION
    regressor = True
    headline = "rmse"
    missing_fractions_as_inputs = True  # what tells the fusion how far to trust each expert's prediction
    n_outputs = None  # the fusion network's single output
    loss_name = "mean squared error (standardised)"

    def __init__(self, mean: float, std: float) -> None:
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def fit(cls, requested: str, labels: pd.Series, *, numbers: np.ndarray, ids: pd.Series | None, source: str
            ) -> tuple["NumberTarget", np.ndarray, np.ndarray]:
        """(the target with the labels' mean and standard deviation, the numbers, which rows have one)."""
        y, present = numeric_targets(labels, numbers=numbers, ids=ids, source=source)
        if len(y) < 2 or not np.ptp(y) > 0:
            found = f"every label is {y[0]:g}" if len(y) else "no label is set"
            raise DataError(f"the training data: column {LABEL_COLUMN!r} needs at least 2 different numbers to train a "
                            f"regressor; {found}. Check that the label column holds the target", column=LABEL_COLUMN)
        return cls(np.mean(y), np.std(y)), y, present

    def encode(self, labels: pd.Series, *, numbers: np.ndarray, ids: pd.Series | None, source: str
               ) -> tuple[np.ndarray, np.ndarray]:
        return numeric_targets(labels, numbers=numbers, ids=ids, source=source)

    def expert_target(self, y: np.ndarray, missing: np.ndarray, threshold: float
                      ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Every expert learns the number; ``threshold`` is for the "insufficient information" class, which a
        number has not: only rows missing the whole modality count as lacking it."""
        insufficient = missing >= 1.0
        return y, insufficient, not insufficient.all()

    def standardised(self, values: np.ndarray) -> np.ndarray:
        """Numbers on the target's scale → the standardised scale the fusion works on."""
        return (values - self.mean) / self.std

    def on_target_scale(self, values: np.ndarray) -> np.ndarray:
        """The inverse of ``standardised``."""
        return values * self.std + self.mean

    def fusion_target(self, y: np.ndarray) -> np.ndarray:
        return self.standardised(y)

    def fusion_inputs(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        return [self.standardised(o) for o in outputs]

    def ensemble_layout(self, expert_classes: list[list[int]]) -> list[list[int]]:
        """Expert i is input column i: no classes."""
        return [[] for _ in expert_classes]

    def stratify(self, y: np.ndarray, fraction: float) -> None:
        return None

    def stratifies_folds(self, y: np.ndarray, folds: int) -> bool:
        return False

    def row_losses(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each row's squared error of the (standardised) prediction, the outputs' first column."""
        return (np.asarray(outputs, dtype=np.float64)[:, 0] - y) ** 2

    def predicted(self, fused: np.ndarray) -> np.ndarray:
        """The fusion's standardised output back on the target's scale."""
        return self.on_target_scale(fused[:, 0].astype(np.float64))

    def scores(self, y: np.ndarray, fused: np.ndarray, x: np.ndarray, expert_classes: list[list[int]],
               expert_names: list[str]) -> dict:
        """Scores of the fused prediction and of each expert alone (input column i, standardised)."""
        scores = regression_scores(y, self.predicted(fused))
        scores["experts"] = {name: regression_scores(y, self.on_target_scale(x[:, i]))
                             for i, name in enumerate(expert_names)}
        return scores

    def predict(self, fused: np.ndarray, index: pd.Index) -> pd.Series:
        """The predicted number of each row (float, named ``prediction``)."""
        return pd.Series(self.predicted(fused) if len(fused) else np.empty(0), index=index, name=PREDICTION,
                         dtype=np.float64)

    def describe(self) -> str:
        return f"target mean {self.mean:.4g}, std {self.std:.4g}"

    def kind(self) -> str:
        return REGRESSION

    def report(self, y: np.ndarray, y_validation: np.ndarray, predicted: Callable[[], np.ndarray]) -> dict:
        """The target's scale and range for ``metrics_``, and the validation rows' actual and predicted values."""
        return {"target": {"mean": self.mean, "std": self.std, "min": float(y.min()), "max": float(y.max())},
                "validation_predictions": pd.DataFrame({"actual": y_validation, "predicted": predicted()})}

    def attributes(self) -> dict[str, Any]:
        return {"problem_type_": REGRESSION, "target_mean_": self.mean, "target_std_": self.std}

    def to_config(self) -> dict:
        return {"problem_type": REGRESSION, "target": {"mean": self.mean, "std": self.std}}


Target = Union[ClassTarget, NumberTarget]


def fit_target(requested: str, labels: pd.Series, *, numbers: np.ndarray, ids: pd.Series | None, source: str
               ) -> tuple[Target, np.ndarray, np.ndarray]:
    """The target the training labels make under ``requested`` (``classification``, ``binary``, ``multiclass``
    or ``regression``; ``auto`` decided before): (target, targets of the labelled rows, which rows are
    labelled)."""
    if requested == REGRESSION:  # the one place the problem type is read: from here on it is an object
        return NumberTarget.fit(requested, labels, numbers=numbers, ids=ids, source=source)
    return ClassTarget.fit(requested, labels, source=source)


def target_from_config(config: dict) -> Target:
    """The target of a saved model (``to_config``'s keys; models saved before regression existed hold classes)."""
    problem = config.get("problem_type") or ("binary" if len(config["classes"]) == 2 else "multiclass")
    if problem == REGRESSION:  # the saved model's one word on its problem type
        return NumberTarget(config["target"]["mean"], config["target"]["std"])
    return ClassTarget(problem, config["classes"])


def family_of(problem_type: str) -> str:
    """``regression`` or ``classification`` for a ``problem_type`` value other than ``auto``."""
    return REGRESSION if problem_type == REGRESSION else "classification"
