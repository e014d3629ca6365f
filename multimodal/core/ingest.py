"""Training rows read as a stream of record batches, kept as what training needs.

Each batch (a DataFrame of one slice of the rows, the source's columns) is prepared (imputed, numbers parsed)
and its image columns (and text columns with a text encoder) are embedded at once; their raw values (base64
strings) are then dropped. So a fit holds the non-embedded columns, the embedding matrices and the labels,
never every image of the data at the same time: memory is bounded by the embeddings, not by the images
(docs/benchmarks.md, "Training memory").
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from .errors import DataError
from .schema import LABEL_COLUMN, Features, Schema, prepare_features

log = logging.getLogger(__name__)

# Rows per batch when a DataFrame is fed in slices; also what readers of files should aim for: 256 real product
# photos (100 KB-1 MB each) are at most about 350 MB of base64 text.
BATCH_ROWS = 256
PROGRESS_SECONDS = 30.0


@dataclass
class Rows:
    """Prepared rows: features (embedded columns' raw values dropped), embeddings, the labels as read (None
    without a label column) and each row's 0-based number in its source."""

    features: Features
    embeddings: dict[str, np.ndarray]
    labels: pd.Series | None
    numbers: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)

    def take(self, positions: np.ndarray) -> "Rows":
        """The rows at ``positions`` (an index array or a boolean mask), in that order."""
        positions = np.flatnonzero(positions) if positions.dtype == bool else positions
        f = self.features
        ids = None if f.ids is None else f.ids.iloc[positions].reset_index(drop=True)
        features = Features(values=f.values.iloc[positions].reset_index(drop=True),
                            missing=f.missing.iloc[positions].reset_index(drop=True), ids=ids)
        labels = None if self.labels is None else self.labels.iloc[positions].reset_index(drop=True)
        return Rows(features, {c: m[positions] for c, m in self.embeddings.items()}, labels, self.numbers[positions])


def concat(parts: list[Rows]) -> Rows:
    """The rows of ``parts`` one after another (at least one part). Empty parts are left out (they may lack the
    embeddings: nothing was embedded); if every part is empty, the first is the result."""
    parts = [p for p in parts if len(p)] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    ids = [p.features.ids for p in parts]
    features = Features(
        values=pd.concat([p.features.values for p in parts], ignore_index=True),
        missing=pd.concat([p.features.missing for p in parts], ignore_index=True),
        ids=None if any(i is None for i in ids) else pd.concat(ids, ignore_index=True))
    labels = [p.labels for p in parts]
    return Rows(features, {c: np.concatenate([p.embeddings[c] for p in parts]) for c in parts[0].embeddings},
                None if any(x is None for x in labels) else pd.concat(labels, ignore_index=True),
                np.concatenate([p.numbers for p in parts]))


def frame_batches(df: pd.DataFrame, rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """A DataFrame as consecutive slices of ``rows`` rows (one empty slice for an empty frame: its header)."""
    if len(df) == 0:
        yield df
    for start in range(0, len(df), rows):
        yield df.iloc[start:start + rows]


def ingest(batches: Iterable[pd.DataFrame], schema: Schema, *, embed: Callable[[Features], dict[str, np.ndarray]],
           source: str, keep: Callable[[int], bool] = lambda k: True) -> Rows:
    """Prepare and embed ``batches`` one at a time (see the module docstring).

    ``keep(k)``: whether batch ``k`` (0-based) is this reader's to process; the others are only counted, so that
    row numbers stay those of the source (several machines reading the same rows each take a share).
    """
    parts: list[Rows] = []
    first_row = rows_kept = 0
    started = last_report = time.monotonic()
    for k, batch in enumerate(batches):
        n = len(batch)
        if keep(k) and (n or not parts):
            parts.append(_prepare_batch(batch, schema, embed, source, first_row))
            rows_kept += n
            now = time.monotonic()
            if now - last_report >= PROGRESS_SECONDS:
                last_report = now
                log.info("%s: %d row(s) prepared and embedded so far (%.0f rows/s)", source, rows_kept,
                         rows_kept / (now - started))
        first_row += n
    if not parts:  # a reader whose share is empty
        return _empty_rows(schema, embed)
    rows = concat(parts)
    log.info("%s: %d row(s) read, %d prepared and embedded here in %.1f s", source, first_row, len(rows),
             time.monotonic() - started)
    return rows


def _prepare_batch(batch: pd.DataFrame, schema: Schema, embed: Callable[[Features], dict[str, np.ndarray]],
                   source: str, first_row: int) -> Rows:
    features = prepare_features(batch, schema, source=source, first_row=first_row)
    embeddings = embed(features) if len(batch) else {}
    if embeddings:
        features.values = _without(features.values, embeddings)
    labels = batch[LABEL_COLUMN].reset_index(drop=True) if LABEL_COLUMN in batch.columns else None
    return Rows(features, embeddings, labels, np.arange(first_row, first_row + len(batch), dtype=np.int64))


def _without(values: pd.DataFrame, embedded: Iterable[str]) -> pd.DataFrame:
    """``values`` with the embedded columns' raw values (base64 images, texts) replaced by None, in new arrays.

    Assigning None to those columns in place is not enough: pandas keeps the columns of one dtype in one 2-D
    block, and replacing a column leaves the others as views of that block, which keeps every image alive
    (measured: a 134 MB channel stayed in memory whole)."""
    embedded = set(embedded)
    return pd.DataFrame({c: np.full(len(values), None, dtype=object) if c in embedded else values[c].to_numpy(copy=True)
                         for c in values.columns}, index=values.index)


def _empty_rows(schema: Schema, embed: Callable[[Features], dict[str, np.ndarray]]) -> Rows:
    header = [c.name for c in schema.columns] + [LABEL_COLUMN]
    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in header})
    return _prepare_batch(empty, schema, embed, "", 0)


def check_label_column(columns: Iterable[str], source: str) -> None:
    if LABEL_COLUMN not in list(columns):
        raise DataError(f"{source} has no {LABEL_COLUMN!r} column: it needs the same header as the training data",
                        column=LABEL_COLUMN)
