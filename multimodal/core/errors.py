"""The estimator's public exceptions (also exported by ``multimodal``): each message says what is wrong and how
to fix it."""
from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be used, with the column, the row and the fix in the message."""

    def __init__(self, message: str, *, column: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.row = row


class HyperparameterError(ValueError):
    """A hyperparameter has an unknown name, the wrong type or a value out of range."""


class TimeBudgetError(RuntimeError):
    """The time budget left an expert too little time to train any model."""


class NotFittedError(RuntimeError):
    """The estimator is used before ``fit`` (or ``load``)."""


class ClusterError(RuntimeError):
    """Training on a Ray cluster failed: a node left, or a task died; the message names the host."""
