import base64

import numpy as np
import pytest
from PIL import Image

from multimodal.core import images, settings
from multimodal.core.errors import DataError
from multimodal.core.images import ImageEmbedder, decode_image
from multimodal.tools.synthetic import draw_image, encode_image


def _png_with_alpha() -> str:
    image = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, 10, 30))  # an opaque blue stripe on the left
    return encode_image(image, "PNG")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_every_supported_format_decodes_to_rgb_224(fmt):
    array = decode_image(encode_image(draw_image(1, 1, np.random.default_rng(0)), fmt), column="p_image", row="row 1")
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    assert array.std() > 5  # the drawing survived, not a blank


def test_grayscale_and_palette_images_become_rgb():
    gray = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (64, 1)), mode="L")
    assert decode_image(encode_image(gray, "PNG"), column="c", row="r").shape == (224, 224, 3)
    palette = draw_image(0, 0, np.random.default_rng(1)).convert("P")
    assert decode_image(encode_image(palette, "GIF"), column="c", row="r").shape == (224, 224, 3)


def test_transparency_is_composited_on_white():
    array = decode_image(_png_with_alpha(), column="p_image", row="row 1")
    assert (array[:, -50:] == 255).all()  # transparent area → white, not the hidden red
    assert array[:, :20, 2].mean() > 200 and array[:, :20, 0].mean() < 60  # the blue stripe stays blue


def test_data_uri_prefix_is_accepted():
    value = "data:image/png;base64," + encode_image(draw_image(0, 1, np.random.default_rng(2)), "PNG")
    assert decode_image(value, column="c", row="r").shape == (224, 224, 3)


def test_bad_base64_names_column_and_row():
    with pytest.raises(DataError) as info:
        decode_image("this is not base64!!", column="front_image", row="row 7 (ID 'x')")
    assert "column 'front_image', row 7 (ID 'x'): the value is not valid base64" in str(info.value)


def test_undecodable_bytes_name_column_and_row():
    value = base64.b64encode(b"definitely not an image file").decode()
    with pytest.raises(DataError, match="column 'front_image', row 3: the bytes are not an image Pillow can read"):
        decode_image(value, column="front_image", row="row 3")


def test_truncated_jpeg_is_an_error_not_a_crash():
    payload = base64.b64decode(encode_image(draw_image(0, 0, np.random.default_rng(3)), "JPEG"))
    with pytest.raises(DataError, match="not an image Pillow can read"):
        decode_image(base64.b64encode(payload[: len(payload) // 3]).decode(), column="c", row="row 1")


def test_decompression_bombs_are_refused_before_decoding(monkeypatch):
    monkeypatch.setenv(settings.MAX_IMAGE_PIXELS.name, "10000")
    big = encode_image(Image.new("RGB", (200, 200)), "PNG")
    with pytest.raises(DataError, match=r"200×200 pixels, over the limit of 10,000"):
        decode_image(big, column="c", row="row 1")


@pytest.fixture
def resnet18_checkpoint(tmp_path, monkeypatch):
    """A real torchvision state_dict, saved by the test, in a weights directory named by the env var."""
    import torch
    torchvision = images.import_torchvision()
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    monkeypatch.setenv(settings.WEIGHTS_DIR.name, str(tmp_path))
    return state


def test_torchvision_weights_load_from_the_weights_directory(resnet18_checkpoint, monkeypatch):
    import torch
    monkeypatch.setenv(settings.ENCODER_RUNTIME.name, "torch")
    embedder = ImageEmbedder("resnet18", batch_size=2)
    loaded = embedder.model.backbone.state_dict()
    assert torch.equal(loaded["conv1.weight"], resnet18_checkpoint["conv1.weight"])
    rng = np.random.default_rng(4)
    values = [encode_image(draw_image(i % 2, i // 2, rng)) for i in range(3)]
    out = embedder.embed(values, column="p_image", row_names=str)
    assert out.shape == (3, 512) and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])


def test_a_missing_weight_file_says_how_to_bake_it_in(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.WEIGHTS_DIR.name, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        ImageEmbedder("resnet50")
    message = str(info.value)
    assert str(tmp_path / "resnet50.pth") in message
    assert "multimodal weights fetch resnet50" in message and "efficientnet_lite0" in message


def test_missing_images_use_the_placeholder_computed_once(resnet18_checkpoint, monkeypatch):
    embedder = ImageEmbedder("resnet18", batch_size=2)
    seen_batches = []
    forward = embedder.forward

    def spy(batch):
        seen_batches.append(len(batch))
        return forward(batch)

    monkeypatch.setattr(embedder, "forward", spy)
    rng = np.random.default_rng(5)
    values = [None, encode_image(draw_image(0, 0, rng)), None, encode_image(draw_image(1, 1, rng)),
              encode_image(draw_image(1, 0, rng)), None]
    out = embedder.embed(values, column="p_image", row_names=str)
    black = embedder.black_embedding()
    assert np.array_equal(out[0], black) and np.array_equal(out[2], black) and np.array_equal(out[5], black)
    # one forward for the placeholder, then the three real images in batches of at most 2
    assert seen_batches == [1, 2, 1]
    embedder.embed([None, None], column="p_image", row_names=str)
    assert seen_batches == [1, 2, 1]


def test_embedding_errors_name_the_row(resnet18_checkpoint):
    embedder = ImageEmbedder("resnet18")
    with pytest.raises(DataError, match="row 2"):
        embedder.embed([encode_image(draw_image(0, 0, np.random.default_rng(6))), "%%%"], column="p_image",
                       row_names=lambda i: f"row {i + 1}")


def test_images_given_as_files_embed_exactly_as_the_same_images_in_base64(resnet18_checkpoint, tmp_path):
    from multimodal.core.imagerefs import ImageSource
    rng = np.random.default_rng(7)
    values = [encode_image(draw_image(i % 2, i // 2 % 2, rng)) for i in range(5)] + [None]
    paths = []
    for i, value in enumerate(values[:-1]):
        (tmp_path / f"photo {i}.jpg").write_bytes(base64.b64decode(value))
        paths.append(f"photo {i}.jpg")
    embedder = ImageEmbedder("resnet18", batch_size=2)
    inline = embedder.embed(values, column="p_image", row_names=str)
    with ImageSource(tmp_path) as source:
        from_files = embedder.embed(paths + [None], column="p_image", row_names=str, source=source)
    assert np.array_equal(inline, from_files)


def test_a_bad_reference_names_column_row_reference_and_reason(resnet18_checkpoint, tmp_path):
    from multimodal.core.imagerefs import ImageSource
    (tmp_path / "ok.jpg").write_bytes(base64.b64decode(encode_image(draw_image(0, 0, np.random.default_rng(8)))))
    (tmp_path / "notes.txt").write_text("not an image")
    embedder = ImageEmbedder("resnet18", batch_size=2)
    with ImageSource(tmp_path) as source:
        with pytest.raises(DataError) as info:
            embedder.embed(["ok.jpg", "photos/missing.jpg"], column="p_image", source=source,
                           row_names=lambda i: f"row {i + 1} (ID 'x{i}')")
        assert str(info.value).startswith("column 'p_image', row 2 (ID 'x1'): 'photos/missing.jpg': no such file")
        with pytest.raises(DataError, match="row 1: 'notes.txt': the bytes are not an image Pillow can read"):
            embedder.embed(["notes.txt"], column="p_image", source=source, row_names=lambda i: f"row {i + 1}")


def test_with_on_bad_a_bad_image_gets_the_placeholder_and_is_reported(resnet18_checkpoint, tmp_path):
    from multimodal.core.imagerefs import ImageSource
    rng = np.random.default_rng(9)
    good = [encode_image(draw_image(i % 2, 1, rng)) for i in range(3)]
    (tmp_path / "notes.txt").write_text("not an image")
    reported = []
    embedder = ImageEmbedder("resnet18", batch_size=2)
    values = [good[0], "gone.jpg", good[1], "notes.txt", "%%%", good[2]]
    with ImageSource(tmp_path) as source:
        out = embedder.embed(values, column="p_image", row_names=str, source=source,
                             on_bad=lambda position, value, reason: reported.append((position, value, reason)))
    assert [(p, v) for p, v, _ in reported] == [(1, "gone.jpg"), (3, "notes.txt"), (4, "%%%")]
    assert "no such file" in reported[0][2] and "not valid base64" in reported[2][2]
    black = embedder.black_embedding()
    assert all(np.array_equal(out[p], black) for p in (1, 3, 4))
    alone = embedder.embed(good, column="p_image", row_names=str)
    assert np.allclose(out[[0, 2, 5]], alone, atol=1e-5)
