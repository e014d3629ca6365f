"""SageMaker input channels: find a channel's CSV files (or its Pipe-mode FIFO) and read them as text.

File / FastFile mode: every ``*.csv`` and ``*.csv.gz`` file under ``<data_dir>/<channel>/`` (subdirectories
included, sorted by path) is read; other files are skipped with a warning. Every file must have the same header.
Pipe mode: the FIFO ``<data_dir>/<channel>_0`` is read once, as a stream (SageMaker concatenates the channel's
files into it, so header rows repeated inside the stream are dropped).
Gzip is recognised by its magic bytes, whatever the file name or CompressionType says.

The CSV dialect is RFC 4180: comma-separated, fields with commas, double quotes or line breaks enclosed in
double quotes, inner quotes doubled. Every value is read as text; an empty field is a missing value
(``dtype=str``, ``keep_default_na=False`` semantics: ``NA`` or ``null`` in a _text column stay words). Parsing
uses the ``csv`` module throughout, so duplicate column names, records with the wrong number of fields and
broken quoting are reported with their file and line instead of being silently repaired.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pandas as pd

from multimodal.core.errors import DataError
from multimodal.sagemaker.contract import CSV, allow_long_csv_fields

log = logging.getLogger(__name__)

INPUT_MODES = ("File", "FastFile", "Pipe")
CSV_SUFFIXES = (".csv", ".csv.gz")
GZIP_MAGIC = b"\x1f\x8b"
QUOTING_HINT = ("a field that contains commas, double quotes or line breaks must be enclosed in double quotes, "
                "with each inner double quote doubled (RFC 4180)")


@dataclass(frozen=True)
class ChannelConfig:
    """One entry of inputdataconfig.json (all keys optional outside SageMaker)."""

    name: str
    input_mode: str = "File"
    content_type: str | None = None
    compression: str | None = None
    record_wrapper: str | None = None
    distribution: str | None = None

    @classmethod
    def from_json(cls, name: str, entry: dict) -> "ChannelConfig":
        if not isinstance(entry, dict):
            raise DataError(f"inputdataconfig.json: the entry of channel {name!r} must be a JSON object, not "
                            f"{type(entry).__name__}")
        mode = entry.get("TrainingInputMode") or "File"
        if mode not in INPUT_MODES:
            raise DataError(f"inputdataconfig.json: channel {name!r} has TrainingInputMode {mode!r}; use one of "
                            f"{', '.join(INPUT_MODES)}")
        return cls(name=name, input_mode=mode, content_type=entry.get("ContentType"),
                   compression=entry.get("CompressionType"), record_wrapper=entry.get("RecordWrapperType"),
                   distribution=entry.get("S3DistributionType"))


@dataclass
class ChannelData:
    """A channel read into one DataFrame of strings, with where it came from."""

    name: str
    frame: pd.DataFrame
    header: list[str]
    sources: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return len(self.frame)


def load_input_data_config(path: Path) -> dict[str, ChannelConfig] | None:
    """inputdataconfig.json as {channel: ChannelConfig}; None when the file is absent (local runs)."""
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name} is not valid JSON ({exc}): it must be an object mapping each channel name "
                        'to its settings, e.g. {"train": {"TrainingInputMode": "File"}}') from None
    if not isinstance(document, dict):
        raise DataError(f"{path.name} must be a JSON object mapping channel names to their settings, not "
                        f"{type(document).__name__}")
    return {name: ChannelConfig.from_json(name, entry) for name, entry in document.items()}


def discover_channels(data_dir: Path) -> dict[str, ChannelConfig]:
    """Without inputdataconfig.json: a directory is a File-mode channel, a FIFO ``<name>_0`` a Pipe-mode one."""
    found: dict[str, ChannelConfig] = {}
    if not data_dir.is_dir():
        return found
    for entry in sorted(data_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found[entry.name] = ChannelConfig(entry.name, "File")
        elif entry.name.endswith("_0") and _is_fifo(entry):
            found.setdefault(entry.name[:-2], ChannelConfig(entry.name[:-2], "Pipe"))
    return found


def read_channel(config: ChannelConfig, data_dir: Path, *,
                 check_header: Callable[[list[str], str], None] | None = None) -> ChannelData:
    """Read a whole channel. ``check_header(header, source)`` may raise DataError before any data row is read."""
    started = time.monotonic()
    if config.record_wrapper and config.record_wrapper != "None":
        raise DataError(f"channel {config.name!r}: RecordWrapperType {config.record_wrapper!r} is not supported; "
                        "this algorithm reads plain CSV: set RecordWrapperType to None")
    if config.content_type and not config.content_type.lower().startswith((CSV, "application/x-gzip",
                                                                          "application/gzip")):
        log.warning("channel %s: ContentType %r; the data is read as CSV (text/csv) anyway", config.name,
                    config.content_type)
    allow_long_csv_fields()
    if config.input_mode == "Pipe":
        fifo = data_dir / f"{config.name}_0"
        if not fifo.exists():
            raise DataError(f"channel {config.name!r} is in Pipe mode but {fifo} does not exist; SageMaker creates "
                            "it for Pipe-mode channels. Locally, create the FIFO (mkfifo) or use File mode")
        log.info("channel %s: reading Pipe-mode stream %s", config.name, fifo)
        with open(fifo, "rb") as raw:
            counting = _CountingReader(raw)
            header, rows = _read_csv_stream(counting, f"channel {config.name!r} (Pipe-mode stream {fifo.name})",
                                            check_header)
        data = _frame(header, rows)
        result = ChannelData(config.name, data, header, [fifo.name], counting.count)
    else:
        result = _read_files(config, data_dir / config.name, check_header)
    result.seconds = time.monotonic() - started
    log.info("channel %s: %d row(s), %d column(s) from %d source(s) (%.1f MB) in %.1f s", config.name, result.rows,
             len(result.header), len(result.sources), result.bytes_read / 1e6, result.seconds)
    return result


def _read_files(config: ChannelConfig, directory: Path,
                check_header: Callable[[list[str], str], None] | None) -> ChannelData:
    if not directory.is_dir():
        raise DataError(f"channel {config.name!r}: directory {directory} does not exist. Give the training job a "
                        f"{config.name!r} channel whose S3 prefix holds .csv or .csv.gz files")
    files, skipped = [], []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() or _is_fifo(p)):
        relative = path.relative_to(directory).as_posix()
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        (files if path.name.lower().endswith(CSV_SUFFIXES) else skipped).append((relative, path))
    if skipped:
        log.warning("channel %s: skipped %d file(s) that are not .csv or .csv.gz: %s", config.name, len(skipped),
                    ", ".join(r for r, _ in skipped[:10]) + (" …" if len(skipped) > 10 else ""))
    if not files:
        raise DataError(f"channel {config.name!r}: no .csv or .csv.gz file in {directory}"
                        + (f" (found only {', '.join(r for r, _ in skipped[:5])})" if skipped else "")
                        + ". Put the data as CSV files with a header row under the channel's S3 prefix")
    header: list[str] | None = None
    first = ""
    frames, total = [], 0
    for relative, path in files:
        source = f"channel {config.name!r}, file {relative!r}"
        with open(path, "rb") as raw:
            counting = _CountingReader(raw)

            def same_header(found: list[str], where: str) -> None:
                if header is None:
                    if check_header is not None:
                        check_header(found, where)
                elif found != header:
                    raise DataError(_header_mismatch(config.name, first, header, relative, found))

            file_header, rows = _read_csv_stream(counting, source, same_header)
        if header is None:
            header, first = file_header, relative
        log.info("channel %s: %s: %d row(s)", config.name, relative, len(rows))
        frames.append(_frame(header, rows))
        total += counting.count
    data = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return ChannelData(config.name, data, header, [r for r, _ in files], total)


def _header_mismatch(channel: str, first: str, header: list[str], other: str, found: list[str]) -> str:
    missing = [c for c in header if c not in found]
    extra = [c for c in found if c not in header]
    if missing or extra:
        detail = "; ".join(part for part in (
            f"{other!r} lacks {', '.join(map(repr, missing))}" if missing else "",
            f"{other!r} has extra {', '.join(map(repr, extra))}" if extra else "") if part)
    else:
        position = next(i for i, (a, b) in enumerate(zip(header, found)) if a != b)
        detail = f"same columns in a different order (column {position + 1} is {header[position]!r} in " \
                 f"{first!r} but {found[position]!r} in {other!r})"
    return (f"channel {channel!r}: files {first!r} and {other!r} have different headers: {detail}. Every file of "
            "a channel must have the same header, with the columns in the same order")


def _frame(header: list[str], rows: list[list[str]]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in header})
    return pd.DataFrame(rows, columns=header, dtype=object)


def _read_csv_stream(raw: BinaryIO, source: str,
                     check_header: Callable[[list[str], str], None] | None) -> tuple[list[str], list[list[str]]]:
    """Header and data records of one CSV byte stream (gzip or not)."""
    binary: BinaryIO = raw if hasattr(raw, "peek") else io.BufferedReader(raw, 1 << 20)  # type: ignore[arg-type]
    compressed = binary.peek(2)[:2] == GZIP_MAGIC  # type: ignore[attr-defined]
    if compressed:
        binary = gzip.GzipFile(fileobj=binary, mode="rb")  # type: ignore[assignment]
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    rows: list[list[str]] = []
    try:
        header = _first_record(reader)
        if header is None:
            raise DataError(f"{source} is empty: a CSV file needs a header row naming the columns (ID, label and "
                            "columns ending in _text, _num, _cat or _image), then one row per example")
        duplicates = sorted({c for c in header if header.count(c) > 1})
        if duplicates:
            raise DataError(f"{source}: the header names {', '.join(map(repr, duplicates))} more than once; every "
                            "column needs a distinct name: rename or drop the duplicates")
        if check_header is not None:
            check_header(header, source)
        width, repeated = len(header), 0
        for record in reader:
            if not record:
                continue  # blank line
            if len(record) != width:
                if len(record) == 1 and record[0].strip() == "":
                    continue  # a line holding only spaces
                raise DataError(
                    f"{source}, line {reader.line_num}: {len(record)} field(s) where the header has {width}. "
                    f"Check that record's quoting: {QUOTING_HINT}", row=len(rows) + 1)
            if record == header:
                repeated += 1  # the header of the next file in a concatenated (Pipe-mode) stream
                continue
            rows.append(record)
    except csv.Error as exc:
        raise DataError(f"{source}, line {reader.line_num}: malformed CSV ({exc}). {QUOTING_HINT[0].upper()}"
                        f"{QUOTING_HINT[1:]}", row=len(rows) + 1) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}, near line {reader.line_num + 1}: the bytes are not UTF-8 text ({exc.reason}). "
                        "Save the file as UTF-8") from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        if not compressed:
            raise
        raise DataError(f"{source}: the gzip data is corrupt or truncated ({exc}); re-compress the file with "
                        "gzip, or upload it uncompressed") from None
    if repeated:
        log.info("%s: dropped %d repeated header row(s)", source, repeated)
    return header, rows


def _first_record(reader: Iterator[list[str]]) -> list[str] | None:
    for record in reader:
        if record and not (len(record) == 1 and record[0].strip() == ""):
            return record
    return None


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


class _CountingReader(io.RawIOBase):
    """A raw byte stream that counts what passes through (FIFOs have no size to stat)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n
