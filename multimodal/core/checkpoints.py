"""Finished work of a fit kept in a directory, so that the same fit started again resumes where it stopped
instead of from nothing (a training job on spot capacity is stopped and started again; SageMaker copies its
checkpoint directory back before the restart).

What is kept, each piece as soon as it is finished: the training rows as read and embedded (only when the caller
names the data by a fingerprint: embedding is the part worth keeping, and it happens as the rows are read, before
they could be hashed), each fitted expert (its deployment predictor, out-of-fold outputs and leaderboard) and the
fusion. Each piece is an *entry*: a directory written under a temporary name, its ``manifest.json`` last (the
SHA-256 and size of every file and the key the piece was made for), then renamed into place. A piece is reused
only when its manifest's key is the one this fit would make it with (a digest of the data, every
hyperparameter, the expert's input frame and target, and this code's version) and every file matches the
manifest; anything else is logged and ignored (and replaced when that piece is made again), never mixed in.

The time a fit spends counts across its restarts: ``progress.json`` holds the budget seconds spent so far,
written with every piece and when the fit is interrupted by an exception (SIGTERM reaches the fit as one); after a
SIGKILL the time since the last piece is not counted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FORMAT = 1
SUBDIRECTORY = "multimodal-checkpoint"  # inside the directory given: other files there are left alone
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
PARTIAL = ".partial-"  # an entry being written (or left half-written by a stop): removed on open


def digest(*parts: Any) -> str:
    """SHA-256 of ``parts`` as canonical JSON (what a key is made of)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def code_version() -> dict[str, Any]:
    """What makes a piece of work from this code comparable to one from another: the model format, this package's
    version and AutoGluon's."""
    from multimodal._version import __version__

    from . import artifact
    try:
        from autogluon.tabular import __version__ as autogluon
    except ImportError:  # pragma: no cover - AutoGluon is a dependency
        autogluon = None
    return {"format": FORMAT, "model_format": artifact.FORMAT_VERSION, "multimodal": __version__,
            "autogluon": autogluon}


def array_digest(*arrays: np.ndarray | None) -> str:
    """SHA-256 of the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for array in arrays:
        if array is None:
            h.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(array.data)
    return h.hexdigest()


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's column names, types and values (numeric columns by their bytes, others by pandas'
    row hashes)."""
    h = hashlib.sha256()
    for name in frame.columns:
        column = frame[name]
        h.update(f"{name}\0{column.dtype}\0".encode())
        if pd.api.types.is_numeric_dtype(column.dtype) and not isinstance(column.dtype, pd.CategoricalDtype):
            h.update(np.ascontiguousarray(column.to_numpy()).data)
        else:
            h.update(pd.util.hash_pandas_object(column, index=False).to_numpy().data)
    h.update(str(len(frame)).encode())
    return h.hexdigest()


def listing_digest(directory: Path) -> str:
    """SHA-256 of the relative paths and sizes of every file under ``directory`` (not their bytes: an images
    directory can hold many gigabytes)."""
    entries = sorted((str(p.relative_to(directory)), p.stat().st_size) for p in directory.rglob("*") if p.is_file())
    return digest(entries)


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Checkpoints:
    """Entries of finished work under ``directory``/multimodal-checkpoint (see the module's docstring).

    ``data``: a fingerprint of the training (and validation) data the caller computed, e.g. a digest of the input
    files; without one the rows are not kept and the time spent is not carried over (nothing says a restart reads
    the same data), but experts and fusion are, keyed by what they were fitted on.
    """

    def __init__(self, directory: str | Path, *, data: str | None = None) -> None:
        self.directory = Path(directory)
        self.root = self.directory / SUBDIRECTORY
        self.data = data
        self.run: str | None = None
        self.resumed: list[str] = []  # the pieces reused by this fit
        self.saved: list[str] = []  # the pieces this fit wrote

    def __repr__(self) -> str:
        return f"Checkpoints({str(self.directory)!r}, data={self.data!r})"

    def open(self, run: dict[str, Any]) -> float:
        """Prepare the directory for a fit described by ``run`` (its hyperparameters); returns the budget seconds
        earlier attempts of the same fit spent (0 for a new one). Half-written entries are removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in [*self.root.glob(f"{PARTIAL}*"), *self.root.glob(".*.tmp")]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            log.info("checkpoint: removed %s, left half-written by an earlier attempt", stale.name)
        self.run = digest(code_version(), self.data, run) if self.data is not None else None
        progress = self._read_progress()
        entries = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if progress is None:
            self._write_progress(0.0, attempts=1)
            log.info("checkpoint directory %s: %s", self.directory,
                     f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} from another fit or attempt "
                     f"({', '.join(entries)}): each is checked before use" if entries else "empty: a new fit")
            return 0.0
        spent = float(progress["spent_seconds"])
        log.info("checkpoint directory %s: resuming attempt %d of this fit, %.0f s of the time budget already "
                 "spent; entries: %s", self.directory, int(progress["attempts"]) + 1, spent,
                 ", ".join(entries) or "none")
        self._write_progress(spent, attempts=int(progress["attempts"]) + 1)
        return spent

    def record_spent(self, seconds: float) -> None:
        """The budget seconds this fit has spent, counting earlier attempts (carried to the next attempt)."""
        progress = self._read_progress()
        self._write_progress(seconds, attempts=int(progress["attempts"]) if progress else 1)

    def _read_progress(self) -> dict | None:
        if self.run is None:
            return None
        try:
            progress = json.loads((self.root / PROGRESS).read_text())
            if progress.get("run") != self.run:
                if progress.get("run"):
                    log.info("checkpoint: %s belongs to another fit (other data or hyperparameters): this fit's "
                             "time starts at 0", PROGRESS)
                return None
            float(progress["spent_seconds"]), int(progress["attempts"])
            return progress
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            log.warning("checkpoint: %s is unreadable (%s): ignored", PROGRESS, exc)
            return None

    def _write_progress(self, seconds: float, attempts: int) -> None:
        if self.run is None:
            return
        try:
            _write_atomically(self.root / PROGRESS, json.dumps(
                {"run": self.run, "spent_seconds": round(seconds, 2), "attempts": attempts}).encode())
        except OSError as exc:
            log.warning("checkpoint: %s not written (%s): a restart will not count this attempt's time", PROGRESS, exc)

    # ------------------------------------------------------------------------------------------ entries

    def find(self, name: str, key: str) -> Path | None:
        """The directory of entry ``name`` if it was made for ``key`` and is whole; else None (logged)."""
        entry = self.root / name
        if not entry.is_dir():
            return None
        problem = _check_entry(entry, key)
        if problem:
            log.warning("checkpoint %s ignored: %s; it will be made again", name, problem)
            return None
        self.resumed.append(name)
        return entry

    def save(self, name: str, key: str, write: Callable[[Path], None], **details: Any) -> None:
        """Write entry ``name`` for ``key``: ``write(directory)`` fills it, then the manifest is written and the
        entry renamed into place (replacing an older one). A failure to write is logged, never fatal: the fit
        goes on without this checkpoint."""
        partial = self.root / f"{PARTIAL}{name}-{uuid.uuid4().hex[:8]}"
        try:
            partial.mkdir(parents=True)
            write(partial)
            files = {str(p.relative_to(partial)): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
                     for p in sorted(partial.rglob("*")) if p.is_file()}
            manifest = {"format": FORMAT, "name": name, "key": key, "files": files, **details}
            _write_atomically(partial / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
            target = self.root / name
            if target.exists():
                old = self.root / f"{PARTIAL}{name}-old-{uuid.uuid4().hex[:8]}"
                target.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            partial.rename(target)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            log.warning("checkpoint %s not written (%s): the fit goes on without it", name, exc)
            return
        self.saved.append(name)
        size = sum(f["bytes"] for f in files.values())
        log.info("checkpoint %s saved (%.1f MB)", name, size / 1e6)

    # ------------------------------------------------------------------------------------------ pickled pieces

    def save_object(self, name: str, key: str, value: Any, **details: Any) -> None:
        self.save(name, key, lambda directory: write_pickle(directory / "object.pkl", value), **details)

    def load_object(self, name: str, key: str) -> Any | None:
        """The value saved by ``save_object`` for ``key``, or None (see ``load``)."""
        return self.load(name, key, lambda entry: read_pickle(entry / "object.pkl"))

    def load(self, name: str, key: str, read: Callable[[Path], Any]) -> Any | None:
        """``read(entry)`` of entry ``name`` made for ``key``; None when there is none, it is not whole, or it does
        not load (logged: it will be made again). ``read`` runs only after every file's SHA-256 matched the
        manifest, whose key this fit computed: nothing is unpickled before."""
        entry = self.find(name, key)
        if entry is None:
            return None
        try:
            return read(entry)
        except Exception as exc:  # noqa: BLE001 - e.g. pickled by other library versions: make it again
            self.resumed.remove(name)
            log.warning("checkpoint %s ignored: it does not load (%s: %s); it will be made again", name,
                        type(exc).__name__, exc)
            return None


def write_pickle(path: Path, value: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def _check_entry(entry: Path, key: str) -> str | None:
    """What makes ``entry`` unusable for ``key`` (None: it is whole and was made for ``key``)."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        return "it has no manifest (written incompletely)"
    except (ValueError, OSError) as exc:
        return f"its manifest is unreadable ({exc})"
    readable = isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
    if not readable or manifest.get("format") != FORMAT:
        return "its manifest is not one this version writes"
    if manifest.get("key") != key:
        return "it was made for other data, hyperparameters or code"
    for relative, expected in manifest["files"].items():
        path = entry / relative
        try:
            if path.stat().st_size != expected["bytes"] or file_digest(path) != expected["sha256"]:
                return f"{relative} differs from what was written (damaged or copied incompletely)"
        except FileNotFoundError:
            return f"{relative} is missing (copied incompletely)"
        except (OSError, KeyError, TypeError) as exc:
            return f"{relative} cannot be checked ({exc})"
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
