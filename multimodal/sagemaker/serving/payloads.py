"""Request bodies → records, and predictions → response bodies, for the inference server.

Everything here works record by record so that one bad record can be named (by its line number) and, in the
server's bad-record mode, replaced in the output by an error record while the others are predicted.

* ``text/csv``: no header; each record holds the training columns without ``label``, in order (ID included).
  Records are split on ``\\n`` only (a trailing ``\\r`` is dropped), never with ``str.splitlines`` (which also
  splits on U+2028, U+0085, …): SageMaker splits files on ``\\n``, and the output must have exactly one line
  per input line. Each record is parsed as one RFC 4180 line; an empty field is a missing value.
* ``application/jsonlines``: one JSON object per line, keyed by column name. A key that is absent or null is a
  missing value. Text containing newlines is sent this way.
* ``application/json``: a list of such objects (or one object).

No model logic lives here: the server calls the model (``predict_proba`` of a classifier, ``predict`` of a
regressor) on ``Batch.frame()``.

Responses. Classification: ``ID,label`` (+ one probability column per class when enabled) per CSV record;
``{"ID": …, "label": …, "probabilities": {class: p, …}}`` per JSON record. Regression: ``ID,prediction`` per CSV
record and ``{"ID": …, "prediction": …}`` per JSON record, the number written as Python's ``repr`` of the
float64 (the shortest text that reads back as the same float; ``1e-05`` and ``1e+16`` style outside
[1e-4, 1e16)), identical in CSV and JSON. Without an ID column the ID is left out. A bad record (bad-record
mode "emit") is ``ID,ERROR: <reason>`` in CSV and carries ``"error": "<reason>"`` with null outputs in JSON.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from multimodal.core.schema import LABEL_COLUMN, PREDICTION
from multimodal.sagemaker.contract import (
    CSV,
    JSON,
    JSONLINES,
    allow_long_csv_fields,
    split_records,
)

from .errors import BadRequest, UnsupportedMediaType

MAX_VALUE_IN_MESSAGE = 40
MAX_MESSAGE = 400
MAX_ERRORS_IN_MESSAGE = 5
# A 6 MB payload of real records holds far fewer; this bounds the memory a body of empty lines can take.
MAX_RECORDS = 500_000


class PayloadError(BadRequest):
    """The request body as a whole cannot be read (empty, not JSON)."""


class CharsetError(UnsupportedMediaType):
    """The Content-Type names a charset that cannot be read."""


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
    errors found so far, by position. Records are named ``line N`` (CSV, JSON lines) or ``record N`` (JSON)."""

    columns: list[str]
    kind: str
    rows: list[list[str] | None] = field(default_factory=list)
    ids: list[Any] = field(default_factory=list)
    errors: dict[int, RecordError] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, position: int) -> str:
        return f"{self.kind} {position + 1}"

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


# ---------------------------------------------------------------------------------------------- media types

def media_type(header_value: str | None) -> tuple[str, dict[str, str]]:
    """'text/csv; charset=utf-8' → ('text/csv', {'charset': 'utf-8'})."""
    if not header_value:
        return "", {}
    kind, *params = header_value.split(";")
    options = {}
    for param in params:
        key, _, value = param.partition("=")
        options[key.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), options


def _decoder(charset: str | None) -> str:
    name = (charset or "utf-8").lower()
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise CharsetError(f"unknown charset {charset!r}: send UTF-8") from None
    if "\n,\"".encode(codec.name) != b"\n,\"":  # records are split on the byte \n: UTF-16 and the like cannot be
        raise CharsetError(f"charset {charset!r} is not supported: send UTF-8")
    return "utf-8-sig" if codec.name == "utf-8" else codec.name


# ---------------------------------------------------------------------------------------------- parsing

def _check_not_empty(body: bytes) -> None:
    if not body or not body.strip():
        raise PayloadError("empty body: send at least one record")


def _check_count(n: int) -> None:
    if n > MAX_RECORDS:
        raise PayloadError(f"{n:,} records in one request, over the limit of {MAX_RECORDS:,}: send fewer records "
                           "per request (empty lines count as records)")


def parse_csv(body: bytes, columns: Sequence[str], *, id_column: str | None, charset: str | None = None) -> Batch:
    """Headerless CSV, one record per line, each line parsed on its own as RFC 4180."""
    _check_not_empty(body)
    allow_long_csv_fields()
    encoding = _decoder(charset)
    columns = list(columns)
    width = len(columns)
    id_index = columns.index(id_column) if id_column in columns else None
    lines = split_records(body)
    _check_count(len(lines))
    batch = Batch(columns=columns, kind="line")
    for position, raw in enumerate(lines):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        fields: list[str] | None = None
        problem = None
        try:
            text = raw.decode(encoding if position == 0 else encoding.replace("-sig", ""))
        except UnicodeDecodeError as exc:
            text, problem = None, f"the bytes are not valid {encoding.replace('-sig', '')} (byte {exc.start + 1})"
        if text is not None:
            if '"' not in text and "\r" not in text:
                fields = text.split(",")
            else:
                try:
                    fields = next(csv.reader((text,), strict=True), [""])
                except csv.Error as exc:
                    problem = f"malformed CSV ({exc})"
                    if text.count('"') % 2:
                        problem += (": a quoted field cannot span lines, because records are split on newlines. "
                                    "Replace the newlines inside text, or send application/jsonlines")
                    elif "\r" in text:
                        problem = r"a carriage return (\r) inside the record: end records with \n or \r\n"
        if fields is not None and len(fields) != width:
            if fields == [""]:
                problem = f"empty line: expected {width} comma-separated fields ({', '.join(columns)})"
            else:
                problem = (f"expected {width} fields ({', '.join(columns)}), found {len(fields)}. Records have the "
                           f"training columns without {LABEL_COLUMN!r}, in the same order, and no header line")
                names = {f.strip() for f in fields}
                if LABEL_COLUMN in names and len(names & set(columns)) >= len(columns) / 2:
                    problem += "; this line looks like a header: send records only"
        elif fields is not None and position == 0 and [f.strip() for f in fields] == columns:
            problem = "this line is the header: send records only, without a header line"
        batch.ids.append(fields[id_index] if fields is not None and id_index is not None and id_index < len(fields)
                         else "")
        batch.rows.append(fields if fields is not None and len(fields) == width else None)
        if problem:
            batch.fail(position, problem)
    return batch


def _field_value(value: Any) -> tuple[str, str | None]:
    """A JSON value → (the text the model sees, a problem or None)."""
    if value is None:
        return "", None
    if isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        return ("" if math.isnan(value) else repr(value)), None
    return "", f"expected a string, a number or null, found a JSON {type(value).__name__.replace('dict', 'object')}"


def _record_from_object(batch: Batch, position: int, obj: Any, columns: list[str], id_column: str | None) -> None:
    if not isinstance(obj, dict):
        batch.add_unreadable(position, f"expected a JSON object keyed by column name, found {_json_kind(obj)}")
        return
    unknown = [k for k in obj if k not in columns and k != LABEL_COLUMN]
    row = []
    for column in columns:
        text, problem = _field_value(obj.get(column))
        if problem:
            batch.fail(position, problem, column)
        row.append(text)
    batch.rows.append(row)
    batch.ids.append(_echoed_id(obj.get(id_column)) if id_column else "")
    if unknown:
        batch.fail(position, f"unknown column(s) {', '.join(map(repr, unknown[:5]))}; the model's columns are "
                             f"{', '.join(columns)}")


def _echoed_id(value: Any) -> Any:
    """The ID as the response echoes it: scalars as sent; anything else (a list, an object) as "", because
    echoing a structure back could be as deep as the request (the record is reported bad anyway)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "" if math.isnan(value) else repr(value)
    return value if value is None or isinstance(value, (str, int, float, bool)) else ""


def _json_int(digits: str) -> int | str:
    # Python refuses int() of more than 4,300 digits (a ValueError that json.loads would raise for the whole
    # body): such a literal stays text, and the column's own rules judge it (it is no finite number).
    try:
        return int(digits)
    except ValueError:
        return digits


def _loads(text: str) -> Any:
    """json.loads, except that over-long integers cannot fail it (see _json_int); RecursionError propagates."""
    return json.loads(text, parse_int=_json_int)


TOO_DEEP = "JSON nested too deeply to read: a record is a flat object of column name → string, number or null"
# Strings (skipped whole, escapes included) and the JSON punctuation that matters to find a list's elements.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')


def _top_level_elements(text: str) -> list[str] | None:
    """The source text of each element of a top-level JSON list, without parsing them (so that one element
    nested too deeply for the parser can be reported alone); None when ``text`` is not a list."""
    stripped = text.strip()
    if not stripped.startswith("["):
        return None
    elements, depth, start = [], 0, None
    for match in _JSON_TOKEN.finditer(stripped):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth == 1:
                start = match.end()
        elif token in "]}":
            depth -= 1
            if depth == 0:
                elements.append(stripped[start:match.start()])
                if stripped[match.end():].strip():
                    return None  # text after the list
                return [] if elements == [""] else elements
        elif token == "," and depth == 1:
            elements.append(stripped[start:match.start()])
            start = match.end()
    return None


def _json_kind(obj: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(obj), "a number" if isinstance(obj, (int, float)) else type(obj).__name__)


def parse_jsonlines(body: bytes, columns: Sequence[str], *, id_column: str | None,
                    charset: str | None = None) -> Batch:
    """One JSON object per line (split on b'\\n' only)."""
    _check_not_empty(body)
    encoding = _decoder(charset)
    columns = list(columns)
    lines = split_records(body)
    _check_count(len(lines))
    batch = Batch(columns=columns, kind="line")
    for position, raw in enumerate(lines):
        try:
            text = raw.decode(encoding if position == 0 else encoding.replace("-sig", ""))
            obj = _loads(text) if text.strip() else _EMPTY
        except UnicodeDecodeError as exc:
            obj, problem = _EMPTY, f"the bytes are not valid {encoding.replace('-sig', '')} (byte {exc.start + 1})"
        except json.JSONDecodeError as exc:
            obj, problem = _EMPTY, f"not valid JSON ({exc.msg} at character {exc.pos + 1})"
        except RecursionError:
            obj, problem = _EMPTY, TOO_DEEP
        else:
            problem = "empty line: expected one JSON object" if obj is _EMPTY else None
        if obj is _EMPTY:
            batch.add_unreadable(position, problem)
        else:
            _record_from_object(batch, position, obj, columns, id_column)
    return batch


_EMPTY = object()


def parse_json(body: bytes, columns: Sequence[str], *, id_column: str | None, charset: str | None = None) -> Batch:
    """A JSON list of objects (or a single object); records are named 'record N'."""
    _check_not_empty(body)
    try:
        text = body.decode(_decoder(charset))
        data = _loads(text)
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the body is not valid text in its charset (byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                           "application/json takes a list of objects keyed by column name") from None
    except RecursionError:
        data = _parse_elements_one_by_one(text)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise PayloadError(f"application/json takes a list of objects keyed by column name, found {_json_kind(data)}")
    if not data:
        raise PayloadError("empty list: send at least one record")
    _check_count(len(data))
    columns = list(columns)
    batch = Batch(columns=columns, kind="record")
    for position, obj in enumerate(data):
        if obj is _TOO_DEEP:
            batch.add_unreadable(position, TOO_DEEP)
        else:
            _record_from_object(batch, position, obj, columns, id_column)
    return batch


_TOO_DEEP = object()


def _parse_elements_one_by_one(text: str) -> list[Any]:
    """A list whose whole parse hit the recursion limit: each element parsed alone, too-deep ones marked."""
    elements = _top_level_elements(text)
    if elements is None:
        raise PayloadError(TOO_DEEP)
    parsed: list[Any] = []
    for element in elements:
        try:
            parsed.append(_loads(element))
        except RecursionError:
            parsed.append(_TOO_DEEP)
        except json.JSONDecodeError as exc:
            raise PayloadError(f"the body is not valid JSON ({exc.msg}); application/json takes a list of objects "
                               "keyed by column name") from None
    return parsed


PARSERS = {CSV: parse_csv, JSONLINES: parse_jsonlines, JSON: parse_json}


def parse(body: bytes, content_type: str, columns: Sequence[str], *, id_column: str | None,
          charset: str | None = None) -> Batch:
    return PARSERS[content_type](body, columns, id_column=id_column, charset=charset)


# ---------------------------------------------------------------------------------------------- validation

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


def check_image_quickly(value: str, max_pixels: int) -> str | None:
    """Cheap checks (base64, the header Pillow reads, the pixel limit) without decoding the pixels."""
    import warnings

    from PIL import Image

    from multimodal.core.imagerefs import decode_base64
    try:
        payload = decode_base64(value)
    except ValueError as exc:
        return str(exc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(payload)) as image:
                width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "the image is too large to decode safely; downscale it"
    except Exception as exc:  # Pillow raises many types for bytes that are not an image
        return (f"the bytes are not an image Pillow can read ({' '.join(str(exc).split())[:120]}); send the base64 "
                "of a JPEG, PNG, GIF, WebP or BMP file")
    if width * height > max_pixels:
        return f"the image is {width}×{height} pixels, over the limit of {max_pixels:,}; downscale it"
    return None


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


# ---------------------------------------------------------------------------------------------- responses

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


@dataclass
class Outcome:
    """Per record: the predicted label and its probabilities, or an error."""

    ids: list[Any]
    labels: list[Any]
    probabilities: list[list[float] | None]
    errors: dict[int, RecordError]


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


# ---------------------------------------------------------------------------------------------- regression

def format_number(value: float) -> str:
    """The text of a prediction: ``repr`` of the float64, the shortest text that reads back as the same value
    (what ``json.dumps`` writes too, so CSV and JSON agree). ``float()`` first: numpy 2's repr is
    ``np.float64(…)``."""
    return repr(float(value))


@dataclass
class Predictions:
    """Per record: the predicted number (regression), or an error. Values are finite: the server turns a
    non-finite prediction into an error first (JSON cannot hold NaN or infinity)."""

    ids: list[Any]
    values: list[float | None]
    errors: dict[int, RecordError]


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
