"""Every environment variable the estimator reads, with its default, its type and the error a bad value gets;
and the variables it sets for the libraries it loads. The one place in ``multimodal.core`` that touches the
environment: read at each use (never cached), so that a changed environment applies to the next read.

Imports nothing heavy: the server's launcher checks some of these before it binds its port.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping


class SettingError(ValueError):
    """An environment variable holds a value that cannot be used; the message names it and the fix."""


def positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError("must be a whole number, at least 1")
    return int(raw)


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError("must be a positive number")
    return value


@dataclass(frozen=True)
class Setting:
    """One environment variable: unset or blank means ``default``; otherwise ``parse`` (str → value, raising
    ValueError with what the value must be) reads it, and a value it refuses is a ``SettingError`` naming the
    variable, what it must be and what it is for."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    meaning: str

    def raw(self, environ: Mapping[str, str] | None = None) -> str:
        """The variable's text, stripped; "" when unset."""
        return (os.environ if environ is None else environ).get(self.name, "").strip()

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        raw = self.raw(environ)
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{self.name} {exc}, not {raw[:80]!r} (it is {self.meaning}; unset it for the "
                               f"default, {self.default!r})") from None


WEIGHTS_DIR = Setting("MULTIMODAL_WEIGHTS_DIR", Path("/opt/multimodal/weights"), Path,
                      "the directory holding torchvision image encoder weights (<name>.pth)")
TEXT_MODELS_DIR = Setting("MULTIMODAL_TEXT_MODELS_DIR", Path("/opt/multimodal/text-models"), Path,
                          "the directory holding sentence-transformers models (<name>/)")
# about 8000 x 5000: larger images are refused before being decoded
MAX_IMAGE_PIXELS = Setting("MULTIMODAL_MAX_IMAGE_PIXELS", 40_000_000, positive_int,
                           "the most pixels an image may have to be decoded")
MAX_IMAGE_BYTES = Setting("MULTIMODAL_MAX_IMAGE_BYTES", 50_000_000, positive_int,
                          "the most bytes an image file or S3 object may have")
S3_TIMEOUT_SECONDS = Setting("MULTIMODAL_S3_TIMEOUT_SECONDS", 20.0, positive_float,
                             "the seconds to wait for S3 to connect or answer")
# comma-separated s3://bucket or s3://bucket/prefix entries (parsed and checked by imagerefs.parse_allow_list)
S3_ALLOW = Setting("MULTIMODAL_S3_ALLOW", None, str, "the S3 locations image values may point into")


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw.lower()
    return parse


# the runtime and precision of the image and text encoders: a property of the machine (multimodal.core.runtimes)
ENCODER_RUNTIME = Setting("MULTIMODAL_ENCODER_RUNTIME", "auto", one_of("auto", "torch", "onnxruntime", "openvino"),
                          "the runtime the image and text encoders run on")
ENCODER_PRECISION = Setting("MULTIMODAL_ENCODER_PRECISION", "auto", one_of("auto", "fp32", "bf16", "fp16"),
                            "the precision the image and text encoders compute in")
# None: $XDG_CACHE_HOME or the temporary directory, /multimodal-encoders
ENCODER_CACHE = Setting("MULTIMODAL_ENCODER_CACHE", None, Path,
                        "the directory holding the encoders' ONNX exports (made there on first use)")
CORE_SETTINGS = (WEIGHTS_DIR, TEXT_MODELS_DIR, MAX_IMAGE_PIXELS, MAX_IMAGE_BYTES, S3_TIMEOUT_SECONDS, S3_ALLOW,
                 ENCODER_RUNTIME, ENCODER_PRECISION, ENCODER_CACHE)

# boto3's own variables: an S3 client is made anew when one of them changes
AWS_CLIENT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
                        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
                        "AWS_EC2_METADATA_DISABLED", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def aws_client_environment() -> tuple[str | None, ...]:
    """The values of ``AWS_CLIENT_VARIABLES`` (None where unset): what an S3 client depends on."""
    return tuple(os.environ.get(name) for name in AWS_CLIENT_VARIABLES)


def aws_retry_mode_set() -> bool:
    """Whether the user chose boto3's retry mode (``AWS_RETRY_MODE``): then ours is not imposed."""
    return bool(os.environ.get("AWS_RETRY_MODE"))


# ---------------------------------------------------------------------------------------------- libraries

def library_defaults(**values: str) -> None:
    """Set variables the libraries we load read at import, unless the user set them."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


def cache_root() -> Path:
    """Where caches go: $XDG_CACHE_HOME, else the temporary directory (never under $HOME by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir())


def offline_hugging_face() -> None:
    """Before sentence-transformers / transformers / huggingface_hub load: never touch the network, never
    write under $HOME (their caches default to ~/.cache/huggingface)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    cache = cache_root()
    library_defaults(HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(cache / "huggingface"),
                     SENTENCE_TRANSFORMERS_HOME=str(cache / "sentence-transformers"))
