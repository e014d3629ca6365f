"""A request's records on their way through the model: what is wrong with each (``RecordError``), the batch of
them (``Batch``), the checks a record passes before the model sees it (numbers, images), the prediction with
bad-record isolation (``predict``: one call for the valid records, then the records the model still rejects
found and named), and the outcome per record (``Outcome`` for classes, ``Predictions`` for numbers).

The server calls the model (``predict_proba`` of a classifier, ``predict`` of a regressor) on ``Batch.frame()``;
no model logic lives here.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import BadRequest

MAX_VALUE_IN_MESSAGE = 40
MAX_MESSAGE = 400
MAX_ERRORS_IN_MESSAGE = 5


@dataclass(frozen=True)
class RecordError:
    """What is wrong with one record: where (``line 3`` / ``record 3``), which column, and the problem."""

    where: str
    problem: str
    column: str | None = None

    @property
    def message(self) -> str:
        text = f"{self.where}, column {self.column!r}: {self.problem}" if self.column else \
            f"{self.where}: {self.problem}"
        text = " ".join(text.split())  # never a newline inside an output record
        return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


@dataclass
class Batch:
    """The records of one request: their fields (``""`` = missing; None for an unreadable record), IDs and the
    errors found so far, by position. Records are named ``line N`` (CSV, JSON lines) or ``record N`` (JSON),
    counted from the body's start: a slice of a large body starts at record ``first + 1``."""

    columns: list[str]
    kind: str
    first: int = 0
    rows: list[list[str] | None] = field(default_factory=list)
    ids: list[Any] = field(default_factory=list)
    errors: dict[int, RecordError] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, position: int) -> str:
        return f"{self.kind} {self.first + position + 1}"

    def fail(self, position: int, problem: str, column: str | None = None) -> None:
        """Mark a record bad (the first problem found is the one reported)."""
        if position not in self.errors:
            self.errors[position] = RecordError(self.where(position), problem, column)

    def add_unreadable(self, position: int, problem: str) -> None:
        """A record that could not be read at all: no fields, no ID, the problem."""
        self.rows.append(None)
        self.ids.append("")
        self.fail(position, problem)

    def valid_positions(self) -> list[int]:
        return [i for i in range(len(self.rows)) if i not in self.errors]

    def frame(self, positions: Sequence[int]) -> Any:
        """The records at ``positions`` as a DataFrame of str, columns in the model's order."""
        import pandas as pd
        data = {c: [self.rows[p][j] for p in positions] for j, c in enumerate(self.columns)}
        return pd.DataFrame(data, index=pd.RangeIndex(len(positions)), columns=self.columns, dtype=object)

    def error_summary(self) -> str:
        """One message for HTTP 400: the first few bad records, and how many there are."""
        ordered = [self.errors[p] for p in sorted(self.errors)]
        text = "; ".join(e.message for e in ordered[:MAX_ERRORS_IN_MESSAGE])
        if len(ordered) > MAX_ERRORS_IN_MESSAGE:
            text += f"; … {len(ordered) - MAX_ERRORS_IN_MESSAGE} more bad record(s)"
        return f"{len(ordered)} of {len(self.rows)} record(s) cannot be used: {text}"


@dataclass
class Outcome:
    """Per record: the predicted label and its probabilities, or an error."""

    ids: list[Any]
    labels: list[Any]
    probabilities: list[list[float] | None]
    errors: dict[int, RecordError]


@dataclass
class Predictions:
    """Per record: the predicted number (regression), or an error. Values are finite: the server turns a
    non-finite prediction into an error first (JSON cannot hold NaN or infinity)."""

    ids: list[Any]
    values: list[float | None]
    errors: dict[int, RecordError]


# ---------------------------------------------------------------------------------------------- checks


def _shown(value: str) -> str:
    text = value if len(value) <= MAX_VALUE_IN_MESSAGE else value[:MAX_VALUE_IN_MESSAGE] + "…"
    return repr(text)


def validate_numbers(batch: Batch, column: str) -> None:
    """The number rules of the estimator (``schema.parse_numbers``), record by record."""
    import numpy as np
    import pandas as pd

    from multimodal.core.schema import parse_numbers

    j = batch.columns.index(column)
    positions = batch.valid_positions()
    if not positions:
        return
    parsed = parse_numbers(pd.Series([batch.rows[p][j] for p in positions], dtype="string"))
    for k in np.flatnonzero(parsed.bad | parsed.infinite):
        value = batch.rows[positions[k]][j]
        if parsed.bad[k]:
            batch.fail(positions[k], f"{_shown(value)} is not a number; leave the field empty for a missing value",
                       column)
        else:
            batch.fail(positions[k], f"{_shown(value)}: infinite values are not supported", column)


# Bytes of an inline image the quick check decodes for its header (phone photos carry EXIF blocks of tens of KB
# before it). The model decodes the whole value once, and a fault further on is its DataError naming the row
# (``predict``): decoding every photo's 350 KB of base64 twice cost ~0.7 ms a photo (docs/benchmarks.md).
HEADER_BYTES = 64 * 1024


def check_image_quickly(value: str, max_pixels: int) -> str | None:
    """Cheap checks (base64 and the header Pillow reads in the value's first ``HEADER_BYTES``, the pixel limit)
    without decoding the pixels."""
    from multimodal.core.imagerefs import decode_base64
    try:
        head = decode_base64(value, head=HEADER_BYTES)
        size, problem = _header(head)
        if size is None and len(head) >= HEADER_BYTES:  # the header may lie further on (large EXIF or ICC blocks)
            size, problem = _header(decode_base64(value))
    except ValueError as exc:
        return str(exc)
    if problem is not None:
        return problem
    width, height = size
    if width * height > max_pixels:
        return f"the image is {width}×{height} pixels, over the limit of {max_pixels:,}; downscale it"
    return None


def _header(payload: bytes) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) from the image header Pillow finds in ``payload``, else (None, why not)."""
    import warnings

    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(payload)) as image:
                return image.size, None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "the image is too large to decode safely; downscale it"
    except Exception as exc:  # Pillow raises many types for bytes that are not an image
        return None, (f"the bytes are not an image Pillow can read ({' '.join(str(exc).split())[:120]}); send the "
                      "base64 of a JPEG, PNG, GIF, WebP or BMP file")


def check_reference(value: str, image_dir: Path | None) -> tuple[bool, str | None]:
    """(whether the value names an image elsewhere — a path or an s3:// URI —, the problem found without reading
    it): another URI scheme, a path with no image directory or leaving it, an S3 object outside the allow-list."""
    from multimodal.core.imagerefs import INLINE, PATH, ImageProblem, S3Fetcher, kind_of, resolve_path
    try:
        kind = kind_of(value)
        if kind == INLINE:
            return False, None
        if kind == PATH:
            if image_dir is None:
                return True, ("a relative image path, but this server has no image directory "
                              "(MULTIMODAL_IMAGE_DIR): send the image as base64 or as an s3:// URI")
            resolve_path(image_dir, value)
        else:
            S3Fetcher.check_allowed(value)
    except ImageProblem as problem:
        return True, str(problem)
    return True, None


def validate_images(batch: Batch, column: str, *, full: bool = False, image_dir: Path | None = None) -> None:
    """Quick checks by default; ``full`` decodes each image as the model will (catches truncated files). Paths
    and s3:// URIs get the checks that need no read (``check_reference``): the model reads them once."""
    from multimodal.core.errors import DataError
    from multimodal.core.images import decode_image, max_pixels

    j = batch.columns.index(column)
    limit = max_pixels()
    for p in batch.valid_positions():
        value = batch.rows[p][j]
        if not value.strip():
            continue
        reference, problem = check_reference(value, image_dir)
        if reference:
            if problem:
                batch.fail(p, problem, column)
            continue
        if full:
            try:
                decode_image(value, column=column, row=batch.where(p))
            except DataError as exc:
                batch.fail(p, _strip_location(str(exc), column, batch.where(p)), column)
        else:
            problem = check_image_quickly(value, limit)
            if problem:
                batch.fail(p, problem, column)


def _strip_location(message: str, column: str, where: str) -> str:
    prefix = f"column {column!r}, {where}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def validate(batch: Batch, modalities: dict[str, str], *, full_images: bool = False,
             image_dir: Path | None = None) -> None:
    """Check numbers and images of every record still valid; bad ones are marked in ``batch.errors``."""
    for column, modality in modalities.items():
        if modality == "num":
            validate_numbers(batch, column)
        elif modality == "image":
            validate_images(batch, column, full=full_images, image_dir=image_dir)


# ---------------------------------------------------------------------------------------------- prediction

_ROW_REFERENCE = re.compile(r"row \d+( \(ID [^)]*\))?")


def model_output(model: Any, kind: Any, frame: Any, images: Path | None) -> Any:
    """The model's outputs for ``frame`` as its kind (``kinds``) reads them. S3 being out of reach (or refusing
    the credentials) concerns the whole request: one 400 saying so."""
    from multimodal.core.imagerefs import ImageAccessError
    where = {} if images is None else {"images": images}
    try:
        return kind.outputs(model, frame, where)
    except ImageAccessError as exc:
        raise BadRequest(str(exc)) from None


def predict(model: Any, kind: Any, batch: Batch, modalities: dict[str, str], *, fail_fast: bool,
            images: Path | None = None) -> Outcome | Predictions | None:
    """Predict every valid record in one call; isolate records the model still rejects. ``kind``: the model's
    kind (``kinds.kind_of``), which reads its outputs and makes the outcome.

    Returns None when a record turned out bad and ``fail_fast`` (the caller answers 400 with the summary).
    """
    from multimodal.core.errors import DataError

    outputs: list[Any] = [None] * len(batch)
    full_images_checked = False
    pending = batch.valid_positions()
    while pending:
        try:
            values = model_output(model, kind, batch.frame(pending), images)
        except DataError as exc:
            before = len(batch.errors)
            if exc.row is not None and 1 <= exc.row <= len(pending):  # prepare_features names the row
                batch.fail(pending[exc.row - 1], _ROW_REFERENCE.sub("this record", str(exc)), exc.column)
            elif not full_images_checked:  # decode every image as the model does, naming the record
                full_images_checked = True
                validate(batch, {c: m for c, m in modalities.items() if m == "image"}, full_images=True,
                         image_dir=images)
            if len(batch.errors) == before:  # still unattributed: split the batch until the record is found
                _bisect(model, kind, batch, pending, outputs, images)
                pending = []
            else:
                if fail_fast:
                    return None
                pending = batch.valid_positions()
            continue
        for k, position in enumerate(pending):
            outputs[position] = values[k]
        pending = []
    outcome = kind.outcome(batch, outputs)
    if batch.errors and fail_fast:
        return None
    return outcome


def _bisect(model: Any, kind: Any, batch: Batch, positions: list[int], outputs: list, images: Path | None
            ) -> None:
    from multimodal.core.errors import DataError
    stack = [positions]
    while stack:
        part = stack.pop()
        try:
            values = model_output(model, kind, batch.frame(part), images)
        except DataError as exc:
            if len(part) == 1:
                batch.fail(part[0], str(exc), exc.column)
            else:
                stack += [part[len(part) // 2:], part[:len(part) // 2]]
            continue
        for k, position in enumerate(part):
            outputs[position] = values[k]
