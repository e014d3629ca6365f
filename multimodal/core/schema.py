"""Column roles from header suffixes, validation, label encoding and per-modality imputation."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import DataError

log = logging.getLogger(__name__)

ID_COLUMN = "ID"
LABEL_COLUMN = "label"
PREDICTION = "prediction"  # the name of a regression model's output (predict's Series, the server's column)
MODALITIES = ("text", "num", "cat", "image")
SUFFIXES = {f"_{m}": m for m in MODALITIES}
# Only for _num columns: these spellings are missing values, not malformed numbers.
NUMERIC_MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "-"})
CATEGORY_IMPUTED = "unknown"
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Column:
    name: str
    modality: str


@dataclass
class Schema:
    """The training header: feature columns in order, with the positions of ID and label."""

    header: list[str]
    columns: list[Column] = field(default_factory=list)

    @property
    def id_column(self) -> str | None:
        return ID_COLUMN if ID_COLUMN in self.header else None

    @property
    def prediction_header(self) -> list[str]:
        """Columns of a prediction record: the training header without label, same order."""
        return [c for c in self.header if c != LABEL_COLUMN]

    def names(self, modality: str) -> list[str]:
        return [c.name for c in self.columns if c.modality == modality]

    def to_json(self) -> dict:
        return {"header": self.header, "columns": [{"name": c.name, "modality": c.modality} for c in self.columns]}

    @classmethod
    def from_json(cls, data: dict) -> "Schema":
        return cls(header=list(data["header"]), columns=[Column(c["name"], c["modality"]) for c in data["columns"]])

    @classmethod
    def from_header(cls, header: Sequence[Any], *, source: str = "the training data") -> "Schema":
        """Route each column by suffix; every problem with the header is reported at once."""
        header = [str(h) for h in header]
        errors: list[str] = []
        seen: dict[str, int] = {}
        for position, name in enumerate(header, start=1):
            if name in seen:
                errors.append(f"column {name!r} appears twice (columns {seen[name]} and {position}): "
                              "rename or drop one of them")
            seen.setdefault(name, position)
        columns: list[Column] = []
        for position, name in enumerate(header, start=1):
            if name in (ID_COLUMN, LABEL_COLUMN):
                continue
            modality = next((m for s, m in SUFFIXES.items() if name.endswith(s) and len(name) > len(s)), None)
            if modality is not None:
                if seen[name] == position:
                    columns.append(Column(name, modality))
                continue
            if name.lower() == LABEL_COLUMN or name.lower() == ID_COLUMN.lower():
                expected = LABEL_COLUMN if name.lower() == LABEL_COLUMN else ID_COLUMN
                errors.append(f"column {name!r} (column {position}): the name is case-sensitive, rename it to "
                              f"{expected!r}")
            else:
                errors.append(f"column {name!r} (column {position}) has no recognised suffix: rename it to end "
                              "with _text, _num, _cat or _image, or drop it")
        if LABEL_COLUMN not in header and not any(LABEL_COLUMN == h.lower() for h in header):
            errors.append(f"no {LABEL_COLUMN!r} column: add the target as a column named {LABEL_COLUMN!r}")
        if not columns and not errors:
            errors.append("no feature columns: name at least one column with a _text, _num, _cat or _image "
                          "suffix")
        if errors:
            raise DataError(f"Invalid header in {source}: " + "; ".join(errors))
        return cls(header=header, columns=columns)


def describe_row(position: int, ids: pd.Series | None, first_row: int = 0) -> str:
    """'row 17 (ID 'abc')' for a 0-based position within rows that start at row ``first_row`` (0-based) of their
    source; rows are counted from 1 after the header."""
    text = f"row {first_row + position + 1}"
    if ids is not None:
        text += f" (ID {ids.iloc[position]!r})"
    return text


@dataclass
class Features:
    """Feature columns after imputation, with where values were missing.

    Image columns keep the raw base64 text (None when missing): decoding happens in streamed batches.
    """

    values: pd.DataFrame
    missing: pd.DataFrame
    ids: pd.Series | None
    first_row: int = 0  # of the source, for error messages (rows read in batches)

    def __len__(self) -> int:
        return len(self.values)


def prepare_features(df: pd.DataFrame, schema: Schema, *, source: str = "the input", first_row: int = 0) -> Features:
    """Check that every feature column is present, impute per modality and reject malformed numbers.

    ``first_row``: the 0-based row of the source that ``df`` starts at (for error messages)."""
    absent = [c.name for c in schema.columns if c.name not in df.columns]
    if absent:
        raise DataError(f"{source} lacks the column(s) {', '.join(map(repr, absent))} that the model was trained "
                        f"on; expected columns in order: {', '.join(schema.prediction_header)}")
    ids = df[ID_COLUMN].reset_index(drop=True) if ID_COLUMN in df.columns else None
    values: dict[str, pd.Series] = {}
    missing: dict[str, np.ndarray] = {}
    for column in schema.columns:
        raw = df[column.name].reset_index(drop=True)
        values[column.name], missing[column.name] = _impute(raw, column, ids, source, first_row)
    index = pd.RangeIndex(len(df))
    return Features(values=pd.DataFrame(values, index=index), missing=pd.DataFrame(missing, index=index), ids=ids,
                    first_row=first_row)


def _blank(raw: pd.Series) -> np.ndarray:
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        text = raw.astype("string")
        return (raw.isna() | text.str.strip().eq("")).fillna(True).to_numpy(dtype=bool)
    return raw.isna().to_numpy(dtype=bool)


def _impute(raw: pd.Series, column: Column, ids: pd.Series | None, source: str,
            first_row: int) -> tuple[pd.Series, np.ndarray]:
    if column.modality == "num":
        return _parse_numbers(raw, column.name, ids, source, first_row)
    missing = _blank(raw)
    if column.modality == "text":
        return raw.astype("string").fillna("").where(~missing, "").astype(object), missing
    if column.modality == "cat":
        text = raw.map(_category_text, na_action="ignore").astype(object)
        return text.where(~missing, CATEGORY_IMPUTED), missing
    # image: decoded later, in batches
    return raw.astype(object).where(~missing, None), missing


def _category_text(value: Any) -> str:
    # 3 and 3.0 from a DataFrame mean the same category as "3" read from a CSV file
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass
class ParsedNumbers:
    """A ``_num`` column read by the number rules: values (NaN where missing or unusable) and, per row, whether
    it was missing (empty or a NUMERIC_MISSING_TOKENS spelling), not a number, or infinite."""

    values: pd.Series
    missing: np.ndarray
    bad: np.ndarray
    infinite: np.ndarray


def parse_numbers(raw: pd.Series) -> ParsedNumbers:
    """The number rules, shared by training, prediction and the server's per-record checks."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        raw = raw.astype(float)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        parsed = raw.astype(float)
        bad = np.zeros(len(raw), dtype=bool)
    else:
        text = raw.astype("string").str.strip()
        blank = (raw.isna() | text.str.lower().isin(NUMERIC_MISSING_TOKENS)).fillna(True)
        parsed = pd.to_numeric(text.where(~blank), errors="coerce").astype(float)
        bad = (~blank & parsed.isna()).to_numpy(dtype=bool)
    infinite = np.isinf(parsed.to_numpy())
    return ParsedNumbers(values=parsed, missing=parsed.isna().to_numpy() & ~bad, bad=bad, infinite=infinite)


def _parse_numbers(raw: pd.Series, name: str, ids: pd.Series | None, source: str,
                   first_row: int) -> tuple[pd.Series, np.ndarray]:
    parsed = parse_numbers(raw)
    if parsed.bad.any():
        position = int(np.flatnonzero(parsed.bad)[0])
        raise DataError(
            f"{source}: column {name!r}, {describe_row(position, ids, first_row)}: {raw.iloc[position]!r} is not a "
            f"number. Fix the value, leave the field empty to impute 0, or rename the column with a _cat or _text "
            f"suffix if it is not numeric ({int(parsed.bad.sum())} such value(s) in this column)",
            column=name, row=first_row + position + 1)
    if parsed.infinite.any():
        position = int(np.flatnonzero(parsed.infinite)[0])
        raise DataError(f"{source}: column {name!r}, {describe_row(position, ids, first_row)}: infinite values "
                        "are not supported; replace it with a finite number or leave the field empty",
                        column=name, row=first_row + position + 1)
    return parsed.values.fillna(0.0), parsed.missing


def _native(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_labels(raw: pd.Series, *, source: str = "the training data") -> tuple[list, np.ndarray, np.ndarray]:
    """Classes in sorted order, the class index of each kept row, and which rows had a label.

    Labels read from CSV are text; when every one is an integer they come back as int, so that
    predictions use the user's own values.
    """
    present = ~_blank(raw)
    dropped = int((~present).sum())
    if dropped:
        log.warning("%s: dropped %d row(s) with an empty label", source, dropped)
    kept = raw[present]
    if kept.dtype == object or pd.api.types.is_string_dtype(kept.dtype):
        text = kept.astype(str).str.strip()
        if len(text) and text.map(lambda s: bool(_INT_RE.match(s))).all():
            kept = text.astype(np.int64)
        else:
            kept = text
    elif pd.api.types.is_float_dtype(kept.dtype) and np.all(np.mod(kept.to_numpy(), 1) == 0):
        kept = kept.astype(np.int64)
    classes = sorted({_native(v) for v in kept}, key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(f"{source}: column {LABEL_COLUMN!r} needs at least 2 classes to train a classifier; "
                        f"found {found}. Check that the label column holds the target", column=LABEL_COLUMN)
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.fromiter((lookup[_native(v)] for v in kept), dtype=np.int64, count=len(kept))
    return classes, y, present


def labels_to_indices(raw: pd.Series, classes: list, *, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Map a label column onto known classes (for validation/evaluation data); unknown labels are an error."""
    present = ~_blank(raw)
    lookup = {str(c): i for i, c in enumerate(classes)}
    indices = np.full(len(raw), -1, dtype=np.int64)
    for position, value in enumerate(raw):
        if not present[position]:
            continue
        key = str(_category_text(_native(value))).strip()
        if key not in lookup:
            raise DataError(f"{source}: {LABEL_COLUMN!r} value {value!r} in row {position + 1} is not a class seen "
                            f"in training ({', '.join(map(str, classes))})", column=LABEL_COLUMN, row=position + 1)
        indices[position] = lookup[key]
    return indices, present


def modality_missing_fraction(features: Features, names: Iterable[str]) -> np.ndarray:
    names = list(names)
    return features.missing[names].to_numpy(dtype=float).mean(axis=1) if names else np.zeros(len(features))
