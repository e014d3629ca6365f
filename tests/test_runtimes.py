"""The encoders' runtimes (multimodal.core.runtimes): the choice per machine, the same embeddings on every runtime,
the ONNX export cache that never trusts a stale or damaged file, and what a model records of them."""
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multimodal.core import runtimes, settings
from multimodal.core.images import ImageEmbedder
from multimodal.core.settings import SettingError
from multimodal.core.text import TextEmbedder

# The tolerance of issue 21: a runtime's embeddings at this cosine of torch fp32's or closer. The fp32 runtimes
# agree to 1e-6 and torch's bf16 autocast measured 0.9962 at worst on the photos below (AMX). OpenVINO's bf16 stores
# every activation in bf16 (8 bits of mantissa; torch keeps some in fp32) and measured 0.9931 at worst (two of 32
# photos under 0.995): not within the tolerance, hence an opt-in and not the default, held to 0.99.
MIN_COSINE = 0.995
MIN_COSINE_BF16_OPT_IN = 0.99


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def enlarged_crops() -> list[bytes]:
    """32 real photographs as JPEG files (~100–400 KB): crops of the two photos scikit-learn ships, enlarged 2×
    (bench/encoder_precision.py measures on the same ones)."""
    import sklearn.datasets
    rng = np.random.default_rng(0)
    out = []
    for name in ("china.jpg", "flower.jpg"):
        photo = Image.fromarray(sklearn.datasets.load_sample_image(name))
        for _ in range(16):
            w, h = photo.size
            scale = rng.uniform(0.3, 1.0)
            cw, ch = int(w * scale), int(h * scale)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            buffer = io.BytesIO()
            photo.crop((x, y, x + cw, y + ch)).resize((cw * 2, ch * 2)).save(buffer, "JPEG", quality=92)
            out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def real_photos() -> list[str]:
    """``enlarged_crops`` as base64 values."""
    import base64
    return [base64.b64encode(photo).decode() for photo in enlarged_crops()]


def use(monkeypatch, runtime: str, precision: str = "auto") -> None:
    monkeypatch.setenv(settings.ENCODER_RUNTIME.name, runtime)
    monkeypatch.setenv(settings.ENCODER_PRECISION.name, precision)


# ---------------------------------------------------------------------------------------------- the choice

@pytest.mark.parametrize("cuda, native, expected", [
    (False, True, ("openvino", "fp32", "cpu")), (False, False, ("openvino", "fp32", "cpu")),
    (True, True, ("torch", "fp16", "cuda")),
])
def test_auto_chooses_per_machine(cuda, native, expected, monkeypatch):
    use(monkeypatch, "auto")
    plan = runtimes.choose(cuda=cuda, native_bf16=native)
    assert (plan.runtime, plan.precision, plan.device) == expected


@pytest.mark.parametrize("runtime, precision, expected", [
    ("onnxruntime", "auto", ("onnxruntime", "fp32", "cpu")), ("torch", "fp32", ("torch", "fp32", "cpu")),
    ("openvino", "bf16", ("openvino", "bf16", "cpu")), ("torch", "auto", ("torch", "fp32", "cpu")),
])
def test_a_runtime_asked_for_is_used(runtime, precision, expected, monkeypatch):
    use(monkeypatch, runtime, precision)
    plan = runtimes.choose(cuda=False, native_bf16=True)
    assert (plan.runtime, plan.precision, plan.device) == expected


@pytest.mark.parametrize("runtime, precision, says", [
    ("onnxruntime", "bf16", "choose MULTIMODAL_ENCODER_RUNTIME=openvino for bf16"),
    ("openvino", "fp16", "fp16 needs a GPU"),
])
def test_a_combination_that_cannot_run_says_what_can(runtime, precision, says, monkeypatch):
    use(monkeypatch, runtime, precision)
    with pytest.raises(SettingError, match=says):
        runtimes.choose(cuda=False, native_bf16=True)


def test_a_misspelt_runtime_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(settings.ENCODER_RUNTIME.name, "onnx")
    with pytest.raises(SettingError, match="MULTIMODAL_ENCODER_RUNTIME must be one of auto, torch, onnxruntime, "
                                           "openvino, not 'onnx'"):
        runtimes.choose()


# ---------------------------------------------------------------------------------------------- same embeddings

@pytest.fixture(scope="module")
def reference_images(real_photos):
    with pytest.MonkeyPatch.context() as patch:
        use(patch, "torch", "fp32")
        return ImageEmbedder("efficientnet_lite0").embed(real_photos, column="p_image", row_names=str)


@pytest.mark.parametrize("runtime, precision", [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"),
                                                ("torch", "bf16")])
def test_every_runtime_embeds_real_photos_as_torch_fp32_does(runtime, precision, real_photos, reference_images,
                                                            monkeypatch):
    use(monkeypatch, runtime, precision)
    embedder = ImageEmbedder("efficientnet_lite0")
    assert embedder.plan.runtime == runtime
    out = embedder.embed(real_photos, column="p_image", row_names=str)
    assert out.dtype == np.float32 and out.shape == reference_images.shape
    bound = MIN_COSINE_BF16_OPT_IN if (runtime, precision) == ("openvino", "bf16") else MIN_COSINE
    assert cosines(out, reference_images).min() >= bound


SENTENCES = ["Runs small; order a size up.", "The fabric is soft, \"silky\" even, but it pills after a wash.",
             "Great colour", "I returned it: the zip broke on day one, and the seams were crooked.", "ok " * 300]


@pytest.mark.parametrize("runtime, precision", [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")])
def test_every_runtime_embeds_text_as_torch_fp32_does(runtime, precision, monkeypatch):
    use(monkeypatch, "torch", "fp32")
    reference = TextEmbedder("minilm", batch_size=2).embed(SENTENCES + [""], column="t")
    use(monkeypatch, runtime, precision)
    embedder = TextEmbedder("minilm", batch_size=2)
    assert embedder.max_seq_length == 256
    out = embedder.embed(SENTENCES + [""], column="t")
    assert cosines(out, reference).min() >= MIN_COSINE
    if precision == "fp32":  # the same tokens as sentence-transformers, truncation of the long one included
        np.testing.assert_allclose(out, reference, atol=1e-4)


# ---------------------------------------------------------------------------------------------- export cache

@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(settings.ENCODER_CACHE.name, str(tmp_path / "cache"))
    use(monkeypatch, "onnxruntime", "fp32")
    return tmp_path / "cache"


def export_of(cache: Path, name: str) -> Path:
    (path,) = cache.glob(f"{name}-*.onnx")
    return path


def test_an_export_is_made_once_and_reused(cache, real_photos, caplog):
    with caplog.at_level(logging.INFO, logger="multimodal.core.runtimes"):
        first = ImageEmbedder("efficientnet_lite0").embed(real_photos[:3], column="p", row_names=str)
        second = ImageEmbedder("efficientnet_lite0").embed(real_photos[:3], column="p", row_names=str)
    assert [r.getMessage() for r in caplog.records].count(next(
        r.getMessage() for r in caplog.records if r.getMessage().startswith("exported image-efficientnet_lite0"))) == 1
    np.testing.assert_array_equal(first, second)
    meta = json.loads(export_of(cache, "image-efficientnet_lite0").with_suffix(".json").read_text())
    assert meta["sha256"] == runtimes.file_digest(export_of(cache, "image-efficientnet_lite0"))


def test_a_damaged_export_is_made_again_not_trusted(cache, real_photos, caplog):
    expected = ImageEmbedder("efficientnet_lite0").embed(real_photos[:2], column="p", row_names=str)
    path = export_of(cache, "image-efficientnet_lite0")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="multimodal.core.runtimes"):
        again = ImageEmbedder("efficientnet_lite0").embed(real_photos[:2], column="p", row_names=str)
    assert any("stale or damaged: made again" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(again, expected, atol=1e-5)
    assert runtimes.file_digest(path) == json.loads(path.with_suffix(".json").read_text())["sha256"]


def test_new_weights_get_a_new_export(cache, tmp_path, monkeypatch, real_photos):
    """The export is named by the weights' bytes: weights changed in place are never run through the old graph."""
    import torch
    from multimodal.core.images import import_torchvision
    torchvision = import_torchvision()
    monkeypatch.setenv(settings.WEIGHTS_DIR.name, str(tmp_path))
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
        outputs.append(ImageEmbedder("resnet18").embed(real_photos[:2], column="p", row_names=str))
        use(monkeypatch, "torch", "fp32")
        reference = ImageEmbedder("resnet18").embed(real_photos[:2], column="p", row_names=str)
        use(monkeypatch, "onnxruntime", "fp32")
        np.testing.assert_allclose(outputs[-1], reference, rtol=1e-3, atol=1e-4)
    assert len(list(cache.glob("image-resnet18-*.onnx"))) == 2
    assert not np.allclose(outputs[0], outputs[1])


def test_an_unwritable_cache_falls_back_to_a_temporary_directory(tmp_path, monkeypatch, real_photos, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(settings.ENCODER_CACHE.name, str(blocker / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)
    use(monkeypatch, "onnxruntime", "fp32")
    with caplog.at_level(logging.WARNING, logger="multimodal.core.runtimes"):
        out = ImageEmbedder("efficientnet_lite0").embed(real_photos[:1], column="p", row_names=str)
    assert out.shape == (1, 1280)
    assert any("using a temporary directory" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "tmp" / "multimodal-encoders").glob("image-efficientnet_lite0-*.onnx"))



# ---------------------------------------------------------------------------------------------- a saved model

@pytest.mark.slow
def test_a_saved_model_predicts_the_same_labels_on_every_runtime(saved_model_dir, test_df, monkeypatch):
    """Trained with the default runtime, served with another fp32 runtime: at least 99 % of the labels agree (issue
    21). The bf16 opt-ins are lossy: they changed 3 (OpenVINO) and 7 (torch autocast) of these 160 labels, on
    borderline rows of a small model; they are held to 90 %, which a broken runtime (wrong layout, wrong
    normalisation) would not reach."""
    from multimodal import MultimodalClassifier
    config = json.loads((saved_model_dir / "model_config.json").read_text())
    assert config["encoders"]["image"] == "efficientnet_lite0, openvino fp32 on cpu"
    rows = test_df.drop(columns=["label"])
    labels = {}
    for runtime, precision in [("openvino", "fp32"), ("torch", "fp32"), ("onnxruntime", "fp32"),
                               ("openvino", "bf16"), ("torch", "bf16")]:
        use(monkeypatch, runtime, precision)
        labels[runtime, precision] = MultimodalClassifier.load(saved_model_dir).predict(rows).to_numpy()
    reference = labels["openvino", "fp32"]
    for key, predicted in labels.items():
        assert np.mean(predicted == reference) >= (0.90 if key[1] == "bf16" else 0.99), key


@pytest.mark.slow
def test_the_model_records_and_logs_how_its_encoders_ran(saved_model_dir, monkeypatch, caplog):
    from multimodal import MultimodalClassifier
    use(monkeypatch, "onnxruntime", "fp32")
    with caplog.at_level(logging.INFO, logger="multimodal.core.persistence"):
        model = MultimodalClassifier.load(saved_model_dir)
    assert model.encoders_ == {"image": "efficientnet_lite0, openvino fp32 on cpu"}
    assert any(r.getMessage() == "the encoders ran as image: efficientnet_lite0, openvino fp32 on cpu in training; "
               "in this process they run as onnxruntime fp32 on cpu" for r in caplog.records)
