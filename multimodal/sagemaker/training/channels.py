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
import itertools
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
from multimodal.core.ingest import BATCH_ROWS
from multimodal.core.schema import Schema
from multimodal.sagemaker.contract import CSV, ConfigError, allow_long_csv_fields
from multimodal.sagemaker.opt_ml import Paths

log = logging.getLogger(__name__)

INPUT_MODES = ("File", "FastFile", "Pipe")
SHARDED = "ShardedByS3Key"  # the S3DistributionType that gives each host its own share of the files
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
            raise ConfigError(f"inputdataconfig.json: the entry of channel {name!r} must be a JSON object, not "
                            f"{type(entry).__name__}")
        mode = entry.get("TrainingInputMode") or "File"
        if mode not in INPUT_MODES:
            raise ConfigError(f"inputdataconfig.json: channel {name!r} has TrainingInputMode {mode!r}; use one of "
                            f"{', '.join(INPUT_MODES)}")
        return cls(name=name, input_mode=mode, content_type=entry.get("ContentType"),
                   compression=entry.get("CompressionType"), record_wrapper=entry.get("RecordWrapperType"),
                   distribution=entry.get("S3DistributionType"))


def load_input_data_config(path: Path) -> dict[str, ChannelConfig] | None:
    """inputdataconfig.json as {channel: ChannelConfig}; None when the file is absent (local runs)."""
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name} is not valid JSON ({exc}): it must be an object mapping each channel name "
                        'to its settings, e.g. {"train": {"TrainingInputMode": "File"}}') from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path.name} must be a JSON object mapping channel names to their settings, not "
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


@dataclass
class ReadStats:
    """What a reader has read so far."""

    rows: int = 0
    bytes_read: int = 0
    sources: list[str] = field(default_factory=list)
    seconds: float = 0.0


class ChannelReader:
    """A channel as a stream of record batches (DataFrames of strings, at most ``batch_rows`` rows each, indexed by
    row number in the channel), read when called. Picklable: on a Ray cluster each machine calls it and reads its
    own copy of the channel (``data_dir`` None = ``<ml root>/input/data`` of the process that reads). ``training``:
    the first header is checked as a training header (modality suffixes, ``label``) before any data row is read.
    ``stats`` is filled in while reading, in the process that reads."""

    def __init__(self, config: ChannelConfig, data_dir: Path | None = None, *, training: bool = False,
                 batch_rows: int = BATCH_ROWS) -> None:
        self.config = config
        self.data_dir = data_dir
        self.training = training
        self.batch_rows = batch_rows
        self.stats = ReadStats()

    def __call__(self) -> Iterator[pd.DataFrame]:
        config = self.config
        data_dir = self.data_dir if self.data_dir is not None else Paths.from_env().data_dir
        if config.record_wrapper and config.record_wrapper != "None":
            raise DataError(f"channel {config.name!r}: RecordWrapperType {config.record_wrapper!r} is not "
                            "supported; this algorithm reads plain CSV: set RecordWrapperType to None")
        if config.content_type and not config.content_type.lower().startswith((CSV, "application/x-gzip",
                                                                              "application/gzip")):
            log.warning("channel %s: ContentType %r; the data is read as CSV (text/csv) anyway", config.name,
                        config.content_type)
        allow_long_csv_fields()
        self.stats = ReadStats()
        started = time.monotonic()
        check = _check_training_header if self.training else None
        if config.input_mode == "Pipe":
            yield from self._pipe(data_dir, check)
        else:
            yield from self._files(data_dir / config.name, check)
        self.stats.seconds = time.monotonic() - started
        log.info("channel %s: %d row(s) from %d source(s) (%.1f MB) in %.1f s", config.name, self.stats.rows,
                 len(self.stats.sources), self.stats.bytes_read / 1e6, self.stats.seconds)

    def _pipe(self, data_dir: Path, check: Callable[[list[str], str], None] | None) -> Iterator[pd.DataFrame]:
        fifo = data_dir / f"{self.config.name}_0"
        if not fifo.exists():
            raise DataError(f"channel {self.config.name!r} is in Pipe mode but {fifo} does not exist; SageMaker "
                            "creates it for Pipe-mode channels. Locally, create the FIFO (mkfifo) or use File mode")
        log.info("channel %s: reading Pipe-mode stream %s", self.config.name, fifo)
        self.stats.sources.append(fifo.name)
        with open(fifo, "rb") as raw:
            counting = _CountingReader(raw)
            records = _csv_records(counting, f"channel {self.config.name!r} (Pipe-mode stream {fifo.name})", check)
            yield from self._batches(next(records), records, counting, counting.count)

    def _files(self, directory: Path, check: Callable[[list[str], str], None] | None) -> Iterator[pd.DataFrame]:
        name = self.config.name
        files = list_csv_files(name, directory)
        header: list[str] | None = None
        first = ""
        for relative, path in files:
            def same_header(found: list[str], where: str) -> None:
                if header is None:
                    if check is not None:
                        check(found, where)
                elif found != header:
                    raise DataError(_header_mismatch(name, first, header, relative, found))

            with open(path, "rb") as raw:
                counting = _CountingReader(raw)
                records = _csv_records(counting, f"channel {name!r}, file {relative!r}", same_header)
                file_header = next(records)
                if header is None:
                    header, first = file_header, relative
                self.stats.sources.append(relative)
                before = self.stats.rows
                yield from self._batches(header, records, counting, self.stats.bytes_read)
                log.info("channel %s: %s: %d row(s)", name, relative, self.stats.rows - before)

    def _batches(self, header: list[str], records: Iterator[list[str]], counting: "_CountingReader",
                 bytes_before: int) -> Iterator[pd.DataFrame]:
        """``records`` as DataFrames of ``batch_rows`` rows (one empty one, the header, if there are none)."""
        emitted = False
        while True:
            rows = list(itertools.islice(records, self.batch_rows))
            self.stats.bytes_read = bytes_before + counting.count
            if not rows and emitted:
                return
            first = self.stats.rows
            self.stats.rows += len(rows)
            emitted = True
            yield _frame(header, rows, first)
            if not rows:
                return


def list_csv_files(name: str, directory: Path) -> list[tuple[str, Path]]:
    """The channel's .csv / .csv.gz files under ``directory`` (relative name, path), sorted; others skipped."""
    if not directory.is_dir():
        raise DataError(f"channel {name!r}: directory {directory} does not exist. Give the training job a "
                        f"{name!r} channel whose S3 prefix holds .csv or .csv.gz files (with ShardedByS3Key, at "
                        "least one file per instance)")
    files, skipped = [], []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() or _is_fifo(p)):
        relative = path.relative_to(directory).as_posix()
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        (files if path.name.lower().endswith(CSV_SUFFIXES) else skipped).append((relative, path))
    if skipped:
        log.warning("channel %s: skipped %d file(s) that are not .csv or .csv.gz: %s", name, len(skipped),
                    ", ".join(r for r, _ in skipped[:10]) + (" …" if len(skipped) > 10 else ""))
    if not files:
        raise DataError(f"channel {name!r}: no .csv or .csv.gz file in {directory}"
                        + (f" (found only {', '.join(r for r, _ in skipped[:5])})" if skipped else "")
                        + ". Put the data as CSV files with a header row under the channel's S3 prefix (with "
                          "ShardedByS3Key, at least one file per instance)")
    return files


def _check_training_header(header: list[str], source: str) -> None:
    Schema.from_header(header, source=source)


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


def _frame(header: list[str], rows: list[list[str]], first_row: int = 0) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in header})
    return pd.DataFrame(rows, columns=header, dtype=object, index=pd.RangeIndex(first_row, first_row + len(rows)))


def _csv_records(raw: BinaryIO, source: str,
                 check_header: Callable[[list[str], str], None] | None) -> Iterator[list[str]]:
    """The header, then each data record, of one CSV byte stream (gzip or not), checked as they are read."""
    binary: BinaryIO = raw if hasattr(raw, "peek") else io.BufferedReader(raw, 1 << 20)  # type: ignore[arg-type]
    compressed = binary.peek(2)[:2] == GZIP_MAGIC  # type: ignore[attr-defined]
    if compressed:
        binary = gzip.GzipFile(fileobj=binary, mode="rb")  # type: ignore[assignment]
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    count = repeated = 0
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
        yield header
        width = len(header)
        for record in reader:
            if not record:
                continue  # blank line
            if len(record) != width:
                if len(record) == 1 and record[0].strip() == "":
                    continue  # a line holding only spaces
                raise DataError(
                    f"{source}, line {reader.line_num}: {len(record)} field(s) where the header has {width}. "
                    f"Check that record's quoting: {QUOTING_HINT}", row=count + 1)
            if record == header:
                repeated += 1  # the header of the next file in a concatenated (Pipe-mode) stream
                continue
            count += 1
            yield record
    except csv.Error as exc:
        raise DataError(f"{source}, line {reader.line_num}: malformed CSV ({exc}). {QUOTING_HINT[0].upper()}"
                        f"{QUOTING_HINT[1:]}", row=count + 1) from None
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
