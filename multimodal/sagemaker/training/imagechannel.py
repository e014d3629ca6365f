"""The ``images`` channel: a directory of image files that ``_image`` values name by relative path.

Before any embedding starts, every relative path of the CSV channels read from files is checked against one
listing of the channel (no image is opened): with ``bad_images=fail`` a typo fails the job in seconds, naming the
channel, column, row and path, instead of at row 900,000 after hours of embedding. Files no row names are counted
and reported, not an error. A Pipe-mode CSV channel can be read only once, so its paths are checked while
embedding instead. Pipe mode is refused for the images channel itself: it streams the channel's objects one after
another and cannot serve a file by name.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from multimodal.core.errors import DataError
from multimodal.core.imagerefs import PATH, ImageProblem, describe_reference, kind_of, resolve_path
from multimodal.core.schema import ID_COLUMN
from multimodal.sagemaker.opt_ml import IMAGES_CHANNEL, Paths

log = logging.getLogger(__name__)

LISTED = 10  # bad references named in the failure reason (the rest are counted)


@dataclass(frozen=True)
class ImagesDirectory:
    """The images channel's directory in the process that calls it (picklable: on a Ray cluster each host
    resolves its own copy; ``data_dir`` None = ``<ml root>/input/data`` there)."""

    data_dir: Path | None = None

    def __call__(self) -> Path:
        return (self.data_dir if self.data_dir is not None else Paths.from_env().data_dir) / IMAGES_CHANNEL


@dataclass
class ReferenceCheck:
    """What the check found: bad references (channel, row, ID, column, reference, reason), how many paths rows
    name, and the channel's files that no row names."""

    files: int = 0
    referenced: int = 0
    bad: list[dict] = field(default_factory=list)
    unreferenced: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"files": self.files, "paths_referenced": self.referenced, "bad_references": len(self.bad),
                "files_not_referenced": self.unreferenced, "check_seconds": round(self.seconds, 2)}


def listing(directory: Path) -> set[Path]:
    """Every file under ``directory`` (symbolic links resolved), as absolute real paths."""
    found = set()
    for folder, _, names in os.walk(directory, followlinks=False):
        for name in names:
            found.add(Path(folder, name).resolve())
    return found


def check_references(channels: dict[str, Iterable[pd.DataFrame]], directory: Path) -> ReferenceCheck:
    """Check the relative paths of every ``_image`` column of ``channels`` (name → batches of rows, indexed by row
    number from 0) against one listing of ``directory``."""
    started = time.monotonic()
    files = listing(directory)
    root = directory.resolve()
    check = ReferenceCheck(files=len(files))
    seen: set[Path] = set()
    for channel, batches in channels.items():
        for batch in batches:
            for column in [c for c in batch.columns if c.endswith("_image") and len(c) > len("_image")]:
                for row, value in batch[column].items():
                    _check_value(check, seen, files, root, channel, batch, column, row, value)
    check.referenced = len(seen)
    check.unreferenced = len(files - seen)
    check.seconds = time.monotonic() - started
    log.info("images channel: %d file(s); %d distinct path(s) named by the rows, %d bad reference(s), %d file(s) no "
             "row names (checked in %.1f s)", check.files, check.referenced, len(check.bad), check.unreferenced,
             check.seconds)
    return check


def _check_value(check: ReferenceCheck, seen: set[Path], files: set[Path], root: Path, channel: str,
                 batch: pd.DataFrame, column: str, row: int, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        return
    try:
        if kind_of(value) != PATH:
            return
        path = resolve_path(root, value)
        if path not in files:
            raise ImageProblem(f"no such file in the {IMAGES_CHANNEL!r} channel")
        seen.add(path)
    except ImageProblem as problem:
        ids = batch[ID_COLUMN] if ID_COLUMN in batch.columns else None
        check.bad.append({"data": f"channel {channel!r}", "row": int(row) + 1,
                          "ID": None if ids is None else str(ids.loc[row]), "column": column,
                          "reference": describe_reference(value), "reason": str(problem)})


def failure(check: ReferenceCheck) -> DataError:
    """The job's failure for bad references found by the check (``bad_images=fail``)."""
    first = [f"{b['data']}, column {b['column']!r}, row {b['row']}"
             + (f" (ID {b['ID']!r})" if b["ID"] is not None else "") + f": {b['reference']!r}: {b['reason']}"
             for b in check.bad[:LISTED]]
    more = len(check.bad) - len(first)
    return DataError(f"{len(check.bad)} image path(s) name no file of the {IMAGES_CHANNEL!r} channel ("
                     f"{check.files} file(s)); nothing was embedded yet. " + "; ".join(first)
                     + (f"; and {more} more" if more else "")
                     + ". Fix the paths (relative to the channel's S3 prefix), add the files, or set "
                       "bad_images=missing to train with them as missing images",
                     column=check.bad[0]["column"], row=check.bad[0]["row"])
