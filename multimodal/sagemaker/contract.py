"""Facts of SageMaker's container contracts shared by the training job, the server and the local emulation.

One home each (the ``/opt/ml`` root and the variable that moves it are settings: ``environment``): the content
types the server reads and writes (and CreateAlgorithm advertises), how batch transform splits a file into records, the
payload limits, the CSV field size a base64 image needs, and ``ConfigError``.
"""
from __future__ import annotations

import csv

# ---------------------------------------------------------------------------------------------- content types

CSV = "text/csv"
JSONLINES = "application/jsonlines"
JSON = "application/json"
FORMATS = (CSV, JSONLINES, JSON)  # what the server reads and writes, and CreateAlgorithm advertises
IMAGE_CONTENT_TYPE = "application/x-image"  # the images channel's ContentType (files of any image format)
# Request Content-Type / Accept → the format; the other spellings of JSON Lines in use are accepted too.
MEDIA_TYPES = {CSV: CSV, JSONLINES: JSONLINES, "application/x-jsonlines": JSONLINES, "application/jsonl": JSONLINES,
               JSON: JSON}

# ---------------------------------------------------------------------------------------------- batch transform

DEFAULT_MAX_PAYLOAD_MB = 6.0
PAYLOAD_BUDGET_MB = 100  # MaxConcurrentTransforms × MaxPayloadInMB must not exceed it
MULTI_RECORD, SINGLE_RECORD = "MULTI_RECORD", "SINGLE_RECORD"  # /execution-parameters and SAGEMAKER_BATCH_STRATEGY
# The same strategies as CreateTransformJob's BatchStrategy spells them (so do the SDK and the emulator)
API_BATCH_STRATEGIES = {MULTI_RECORD: "MultiRecord", SINGLE_RECORD: "SingleRecord"}


def batch_strategy(raw: str) -> str | None:
    """The container's spelling (``MULTI_RECORD``) of a batch strategy written either way (``MultiRecord``,
    ``multi_record`` …); None when it is neither strategy."""
    return {s.replace("_", ""): s for s in API_BATCH_STRATEGIES}.get(raw.strip().upper().replace("_", ""))
RECORD_SEPARATOR = b"\n"


def split_records(body: bytes) -> list[bytes]:
    """Records of a body or file as SplitType=Line splits them: on b'\\n' only (never on \\r or Unicode line
    separators, as ``str.splitlines`` would); a final newline ends the last record rather than starting one."""
    records = body.split(RECORD_SEPARATOR)
    if records and records[-1] == b"":
        records.pop()
    return records


# ---------------------------------------------------------------------------------------------- CSV

CSV_FIELD_SIZE_LIMIT = 2**31 - 1  # a base64 photo is far longer than the csv module's default (131,072 characters)


def allow_long_csv_fields() -> None:
    """Raise the csv module's per-process field size limit (both the training job and the server read CSV)."""
    csv.field_size_limit(CSV_FIELD_SIZE_LIMIT)


class ConfigError(ValueError):
    """A setting (configuration file or environment variable) that cannot be used, said so that it can be fixed."""
