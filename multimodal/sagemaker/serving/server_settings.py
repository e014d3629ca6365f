"""What one server process is told (``ServerSettings``): each setting's default and check in one place. The
launcher fills it from the environment (``launcher.read_config``), the app reads it; tests build it directly.

Imports nothing heavy: the launcher reads it before gunicorn binds the port.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from multimodal.sagemaker.contract import DEFAULT_MAX_PAYLOAD_MB, MULTI_RECORD, PAYLOAD_BUDGET_MB, ConfigError

MIB = 1024 * 1024
DEFAULT_LOAD_TIMEOUT = 900  # seconds for loading + the trial prediction before the load counts as failed
BAD_RECORDS = ("fail", "emit")


def bad_records_mode(value: str) -> str:
    """``value`` as a bad-record mode (``fail`` or ``emit``, any case); ValueError otherwise."""
    mode = value.strip().lower()
    if mode not in BAD_RECORDS:
        raise ValueError(f"expected {' or '.join(BAD_RECORDS)}, not {value!r}")
    return mode


@dataclass
class ServerSettings:
    workers: int = 1  # reported as MaxConcurrentTransforms
    max_payload_mb: float = DEFAULT_MAX_PAYLOAD_MB  # reported as MaxPayloadInMB; larger bodies get 413
    batch_strategy: str = MULTI_RECORD  # reported as BatchStrategy; every request may carry one record or many
    csv_probabilities: bool = False  # append one probability column per class to CSV output
    bad_records: str = "fail"  # "fail": 400 for the request; "emit": an error record in the bad record's place
    request_timeout: float | None = None  # a prediction running longer calls on_hang (the worker is restarted)
    load_timeout: float | None = DEFAULT_LOAD_TIMEOUT  # loading + trial prediction longer: a failed load
    image_dir: Path | None = None  # where relative _image paths point (MULTIMODAL_IMAGE_DIR); None: refused
    max_body_mb: float | None = None  # MULTIMODAL_MAX_PAYLOAD_MB: bodies up to this, when not max_payload_mb

    def __post_init__(self) -> None:
        try:
            self.bad_records = bad_records_mode(self.bad_records)
        except ValueError as exc:
            raise ValueError(f"bad_records: {exc}") from None

    def check_model(self, model: Any) -> None:
        """Refuse settings the model cannot honour, at load: the server then stops with the reason, rather than
        answering every CSV request without the columns the setting promised."""
        from .kinds import kind_of
        kind_of(model).check_settings(self.csv_probabilities)

    @property
    def body_limit_mb(self) -> float:
        """The largest body taken (MB): ``max_body_mb`` (async endpoints), else the batch payload limit."""
        return self.max_body_mb or self.max_payload_mb

    @property
    def max_payload_bytes(self) -> int:
        return int(self.body_limit_mb * MIB)

    @property
    def max_concurrent_transforms(self) -> int:
        return max(1, min(self.workers, int(PAYLOAD_BUDGET_MB // max(self.max_payload_mb, 1))))


# ---------------------------------------------------------------------------------------------- environment
# How the launcher reads a variable; a value that cannot be used is a ConfigError naming it.

def env_int(environ: Mapping[str, str], names: tuple[str, ...], default: int | None, *, minimum: int = 1) -> int | None:
    for name in names:
        raw = environ.get(name, "").strip()
        if raw:
            try:
                value = int(float(raw)) if float(raw).is_integer() else None
            except ValueError:
                value = None
            if value is None or value < minimum:
                raise ConfigError(f"{name}={raw!r}: expected an integer ≥ {minimum}")
            return value
    return default


def env_bool(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def env_megabytes(environ: Mapping[str, str], name: str, most: float) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= most:
        raise ConfigError(f"{name}={raw!r}: expected a number of MB in (0, {most:g}]")
    return value
