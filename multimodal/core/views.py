"""What each expert sees: its input columns, built from the prepared features and the embeddings.

* ``text``: the raw text columns (AutoGluon's n-gram features) or, with ``text_model=minilm``, each column's
  sentence embedding.
* ``num``: the numbers (a missing one is 0, the original algorithm's rule) and, for every ``_num`` column that
  had missing values in training, a 0/1 ``<column>__missing`` indicator: 0 alone cannot tell "missing" from
  "zero", and on real data that cost the numeric expert 5 points of accuracy.
* ``cat``: the categories. ``image``: one column's image embedding (one expert per image column). With many
  rows (``reduce_image_embeddings``) it is reduced once to ``image_embedding_dims`` principal components that
  every expert reads, and the full embedding (1,280–2,048 floats a row) is dropped as soon as it is reduced, so
  that AutoGluon's copies of the expert's frame — about eight at the peak of a fit — are of a matrix 10× smaller
  (issue 19: the peak memory of 50,000 image rows). Not by default on fewer rows: there the rotated components
  cost the fused model 1–2.5 points against the encoder's own dimensions (docs/benchmarks.md).
* ``joint``: all of the above together, each embedding reduced to a few principal components (an image column's
  first ``joint_embedding_dims`` of its shared ones), so that one expert can learn interactions between
  modalities (a number that matters only for some category).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .experts import ExpertSpec
from .reduction import Reducer
from .schema import Features, Schema

PER_MODALITY = ("text", "num", "cat")
JOINT = "joint"

# Whether the fusion network also gets each per-modality expert's missing fraction per row, beyond what the
# target asks for (``missing_fractions_as_inputs``: for numbers only). Measured (toy, 4 min): no gain on real
# data for classes (clothing with 10 % of each modality blanked 0.856 with / 0.855 without, films 0.627 / 0.626)
# — the experts' "insufficient information" probabilities already carry it — and a loss on small data
# (synthetic, 360 rows: 0.694 / 0.719). Models saved with it still use it.
FUSION_MISSING_FRACTIONS = False


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


# Principal components are fitted on at most this many training rows (a seeded sample): the components of a
# 1,280-wide embedding are settled long before, and the fit's copies of the matrix stop growing with the data.
REDUCER_FIT_ROWS = 10_000
# reduce_image_embeddings=auto reduces above this many training rows: from about here the image expert's copies
# of a full embedding matrix become the training job's memory peak (docs/benchmarks.md, issue 19).
REDUCE_IMAGES_FROM_ROWS = 25_000


def reduces_images(setting: str, rows: int) -> bool:
    """Whether ``reduce_image_embeddings=setting`` reduces the image embeddings of ``rows`` training rows."""
    return setting == "true" or (setting == "auto" and rows > REDUCE_IMAGES_FROM_ROWS)


class Views:
    """Builds each expert's input frame; the same code at fit and at prediction time.

    ``joint_dims`` (``joint_embedding_dims``): components of each embedding in the joint expert's frame, 0 for
    all. ``reduced``: the columns whose embeddings ``reduce`` replaces by their components (set by
    ``fit_reducers``, saved with the model: a model saved before version 5 has none)."""

    def __init__(self, schema: Schema, *, text_model: str, joint_dims: int = 0,
                 reducers: dict[str, Reducer] | None = None, reduced: list[str] | tuple = ()) -> None:
        self.schema = schema
        self.modality = {c.name: c.modality for c in schema.columns}
        self.text_model = text_model
        self.joint_dims = joint_dims
        self.reducers = reducers or {}
        self.reduced = set(reduced)

    def embedded_columns(self) -> list[str]:
        """Columns turned into embeddings before the experts see them: images, and text with minilm."""
        return [c for c, m in self.modality.items() if m == "image" or (m == "text" and self.text_model != "ngrams")]

    def raw_text_columns(self, spec: ExpertSpec) -> list[str]:
        """The text columns ``spec``'s expert gets as raw text (for AutoGluon's n-gram features)."""
        if self.text_model != "ngrams":
            return []
        return [c for c in spec.columns if self.modality[c] == "text"]

    def fit_reducers(self, embeddings: dict[str, np.ndarray], *, image_dims: int, joint: bool, seed: int) -> None:
        """Principal components of each embedding column wider than it needs to be: ``image_dims`` for an image
        column (shared by every expert; 0: none), else ``joint_dims`` for the joint expert alone (``joint``:
        whether there is one)."""
        self.reducers, self.reduced = {}, set()
        for column, matrix in embeddings.items():
            width = matrix.shape[1]
            if self.modality[column] == "image" and 0 < image_dims < width:
                self.reducers[column] = Reducer.fit(_sample(matrix, seed), image_dims, seed=seed)
                self.reduced.add(column)
            elif joint and 0 < self.joint_dims < width:
                self.reducers[column] = Reducer.fit(_sample(matrix, seed), self.joint_dims, seed=seed)

    def reduce(self, embeddings: dict[str, np.ndarray]) -> None:
        """Replace, in ``embeddings`` itself, each shared-reduction column's matrix by its principal components:
        the full matrix is freed here unless the caller holds it elsewhere."""
        for column in self.reduced & set(embeddings):
            matrix = embeddings[column]
            if matrix.shape[1] == self.reducers[column].dims:
                continue  # reduced already
            embeddings[column] = self.reducers[column].transform(matrix)

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
        if column in self.reduced:  # ``matrix`` holds the components already (``reduce``)
            width = matrix.shape[1]
            if spec.modality == JOINT and self.joint_dims:
                width = min(self.joint_dims, width)
            return pd.DataFrame(matrix[:, :width], columns=[f"{column}__pc{i}" for i in range(width)])
        reducer = self.reducers.get(column) if spec.modality == JOINT else None
        if reducer is not None:
            return pd.DataFrame(reducer.transform(matrix), columns=[f"{column}__pc{i}" for i in range(reducer.dims)])
        return pd.DataFrame(matrix, columns=[f"{column}__{i}" for i in range(matrix.shape[1])])


def _sample(matrix: np.ndarray, seed: int) -> np.ndarray:
    """At most ``REDUCER_FIT_ROWS`` of ``matrix``'s rows, drawn with ``seed`` (all of them when fewer)."""
    if len(matrix) <= REDUCER_FIT_ROWS:
        return matrix
    rows = np.random.default_rng(seed).choice(len(matrix), REDUCER_FIT_ROWS, replace=False)
    return matrix[np.sort(rows)]


def placeholder_rows(spec: ExpertSpec, features: Features) -> np.ndarray | None:
    """For an image expert (no indicator columns), the rows whose image is missing: its input there is the
    placeholder's embedding, the same for every such row (``Expert.outputs``); None for any other expert."""
    if spec.modality != "image" or spec.indicators:
        return None
    return features.missing[spec.columns].to_numpy().all(axis=1)


def missing_fractions(features: Features, specs: list[ExpertSpec]) -> np.ndarray:
    """Per row, the fraction of each per-modality expert's columns that is missing: an input of the fusion
    network, next to the experts' probabilities, saying how far to trust each of them."""
    columns = [features.missing[s.columns].to_numpy(dtype=np.float32).mean(axis=1) for s in specs
               if s.modality != JOINT]
    return np.stack(columns, axis=1) if columns else np.zeros((len(features), 0), dtype=np.float32)
