"""What the server does differently for a model of classes and a model of numbers, decided once per model
(``kind_of``) and then asked, never tested again: which method of the model it calls, what the trial prediction
must return, what a record's outcome is, the CSV columns and the response formats."""
from __future__ import annotations

import math
from typing import Any

from multimodal.core.artifact import REGRESSION
from multimodal.sagemaker.contract import CSV, JSONLINES

from . import encode
from .records import Batch, Outcome, Predictions


class Classes:
    """A classifier: ``predict_proba``; each record's outcome is the most probable class and the probabilities."""

    def __init__(self, classes: list) -> None:
        self.classes = list(classes)

    def describe(self) -> str:
        return f"{len(self.classes)} classes: {', '.join(map(str, self.classes))}"

    def outputs(self, model: Any, frame: Any, where: dict) -> Any:
        """Probabilities, shape (rows, classes)."""
        return model.predict_proba(frame, **where).to_numpy(dtype=float)

    def check_trial(self, values: Any, rows: int, finite: bool) -> None:
        if values.shape != (rows, len(self.classes)) or not finite:
            raise RuntimeError(f"the trial prediction returned unusable probabilities (shape {values.shape})")

    def check_settings(self, csv_probabilities: bool) -> None:
        """Every output setting applies to classes."""

    def outcome(self, batch: Batch, outputs: list) -> Outcome:
        labels = [None if p is None else self.classes[int(p.argmax())] for p in outputs]
        return Outcome(ids=batch.ids, labels=labels, probabilities=outputs, errors=batch.errors)

    def columns(self, id_column: str | None, csv_probabilities: bool) -> list[str]:
        return encode.csv_columns(self.classes, with_id=id_column is not None, id_column=id_column or "ID",
                                  with_probabilities=csv_probabilities)

    def format(self, outcome: Outcome, accept: str, id_column: str | None, csv_probabilities: bool) -> str:
        if accept == CSV:
            return encode.format_csv(outcome, self.classes, with_id=id_column is not None,
                                     with_probabilities=csv_probabilities)
        formatter = encode.format_jsonlines if accept == JSONLINES else encode.format_json
        return formatter(outcome, self.classes, with_id=id_column is not None, id_column=id_column or "ID")


class Numbers:
    """A regressor: ``predict``; each record's outcome is its number (a non-finite one is an error record)."""

    def describe(self) -> str:
        return "regression"

    def outputs(self, model: Any, frame: Any, where: dict) -> Any:
        """Predictions, shape (rows,)."""
        import numpy as np
        return np.asarray(model.predict(frame, **where), dtype=float)

    def check_trial(self, values: Any, rows: int, finite: bool) -> None:
        if values.shape != (rows,) or not finite:
            raise RuntimeError(f"the trial prediction returned unusable predictions (shape {values.shape}, "
                               f"expected ({rows},), finite: {finite})")

    def check_settings(self, csv_probabilities: bool) -> None:
        """Refuse, at load, what a regression model cannot honour: the server then stops with the reason, rather
        than answering every CSV request without the columns the setting promised."""
        if csv_probabilities:
            raise ValueError("MULTIMODAL_CSV_PROBABILITIES=true asks for one probability column per class, but the "
                             "model is a regression model (no classes): set MULTIMODAL_CSV_PROBABILITIES=false")

    def outcome(self, batch: Batch, outputs: list) -> Predictions:
        for position, value in enumerate(outputs):
            # JSON has no NaN or infinity, and no number would be a truthful answer: the record gets an error
            if value is not None and not math.isfinite(value):
                batch.fail(position, f"the model's prediction for this record is not a finite number ({value}); "
                                     "check the record's values for extremes")
        values = [None if p in batch.errors else float(v) for p, v in enumerate(outputs)]
        return Predictions(ids=batch.ids, values=values, errors=batch.errors)

    def columns(self, id_column: str | None, csv_probabilities: bool) -> list[str]:
        return encode.regression_csv_columns(with_id=id_column is not None, id_column=id_column or "ID")

    def format(self, outcome: Predictions, accept: str, id_column: str | None, csv_probabilities: bool) -> str:
        if accept == CSV:
            return encode.format_regression_csv(outcome, with_id=id_column is not None)
        formatter = encode.format_regression_jsonlines if accept == JSONLINES else encode.format_regression_json
        return formatter(outcome, with_id=id_column is not None, id_column=id_column or "ID")


def kind_of(model: Any) -> Classes | Numbers:
    """The kind of a fitted model (or a stand-in with the same attributes): numbers when its ``problem_type_``
    says regression, else classes (``classes_``)."""
    if getattr(model, "problem_type_", None) == REGRESSION:  # the one place the server reads the problem type
        return Numbers()
    return Classes(model.classes_)


def is_model(source: Any) -> bool:
    """Whether ``source`` is a fitted model (or a stand-in) rather than a callable that loads one."""
    return hasattr(source, "predict_proba") or getattr(source, "problem_type_", None) == REGRESSION
