"""What each expert sees: its input columns, built from the prepared features and the embeddings.

* ``text``: the raw text columns (AutoGluon's n-gram features) or, with ``text_model=minilm``, each column's
  sentence embedding.
* ``num``: the numbers (a missing one is 0, the original algorithm's rule) and, for every ``_num`` column that
  had missing values in training, a 0/1 ``<column>__missing`` indicator: 0 alone cannot tell "missing" from
  "zero", and on real data that cost the numeric expert 5 points of accuracy.
* ``cat``: the categories. ``image``: one column's image embedding (one expert per image column).
* ``joint``: all of the above together, each embedding reduced to a few principal components, so that one
  expert can learn interactions between modalities (a number that matters only for some category).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .experts import ExpertSpec
from .reduction import Reducer
from .schema import Features, Schema

PER_MODALITY = ("text", "num", "cat")
JOINT = "joint"


def expert_specs(schema: Schema, *, indicators: list[str], joint: bool) -> list[ExpertSpec]:
    """One expert per modality present (one per image column), and the joint expert when asked for and there
    are at least two of them to join."""
    specs = [ExpertSpec(m, m, schema.names(m), indicators if m == "num" else []) for m in PER_MODALITY
             if schema.names(m)]
    specs += [ExpertSpec(name, "image", [name]) for name in schema.names("image")]
    if joint and len(specs) >= 2:
        specs.append(ExpertSpec(JOINT, JOINT, [c.name for c in schema.columns], list(indicators)))
    return specs


def missing_indicators(schema: Schema, features: Features) -> list[str]:
    """The ``_num`` columns that had missing values in training: each gets a "was missing" indicator."""
    return [c for c in schema.names("num") if features.missing[c].any()]


class Views:
    """Builds each expert's input frame; the same code at fit and at prediction time."""

    def __init__(self, schema: Schema, *, text_model: str, reducers: dict[str, Reducer] | None = None) -> None:
        self.schema = schema
        self.modality = {c.name: c.modality for c in schema.columns}
        self.text_model = text_model
        self.reducers = reducers or {}

    def embedded_columns(self) -> list[str]:
        """Columns turned into embeddings before the experts see them: images, and text with minilm."""
        return [c for c, m in self.modality.items() if m == "image" or (m == "text" and self.text_model != "ngrams")]

    def raw_text_columns(self, spec: ExpertSpec) -> list[str]:
        """The text columns ``spec``'s expert gets as raw text (for AutoGluon's n-gram features)."""
        if self.text_model != "ngrams":
            return []
        return [c for c in spec.columns if self.modality[c] == "text"]

    def fit_reducers(self, embeddings: dict[str, np.ndarray], dims: int, *, seed: int) -> None:
        """Principal components of each embedding column, for the joint expert (none when ``dims`` is 0)."""
        self.reducers = {column: Reducer.fit(matrix, dims, seed=seed) for column, matrix in embeddings.items()
                         if dims and matrix.shape[1] > dims}

    def frame(self, spec: ExpertSpec, features: Features, embeddings: dict[str, np.ndarray]) -> pd.DataFrame:
        parts = []
        for column in spec.columns:
            if column in embeddings:
                parts.append(self._embedding(spec, column, embeddings[column]))
            elif self.modality[column] == "num":
                parts.append(features.values[[column]].astype(float))
            else:
                parts.append(features.values[[column]])
        if spec.indicators:
            parts.append(pd.DataFrame({f"{c}__missing": features.missing[c].to_numpy(dtype=np.int8)
                                       for c in spec.indicators}, index=features.values.index))
        return pd.concat(parts, axis=1) if len(parts) > 1 else parts[0]

    def _embedding(self, spec: ExpertSpec, column: str, matrix: np.ndarray) -> pd.DataFrame:
        reducer = self.reducers.get(column) if spec.modality == JOINT else None
        if reducer is not None:
            return pd.DataFrame(reducer.transform(matrix), columns=[f"{column}__pc{i}" for i in range(reducer.dims)])
        return pd.DataFrame(matrix, columns=[f"{column}__{i}" for i in range(matrix.shape[1])])


def missing_fractions(features: Features, specs: list[ExpertSpec]) -> np.ndarray:
    """Per row, the fraction of each per-modality expert's columns that is missing: an input of the fusion
    network, next to the experts' probabilities, saying how far to trust each of them."""
    columns = [features.missing[s.columns].to_numpy(dtype=np.float32).mean(axis=1) for s in specs
               if s.modality != JOINT]
    return np.stack(columns, axis=1) if columns else np.zeros((len(features), 0), dtype=np.float32)
