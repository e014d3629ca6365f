"""Request bodies → records (a ``Batch``), record by record so that one bad record can be named by its line.

* ``text/csv``: no header; each record holds the training columns without ``label``, in order (ID included).
  Records are split on ``\\n`` only (a trailing ``\\r`` is dropped), never with ``str.splitlines`` (which also
  splits on U+2028, U+0085, …): SageMaker splits files on ``\\n``, and the output must have exactly one line
  per input line. Each record is parsed as one RFC 4180 line; an empty field is a missing value.
* ``application/jsonlines``: one JSON object per line, keyed by column name. A key that is absent or null is a
  missing value. Text containing newlines is sent this way.
* ``application/json``: a list of such objects (or one object).
"""
from __future__ import annotations

import codecs
import csv
import json
import math
import re
from typing import Any, Sequence

from multimodal.core.schema import LABEL_COLUMN
from multimodal.sagemaker.contract import (
    CSV,
    JSON,
    JSONLINES,
    RECORD_SEPARATOR,
    allow_long_csv_fields,
    split_records,
)

from .errors import BadRequest, UnsupportedMediaType
from .records import Batch

# A 6 MB payload of real records holds far fewer; this bounds the memory a body of empty lines can take.
MAX_RECORDS = 500_000


class PayloadError(BadRequest):
    """The request body as a whole cannot be read (empty, not JSON)."""


class CharsetError(UnsupportedMediaType):
    """The Content-Type names a charset that cannot be read."""


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


def _check_not_empty(body: bytes) -> None:
    if not body or not body.strip():
        raise PayloadError("empty body: send at least one record")


def _check_count(n: int) -> None:
    if n > MAX_RECORDS:
        raise PayloadError(f"{n:,} records in one request, over the limit of {MAX_RECORDS:,}: send fewer records "
                           "per request (empty lines count as records)")


def parse_csv(body: bytes, columns: Sequence[str], *, id_column: str | None, charset: str | None = None,
              first: int = 0) -> Batch:
    """Headerless CSV, one record per line, each line parsed on its own as RFC 4180. ``first``: the records
    before this slice of the body (``slices``)."""
    if not first:
        _check_not_empty(body)
    allow_long_csv_fields()
    encoding = _decoder(charset)
    columns = list(columns)
    width = len(columns)
    id_index = columns.index(id_column) if id_column in columns else None
    lines = split_records(body)
    _check_count(len(lines))
    batch = Batch(columns=columns, kind="line", first=first)
    for position, raw in enumerate(lines):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        fields: list[str] | None = None
        problem = None
        starts_body = position == 0 and not first
        try:
            text = raw.decode(encoding if starts_body else encoding.replace("-sig", ""))
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
        elif fields is not None and starts_body and [f.strip() for f in fields] == columns:
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
                    charset: str | None = None, first: int = 0) -> Batch:
    """One JSON object per line (split on b'\\n' only); ``first`` as for ``parse_csv``."""
    if not first:
        _check_not_empty(body)
    encoding = _decoder(charset)
    columns = list(columns)
    lines = split_records(body)
    _check_count(len(lines))
    batch = Batch(columns=columns, kind="line", first=first)
    for position, raw in enumerate(lines):
        try:
            text = raw.decode(encoding if position == 0 and not first else encoding.replace("-sig", ""))
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
          charset: str | None = None, first: int = 0) -> Batch:
    if content_type == JSON:  # a JSON document is never sliced
        return parse_json(body, columns, id_column=id_column, charset=charset)
    return PARSERS[content_type](body, columns, id_column=id_column, charset=charset, first=first)


def slices(body: bytes, content_type: str, size: int) -> list[tuple[bytes, int]]:
    """``body`` as slices of whole records of about ``size`` bytes, each with the number of records before it:
    a large body (an async endpoint's) is parsed and predicted slice by slice, so that the memory a request
    takes follows the slice, not the body. A body of at most ``size`` bytes, or a JSON document, is one slice.
    Records are split on b'\\n' exactly as ``split_records`` splits them."""
    if len(body) <= size or content_type == JSON:
        return [(body, 0)]
    pieces, start, records = [], 0, 0
    while start < len(body):
        end = body.rfind(RECORD_SEPARATOR, start, start + size)
        if end == -1:  # one record longer than a slice: it is a slice of its own
            end = body.find(RECORD_SEPARATOR, start + size)
        end = len(body) if end == -1 else end + 1
        piece = body[start:end]
        pieces.append((piece, records))
        records += piece.count(RECORD_SEPARATOR) + (0 if piece.endswith(RECORD_SEPARATOR) else 1)
        start = end
    return pieces
