"""SageMaker's ``/opt/ml`` layout, as the training job reads it and the local emulation
(``multimodal.tools.local_training``) writes it: where the configuration files, channels, model and outputs are (``Paths``), the channel names, the
configuration files read (hyperparameters.json, resourceconfig.json), the failure file and its limit, and the
model's publication into model/ (staged, config last). The root is ``/opt/ml``, or ``$MULTIMODAL_ML_ROOT``
(``multimodal.sagemaker.environment``).
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multimodal.core.artifact import CONFIG_FILE
from multimodal.core.errors import HyperparameterError
from multimodal.core.hyperparameters import IGNORED_PREFIXES
from multimodal.sagemaker.contract import ConfigError
from multimodal.sagemaker.environment import ml_root

log = logging.getLogger(__name__)

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"
IMAGES_CHANNEL = "images"  # image files that relative _image paths point into (multimodal.core.imagerefs)
CHANNELS = (TRAIN_CHANNEL, VALIDATION_CHANNEL, IMAGES_CHANNEL)  # the channels this algorithm reads
HYPERPARAMETERS_FILE = "hyperparameters.json"
INPUT_DATA_CONFIG_FILE = "inputdataconfig.json"
RESOURCE_CONFIG_FILE = "resourceconfig.json"
STAGING_DIR = ".partial"
FAILURE_LIMIT = 1024  # SageMaker keeps the first 1,024 characters of output/failure as the FailureReason


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def from_env(cls) -> "Paths":
        return cls(ml_root())

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        """SageMaker's default CheckpointConfig LocalPath (``multimodal.sagemaker.environment.CHECKPOINTS``
        names another)."""
        return self.root / "checkpoints"


# ---------------------------------------------------------------------------------------------- configuration files

def read_json_config(path: Path, what: str, default: Any) -> Any:
    if not path.is_file():
        log.info("%s not found: %s", path.name, what)
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name} is not valid JSON ({exc}); SageMaker writes it from the job request: "
                          "check how the job was created") from None

def read_hyperparameters(paths: Paths) -> dict[str, Any]:
    raw = read_json_config(paths.config_dir / HYPERPARAMETERS_FILE, "using every default hyperparameter", {})
    if not isinstance(raw, dict):
        raise HyperparameterError(f"hyperparameters.json must be a JSON object of name/value strings, e.g. "
                                  f'{{"n_mins": "10"}}, not {type(raw).__name__}')
    values, unwrapped = unwrap_json_quoted(raw)
    if unwrapped:
        log.info("hyperparameter(s) %s were written JSON-quoted (as the SageMaker Python SDK writes script-mode "
                 "hyperparameters): the string inside the quotes is used", ", ".join(unwrapped))
    return values

def unwrap_json_quoted(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Replace each value that is a JSON string literal (``"\\"toy\\""``) by the string it encodes (``toy``).

    The SageMaker Python SDK json.dumps every hyperparameter of a script-mode estimator, so a string arrives
    quoted while a number does not (``"5"`` stays ``"5"``). Only one level of quoting is removed, and only when
    the whole value is one JSON string; what is still invalid afterwards fails validation as usual. Keys that
    are not ours (``_…``, ``sagemaker_…``) are left alone. Returns the values and the names unwrapped."""
    values, unwrapped = dict(raw), []
    for name, value in raw.items():
        if name.startswith(IGNORED_PREFIXES) or not isinstance(value, str):
            continue
        text = value.strip()
        if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
            continue
        try:
            inner = json.loads(text)
        except ValueError:
            continue
        if isinstance(inner, str):
            values[name] = inner
            unwrapped.append(name)
    return values, unwrapped

def read_hosts(paths: Paths) -> tuple[str, list[str]]:
    default = {"current_host": "algo-1", "hosts": ["algo-1"]}
    config = read_json_config(paths.config_dir / RESOURCE_CONFIG_FILE, "a single host", default)
    if not isinstance(config, dict):
        raise ConfigError("resourceconfig.json must be a JSON object with current_host and hosts")
    hosts = config.get("hosts") or [config.get("current_host") or "algo-1"]
    current = config.get("current_host") or sorted(hosts)[0]
    return str(current), sorted(str(h) for h in hosts)


# ---------------------------------------------------------------------------------------------- model/ and output/

def empty_directory(directory: Path) -> int:
    """Remove everything inside ``directory`` (kept itself: on SageMaker it may be a mount point)."""
    removed = 0
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed

def publish_model(staging: Path, model_dir: Path) -> None:
    """Move the saved model from ``model/.partial`` into ``model/``; model_config.json (what marks a complete
    model) is moved last, so an interruption never leaves something that passes for a model."""
    entries = sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_FILE)
    for entry in entries:
        target = model_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        entry.rename(target)
    staging.rmdir()



def shortened(reason: str) -> str:
    """``reason`` within ``FAILURE_LIMIT`` characters (SageMaker drops the rest)."""
    return reason if len(reason) <= FAILURE_LIMIT else reason[:FAILURE_LIMIT - 1] + "…"


def write_failure(paths: Paths, reason: str) -> None:
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        paths.failure_file.write_text(reason + "\n", encoding="utf-8")
    except OSError:
        log.exception("could not write %s", paths.failure_file)
