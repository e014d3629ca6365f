"""Outcomes → response bodies.

Classification: ``ID,label`` (+ one probability column per class when enabled) per CSV record;
``{"ID": …, "label": …, "probabilities": {class: p, …}}`` per JSON record. Regression: ``ID,prediction`` per CSV
record and ``{"ID": …, "prediction": …}`` per JSON record, the number written as Python's ``repr`` of the
float64 (the shortest text that reads back as the same float; ``1e-05`` and ``1e+16`` style outside
[1e-4, 1e16)), identical in CSV and JSON. Without an ID column the ID is left out. A bad record (bad-record
mode "emit") is ``ID,ERROR: <reason>`` in CSV and carries ``"error": "<reason>"`` with null outputs in JSON.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Sequence

from multimodal.core.schema import LABEL_COLUMN, PREDICTION
from multimodal.sagemaker.contract import JSON

from .records import Outcome, Predictions

# Output records are separated by a newline with none after the last: batch transform's AssembleWith=Line
# adds a newline after every response, so a response ending with one would leave a blank line in the
# assembled file for each request. (Error bodies, 4xx, are never assembled and keep theirs.)
RECORD_SEPARATOR = "\n"


def _clean(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _probability(p: float) -> float:
    import numpy as np
    return float(str(np.float32(p)))  # shortest text that round-trips the model's float32 output


def format_csv(outcome: Outcome, classes: Sequence[Any], *, with_id: bool, with_probabilities: bool) -> str:
    """``ID,label`` per record (``label`` alone without an ID column), then one column per class if asked.

    A bad record (bad-record mode) becomes ``ID,ERROR: <reason>`` with empty probability fields. Records are
    separated by ``\n`` with none after the last (see RECORD_SEPARATOR).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    blanks = [""] * len(classes) if with_probabilities else []
    for i, record_id in enumerate(outcome.ids):
        row = [_clean(record_id)] if with_id else []
        if i in outcome.errors:
            row += ["ERROR: " + outcome.errors[i].message] + blanks
        else:
            row.append(_clean(outcome.labels[i]))
            if with_probabilities:
                row += [str(_probability(p)) for p in outcome.probabilities[i]]
        writer.writerow(row)
    return buffer.getvalue().removesuffix(RECORD_SEPARATOR)


def _json_records(outcome: Outcome, classes: Sequence[Any], *, with_id: bool, id_column: str) -> Iterable[dict]:
    keys = [str(c) for c in classes]
    for i, record_id in enumerate(outcome.ids):
        record: dict[str, Any] = {id_column: record_id} if with_id else {}
        if i in outcome.errors:
            record.update({LABEL_COLUMN: None, "probabilities": None, "error": outcome.errors[i].message})
        else:
            record[LABEL_COLUMN] = outcome.labels[i]
            record["probabilities"] = {k: _probability(p) for k, p in zip(keys, outcome.probabilities[i])}
        yield record


def format_jsonlines(outcome: Outcome, classes: Sequence[Any], *, with_id: bool, id_column: str) -> str:
    return RECORD_SEPARATOR.join(json.dumps(r, ensure_ascii=False)
                                 for r in _json_records(outcome, classes, with_id=with_id, id_column=id_column))


def format_json(outcome: Outcome, classes: Sequence[Any], *, with_id: bool, id_column: str) -> str:
    return json.dumps(list(_json_records(outcome, classes, with_id=with_id, id_column=id_column)),
                      ensure_ascii=False)


def csv_columns(classes: Sequence[Any], *, with_id: bool, id_column: str, with_probabilities: bool) -> list[str]:
    """Names of the CSV output columns (sent in the X-Output-Columns response header; no header line)."""
    names = ([id_column] if with_id else []) + [LABEL_COLUMN]
    return names + ([f"probability_{c}" for c in classes] if with_probabilities else [])


def format_number(value: float) -> str:
    """The text of a prediction: ``repr`` of the float64, the shortest text that reads back as the same value
    (what ``json.dumps`` writes too, so CSV and JSON agree). ``float()`` first: numpy 2's repr is
    ``np.float64(…)``."""
    return repr(float(value))


def format_regression_csv(outcome: Predictions, *, with_id: bool) -> str:
    """``ID,prediction`` per record (``prediction`` alone without an ID column); ``ID,ERROR: <reason>`` for a
    bad record. Records separated as in ``format_csv``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for i, record_id in enumerate(outcome.ids):
        row = [_clean(record_id)] if with_id else []
        row.append("ERROR: " + outcome.errors[i].message if i in outcome.errors else
                   format_number(outcome.values[i]))
        writer.writerow(row)
    return buffer.getvalue().removesuffix(RECORD_SEPARATOR)


def _regression_records(outcome: Predictions, *, with_id: bool, id_column: str) -> Iterable[dict]:
    for i, record_id in enumerate(outcome.ids):
        record: dict[str, Any] = {id_column: record_id} if with_id else {}
        if i in outcome.errors:
            record.update({PREDICTION: None, "error": outcome.errors[i].message})
        else:
            record[PREDICTION] = float(outcome.values[i])
        yield record


def _dumps(value: Any) -> str:
    # allow_nan=False: a non-finite number that got this far is a 500, never a body no JSON parser reads
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def format_regression_jsonlines(outcome: Predictions, *, with_id: bool, id_column: str) -> str:
    return RECORD_SEPARATOR.join(_dumps(r) for r in _regression_records(outcome, with_id=with_id,
                                                                         id_column=id_column))


def format_regression_json(outcome: Predictions, *, with_id: bool, id_column: str) -> str:
    return _dumps(list(_regression_records(outcome, with_id=with_id, id_column=id_column)))


def regression_csv_columns(*, with_id: bool, id_column: str) -> list[str]:
    """Names of the regression CSV output columns (the X-Output-Columns response header)."""
    return ([id_column] if with_id else []) + [PREDICTION]


def join(bodies: Sequence[str], accept: str) -> str:
    """The response bodies of consecutive slices of one request (``decode.slices``) as the body the whole request
    formatted at once would be: records one per line, or one JSON list."""
    if len(bodies) == 1:
        return bodies[0]
    if accept == JSON:
        inner = [b[1:-1] for b in bodies if b[1:-1]]  # each is "[…]", written with json.dumps's ", " separator
        return "[" + ", ".join(inner) + "]"
    return RECORD_SEPARATOR.join(bodies)
