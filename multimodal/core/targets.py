"""What the label column is: classes or a number (``problem_type``), and numeric targets read from it.

The ``auto`` rule: a label column whose values are all numbers (the ``_num`` columns' rules: ``1.5``, ``-3``,
``2e3``; empty labels and the ``_num`` missing spellings aside) with more than 20 distinct values (at least
``REGRESSION_MIN_DISTINCT``) is a regression target; anything else is classes (binary with two). Class ids
written as integers (1-5 star ratings, at most 20 product category codes) stay classes; prices, durations and
averaged ratings are numbers. The rule cannot know a user's intent for every column — set ``problem_type``
explicitly to override it; the choice and its reason are logged.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .artifact import REGRESSION
from .errors import DataError
from .schema import LABEL_COLUMN, describe_row, parse_numbers

log = logging.getLogger(__name__)

REGRESSION_MIN_DISTINCT = 21
MAX_ROWS_NAMED = 5


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
