"""Where the pretrained encoders run: torch (the reference; CUDA in fp16), ONNX Runtime or OpenVINO on the CPU.

The choice is ``MULTIMODAL_ENCODER_RUNTIME`` and ``MULTIMODAL_ENCODER_PRECISION`` (``auto`` by default; see
``choose``). They are environment variables, not hyperparameters, because the best runtime is a property of the
machine a process runs on, not of the model: a model trained on one kind of CPU is served on others, or on a
GPU, and each host should run what is fastest there. The fp32 runtimes give the embeddings of torch fp32 (cosine
0.99999), fp16 and bf16 within 0.995 and 0.99 (tests/test_runtimes.py); the model records what it was trained
with (``MultimodalEstimator.encoders_``).

bf16 (``MULTIMODAL_ENCODER_PRECISION=bf16``) is about 1.6× faster again on a CPU with AMX, at a cosine of 0.993
at worst: an opt-in, not the default.

ONNX Runtime and OpenVINO run an ONNX export of the same weights, made with torch and kept in a cache directory
(``MULTIMODAL_ENCODER_CACHE``; the Docker images bake theirs in at build time). An export is named by a
fingerprint of what it was made from (the weight files' bytes, the torch version, the export recipe) and carries
the SHA-256 of its own bytes: a missing, stale or damaged export is made again, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import settings

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16")
# bump when the way graphs are exported changes: older exports then no longer match and are made again
EXPORT_RECIPE = 1
ONNX_OPSET = 17


def bf16_is_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX-512-BF16); elsewhere bf16 is emulated and slow."""
    import torch
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


@dataclass(frozen=True)
class Plan:
    """How an encoder runs: the runtime, the precision it computes in and the device."""

    runtime: str
    precision: str
    device: str

    def describe(self) -> str:
        return f"{self.runtime} {self.precision} on {self.device}"

    def autocast_dtype(self) -> Any:
        """The torch autocast dtype of this plan's precision (None: fp32, no autocast); for runtime torch."""
        import torch
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def choose(runtime: str | None = None, precision: str | None = None, *, cuda: bool | None = None,
           native_bf16: bool | None = None) -> Plan:
    """The plan for this machine. ``runtime``/``precision`` default to the environment's settings; ``auto``
    means torch in fp16 on a GPU, OpenVINO in fp32 on a CPU: the fastest measured on CPUs with and without native
    bf16 among the runtimes that keep the embeddings of torch fp32 (docs/benchmarks.md). bf16 is faster again on
    CPUs that compute it natively, at a cosine to fp32 of 0.993 at worst on real photos, so only when asked for. A
    combination that cannot run is a ``SettingError`` saying what can."""
    runtime = runtime or settings.ENCODER_RUNTIME.read()
    precision = precision or settings.ENCODER_PRECISION.read()
    if cuda is None:
        import torch
        cuda = torch.cuda.is_available()
    if runtime == "auto":
        runtime = "torch" if cuda else "openvino"
    device = "cuda" if cuda and runtime == "torch" else "cpu"
    if precision == "auto":
        precision = "fp16" if device == "cuda" else "fp32"
    if precision == "fp16" and device != "cuda":
        raise settings.SettingError(
            f"{settings.ENCODER_PRECISION.name}=fp16 needs a GPU (runtime torch); on a CPU choose bf16 or fp32")
    if precision == "bf16" and runtime == "onnxruntime":
        raise settings.SettingError(
            f"{settings.ENCODER_PRECISION.name}=bf16 is not available with onnxruntime on a CPU; choose "
            f"{settings.ENCODER_RUNTIME.name}=openvino for bf16, or fp32")
    if precision == "bf16" and device == "cpu" and not (bf16_is_native() if native_bf16 is None else native_bf16):
        log.warning("bf16 was asked for, but this CPU has no native bf16 (AMX or AVX-512-BF16): it is emulated "
                    "and slower than fp32 here")
    return Plan(runtime, precision, device)


# ---------------------------------------------------------------------------------------------- export cache

def cache_dir() -> Path:
    configured = settings.ENCODER_CACHE.read()
    if configured is not None:
        return configured
    return settings.cache_root() / "multimodal-encoders"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Graph:
    """An encoder to export: ``build`` makes the torch module (inputs → outputs as named), ``example`` its example
    inputs; ``sources`` the files its weights come from (their bytes are part of the fingerprint)."""

    name: str
    build: Callable[[], Any]
    example: Callable[[], tuple]
    sources: Sequence[Path]
    inputs: Sequence[str]
    outputs: Sequence[str]
    dynamic_axes: dict[str, dict[int, str]]

    def fingerprint(self) -> str:
        import torch
        digest = hashlib.sha256(json.dumps({"name": self.name, "recipe": EXPORT_RECIPE, "opset": ONNX_OPSET,
                                            "torch": torch.__version__, "inputs": list(self.inputs),
                                            "outputs": list(self.outputs)}).encode())
        for source in self.sources:
            digest.update(file_digest(source).encode())
        return digest.hexdigest()


def exported(graph: Graph, directory: Path | None = None) -> Path:
    """The ONNX file of ``graph``: the cached one when its fingerprint and its own digest match, else exported
    now into ``directory`` (by default the cache directory, or a temporary one when that cannot be written)."""
    fingerprint = graph.fingerprint()
    if directory is not None:
        path = directory / f"{graph.name}-{fingerprint[:20]}.onnx"
        return path if _is_intact(path, fingerprint) else _export(graph, path, fingerprint)
    for directory in (cache_dir(), Path(tempfile.gettempdir()) / "multimodal-encoders"):
        path = directory / f"{graph.name}-{fingerprint[:20]}.onnx"
        if _is_intact(path, fingerprint):
            return path
        try:
            return _export(graph, path, fingerprint)
        except OSError as exc:  # not writable, or not a directory
            log.warning("cannot write the %s export to %s (%s): using a temporary directory", graph.name,
                        directory, exc)
    raise RuntimeError(f"could not export {graph.name} anywhere")  # the temporary directory was not writable


def _is_intact(path: Path, fingerprint: str) -> bool:
    meta = path.with_suffix(".json")
    if not path.is_file() and not meta.is_file():
        return False
    try:
        recorded = json.loads(meta.read_text())
        if recorded["fingerprint"] == fingerprint and recorded["sha256"] == file_digest(path):
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.warning("the encoder export %s is stale or damaged: made again", path)
    return False


def _export(graph: Graph, path: Path, fingerprint: str) -> Path:
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    module = graph.build().eval()
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        # the exporter fails under inference_mode; its warnings (constant folding, tracing) are about its own work
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, graph.example(), partial, input_names=list(graph.inputs),
                              output_names=list(graph.outputs), dynamic_axes=graph.dynamic_axes,
                              opset_version=ONNX_OPSET, dynamo=False)
        meta = {"fingerprint": fingerprint, "sha256": file_digest(Path(partial)), "name": graph.name,
                "torch": torch.__version__, "recipe": EXPORT_RECIPE}
        os.chmod(partial, 0o644)  # mkstemp's 0600 would keep other users (a container's) from reading it
        os.replace(partial, path)  # the file first: a digest that matches nothing is never taken as done
        meta_partial = path.with_suffix(".json.partial")
        meta_partial.write_text(json.dumps(meta, indent=2))
        os.replace(meta_partial, path.with_suffix(".json"))
    finally:
        Path(partial).unlink(missing_ok=True)
    log.info("exported %s to %s in %.1f s (%.0f MB)", graph.name, path, time.monotonic() - started,
             path.stat().st_size / 1e6)
    return path


# ---------------------------------------------------------------------------------------------- sessions

def threads() -> int:
    """The compute threads an encoder may use: torch's setting, which the server and the cluster nodes set."""
    import torch
    return max(1, torch.get_num_threads())


class OnnxRuntimeSession:
    """An ONNX file run by ONNX Runtime's CPU provider (fp32)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, **inputs: np.ndarray) -> list[np.ndarray]:
        return self._session.run(None, inputs)


def import_openvino() -> Any:
    """OpenVINO without its telemetry: on import it would write a client id under $HOME (~/intel) and try to send
    usage events. With ``openvino_telemetry`` unimportable, OpenVINO uses its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: "import fails"
    import openvino
    return openvino


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU, at the plan's precision (bf16 or fp32)."""

    def __init__(self, path: Path, precision: str) -> None:
        core = import_openvino().Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads(), "PERFORMANCE_HINT": "LATENCY"}
        self._compiled = core.compile_model(str(path), "CPU", config)
        self._names = [port.get_any_name() for port in self._compiled.inputs]
        self._request = self._compiled.create_infer_request()

    def __call__(self, **inputs: np.ndarray) -> list[np.ndarray]:
        # one request at a time per session: the server calls its model from one thread
        result = self._request.infer({name: inputs[name] for name in self._names})
        return [np.array(result[port]) for port in self._compiled.outputs]


def session(plan: Plan, graph: Graph) -> OnnxRuntimeSession | OpenVinoSession:
    """A session running ``graph``'s export under ``plan`` (runtime onnxruntime or openvino)."""
    path = exported(graph)
    if plan.runtime == "onnxruntime":
        return OnnxRuntimeSession(path)
    return OpenVinoSession(path, plan.precision)
