"""What one server process is told (``ServerSettings``): each setting's default and check in one place. The
launcher fills it from the environment (``launcher.read_config``), the app reads it; tests build it directly.

Imports nothing heavy: the launcher reads it before gunicorn binds the port.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multimodal.sagemaker.contract import DEFAULT_MAX_PAYLOAD_MB, MULTI_RECORD, PAYLOAD_BUDGET_MB

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
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * MIB)

    @property
    def max_concurrent_transforms(self) -> int:
        return max(1, min(self.workers, int(PAYLOAD_BUDGET_MB // max(self.max_payload_mb, 1))))
