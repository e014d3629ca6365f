"""Rows in, features and embeddings out: the embedders a model's hyperparameters name, and the reading of batches
of rows with them. Used by the estimator (its fit, prediction and scoring) and, unchanged, on every node of a Ray
cluster (``multimodal.core.cluster``), which needs the embedding and nothing else of the estimator."""
from __future__ import annotations

import functools
import itertools
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from . import runtimes
from .errors import DataError
from .imagerefs import ImageSource, describe_reference
from .ingest import Rows, check_label_column, frame_batches, ingest
from .schema import Features, Schema, describe_row
from .views import Views

log = logging.getLogger(__name__)
BAD_IMAGES_LOGGED = 20  # warnings about single bad images in a fit; the rest are counted
# the hyperparameters that decide how rows become features and embeddings
PARAMETERS = ("image_model", "text_model", "image_batch_size", "text_batch_size", "bad_images", "joint_embedding_dims")


class Featurizer:
    """Prepares and embeds rows the way a model with these hyperparameters does. The encoders are loaded on first
    use and kept (one per modality and model name). ``bad_images`` collects, with ``bad_images="missing"``, the
    image values that gave no image (each counted as a missing image)."""

    def __init__(self, *, image_model: str, text_model: str, image_batch_size: int, text_batch_size: int,
                 bad_images: str, joint_embedding_dims: int) -> None:
        # the hyperparameters by name: also what a node of a Ray cluster needs to embed as this process does
        self.params = {"image_model": image_model, "text_model": text_model, "image_batch_size": image_batch_size,
                       "text_batch_size": text_batch_size, "bad_images": bad_images,
                       "joint_embedding_dims": joint_embedding_dims}
        self.bad_images: list[dict] = []
        self._embedders: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Featurizer":
        return cls(**{name: params[name] for name in PARAMETERS})

    def views(self, schema: Schema) -> Views:
        """The experts' views of ``schema`` for this model (before any reducer is fitted)."""
        return Views(schema, text_model=self.params["text_model"], joint_dims=self.params["joint_embedding_dims"])

    def embedder(self, modality: str) -> Any:
        key = (modality, self.params["image_model" if modality == "image" else "text_model"])
        if key not in self._embedders:
            if modality == "image":
                from .images import ImageEmbedder
                self._embedders[key] = ImageEmbedder(key[1], batch_size=self.params["image_batch_size"])
            else:
                from .text import TextEmbedder
                self._embedders[key] = TextEmbedder(key[1], batch_size=self.params["text_batch_size"])
        return self._embedders[key]

    def encoders(self, views: Views) -> dict[str, str]:
        """How each modality ``views`` embeds is encoded here: {"image" / "text": "<model>, <runtime> <precision>
        on <device>"} (from the loaded encoder, else from the plan one would get on this machine)."""
        out = {}
        for modality in sorted({views.modality[c] for c in views.embedded_columns()}):
            name = self.params["image_model" if modality == "image" else "text_model"]
            loaded = self._embedders.get((modality, name))
            out[modality] = f"{name}, {(loaded.plan if loaded is not None else runtimes.choose()).describe()}"
        return out

    def ingest(self, batches: Iterable[pd.DataFrame], schema: Schema | None, *, source: str,
               images: ImageSource | None = None, keep: Callable[[int], bool] = lambda k: True
               ) -> tuple[Views, Rows]:
        """(the views of the rows' schema, the rows prepared and embedded batch by batch); the first batch's
        header sets the schema when none is given. Images that give none fail it, or with
        ``bad_images="missing"`` are added to ``bad_images``."""
        iterator = iter(batches)
        first = next(iterator, None)
        if first is None:
            raise DataError(f"{source} has no rows and no header")
        views = self.views(schema or Schema.from_header(list(first.columns), source=source))
        check_label_column(first.columns, source)
        stream = itertools.chain([first], iterator)
        del first  # or the first batch's images would stay in memory until the end
        bad = self.bad_images if self.params["bad_images"] == "missing" else None
        rows = ingest(stream, views.schema, source=source, keep=keep,
                      embed=lambda features: self.embed(views, features, images=images, bad=bad, data=source))
        return views, rows

    def embed(self, views: Views, features: Features, only: set[str] | None = None, *,
              images: ImageSource | None = None, bad: list[dict] | None = None, data: str = ""
              ) -> dict[str, np.ndarray]:
        """Embeddings of the image columns (and of the text columns with a text encoder), streamed in batches;
        with ``only``, of those columns alone. Images are read through ``images`` (None: base64 and S3 only); with
        ``bad`` (a list), an image value that gives none is appended to it (see ``_bad_image``) and counts as
        missing."""
        if images is None:
            with ImageSource() as own:
                return self.embed(views, features, only, images=own, bad=bad, data=data)
        out = {}
        for name in views.embedded_columns():
            if only is not None and name not in only:
                continue
            values = features.values[name].tolist()
            if views.modality[name] == "image":
                out[name] = self.embedder("image").embed(
                    values, column=name, source=images, first_row=features.first_row,
                    row_names=lambda position: describe_row(position, features.ids, features.first_row),
                    on_bad=None if bad is None else functools.partial(_bad_image, bad, features, name, data))
            else:
                out[name] = self.embedder("text").embed(values, column=name)
        return out


def _bad_image(bad: list[dict], features: Features, column: str, data: str, position: int, value: str,
               reason: str) -> None:
    """``bad_images="missing"``: the image counts as missing (so the 'insufficient information' rules see it),
    and is recorded for ``bad_images_`` (the training job's bad_images.csv)."""
    features.missing.iloc[position, features.missing.columns.get_loc(column)] = True
    ids = features.ids
    bad.append({"data": data, "row": features.first_row + position + 1,
                "ID": None if ids is None else str(ids.iloc[position]), "column": column,
                "reference": describe_reference(value), "reason": reason})
    if len(bad) <= BAD_IMAGES_LOGGED:
        log.warning("%s: column %r, %s: %s: %s; counted as a missing image (bad_images=missing)%s", data, column,
                    describe_row(position, ids, features.first_row), describe_reference(value), reason,
                    "; further ones are only counted" if len(bad) == BAD_IMAGES_LOGGED else "")


def as_batches(data: Any, name: str) -> Iterable[pd.DataFrame]:
    """A DataFrame as batches of rows; an iterable of DataFrames as it is; anything else a ``TypeError``."""
    if isinstance(data, pd.DataFrame):
        return frame_batches(data)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a pandas DataFrame or an iterable of DataFrames (batches of rows), not "
                        f"{type(data).__name__}")
    return data


def read_local(featurizer: Featurizer, train: Any, validation: Any, images: str | Path | None
               ) -> tuple[Views, Rows, Rows | None]:
    """This machine reads, prepares and embeds the training rows (and the validation rows, with the same
    schema): (views, training rows, validation rows or None)."""
    with ImageSource(images) as source:
        views, rows = featurizer.ingest(as_batches(train, "train"), None, source="the training data", images=source)
        if validation is None:
            return views, rows, None
        _, validation_rows = featurizer.ingest(as_batches(validation, "validation"), views.schema, images=source,
                                               source="the validation data")
        return views, rows, validation_rows
