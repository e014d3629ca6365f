"""A generator of small multimodal data sets whose signal is split across modalities.

Each of four classes is a pair of bits (a, b). Text and the image's shape reveal ``a``; the category reveals
``b``; the numbers reveal both, weakly; the image's colour is noise. No modality alone can exceed about 50–65 % accuracy,
while fusing them recovers the class: the data is built to show what fusion adds, and to exercise missing
values in every modality.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

CLASSES = ("alpha", "beta", "gamma", "delta")  # class index = 2*a + b
_WORDS_A = (("calm", "quiet", "gentle", "soft", "smooth"), ("loud", "sharp", "bright", "fast", "rough"))
_FILLER = ("the", "item", "arrived", "and", "it", "was", "very", "really", "quite", "overall", "product", "day")
_CATS_B = (("red", "orange", "yellow"), ("blue", "green", "purple"))


def encode_image(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image = image.convert("RGB")
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def as_image_files(frame: pd.DataFrame, directory: str | Path, *, folder: str = "photos") -> pd.DataFrame:
    """``frame`` with each base64 ``_image`` value written as a file under ``directory/folder`` (named by the row's
    ID and the column, with the format's extension) and replaced by its path relative to ``directory``: the
    layout of an ``images`` channel. Empty values stay empty."""
    directory = Path(directory)
    (directory / folder).mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    for column in [c for c in frame.columns if c.endswith("_image")]:
        paths = []
        for position, value in enumerate(frame[column]):
            if not isinstance(value, str) or not value.strip():
                paths.append(value)
                continue
            data = base64.b64decode(value)
            extension = {"JPEG": "jpg"}.get(Image.open(io.BytesIO(data)).format, None)
            extension = extension or Image.open(io.BytesIO(data)).format.lower()
            name = frame["ID"].iloc[position] if "ID" in frame.columns else position
            relative = f"{folder}/{name}-{column}.{extension}"
            (directory / relative).write_bytes(data)
            paths.append(relative)
        out[column] = paths
    return out


def photo_jpeg(kilobytes: float, *, seed: int = 0) -> bytes:
    """A JPEG file of about ``kilobytes`` KB (within ~15 %) that compresses like a real photo: a colour
    gradient under grain. Real product photos are 100 KB–1 MB; tests use these to exercise real sizes."""
    rng = np.random.default_rng(seed)
    side = int((kilobytes * 1024 / 0.65) ** 0.5)  # ≈ 0.65 bytes per pixel at quality 90 for this texture
    for _ in range(4):
        gradient = np.linspace(0, 255, side)[None, :, None] * np.ones((side, 1, 3)) * rng.uniform(0.5, 1.0, 3)
        pixels = np.clip(gradient + rng.normal(0, 40, (side, side, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        size = len(buffer.getvalue()) / 1024
        if abs(size - kilobytes) <= 0.15 * kilobytes:
            break
        side = max(16, int(side * (kilobytes / size) ** 0.5))
    return buffer.getvalue()


def draw_image(a: int, b: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Shape carries bit a (disc vs bar), colour carries bit b (warm vs cool), position and size vary."""
    background = tuple(int(v) for v in rng.integers(200, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    warm = (int(rng.integers(180, 256)), int(rng.integers(0, 90)), int(rng.integers(0, 60)))
    cool = (int(rng.integers(0, 60)), int(rng.integers(60, 160)), int(rng.integers(180, 256)))
    colour = cool if b else warm
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    if a:
        draw.rectangle([cx - r, cy - r // 3, cx + r, cy + r // 3], fill=colour)
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return image


def make_dataset(n_rows: int = 400, *, seed: int = 0, missing_rate: float = 0.08, with_images: bool = True,
                 image_format: str = "JPEG", noise: float = 0.15, integer_labels: bool = False) -> pd.DataFrame:
    """A training-format DataFrame: ID, review_text, colour_cat, size_num, weight_num, [photo_image], label.

    Missing values are empty strings, as in a CSV file. ``noise`` flips the bit each modality reveals.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n_rows)
    a, b = y // 2, y % 2

    def noisy(bit: np.ndarray) -> np.ndarray:
        return np.where(rng.random(n_rows) < noise, 1 - bit, bit)

    text_bit, cat_bit, img_a = noisy(a), noisy(b), noisy(a)
    img_b = rng.integers(0, 2, n_rows)  # colour is unrelated to the class
    texts = []
    for bit in text_bit:
        words = list(rng.choice(_FILLER, int(rng.integers(4, 9))))
        words += list(rng.choice(_WORDS_A[bit], int(rng.integers(1, 3))))
        rng.shuffle(words)
        texts.append(" ".join(words))
    frame = pd.DataFrame({
        "ID": [f"r{seed}-{i:05d}" for i in range(n_rows)],
        "review_text": texts,
        "colour_cat": [str(rng.choice(_CATS_B[bit])) for bit in cat_bit],
        "size_num": np.round(rng.normal(a * 1.0 + b * 0.5, 1.0), 3).astype(str),
        "weight_num": np.round(rng.normal(b * 1.0, 1.2), 3).astype(str),
    })
    if with_images:
        frame["photo_image"] = [encode_image(draw_image(int(ia), int(ib), rng), image_format)
                                for ia, ib in zip(img_a, img_b)]
    labels = y if integer_labels else np.asarray(CLASSES, dtype=object)[y]
    frame["label"] = labels
    for column in [c for c in frame.columns if c not in ("ID", "label")]:
        holes = rng.random(n_rows) < missing_rate
        frame[column] = frame[column].astype(object)
        frame.loc[holes, column] = ""
    return frame


def make_interaction_dataset(n_rows: int = 400, *, seed: int = 0, missing_rate: float = 0.1) -> pd.DataFrame:
    """Rows whose class is decided by an interaction between a number and a category.

    ``exchange`` is the class of ``size_num`` > 0 in the ``region_cat`` "north" and of ``size_num`` < 0 in
    "south" (an XOR): the number alone and the category alone say nothing about it, only the two together do.
    ``keep`` and ``return`` split the remaining rows by the words of ``note_text``. A per-modality expert cannot
    see the interaction; one expert over all the columns can. ``size_num`` is missing in ``missing_rate`` of
    the rows (the class is then decided by the text alone).
    """
    rng = np.random.default_rng(seed)
    size = rng.normal(0.0, 1.0, n_rows)
    region = rng.choice(["north", "south"], n_rows)
    exchange = (size > 0) == (region == "north")
    happy = rng.random(n_rows) < 0.5
    missing = rng.random(n_rows) < missing_rate
    exchange &= ~missing
    labels = np.where(exchange, "exchange", np.where(happy, "keep", "return"))
    words = {True: ("great", "love", "perfect", "lovely"), False: ("broken", "poor", "awful", "faulty")}
    notes = [" ".join([*rng.choice(_FILLER, 4), *rng.choice(words[bool(h)], 2)]) for h in happy]
    return pd.DataFrame({
        "ID": [f"i{seed}-{i:05d}" for i in range(n_rows)],
        "note_text": notes,
        "size_num": np.where(missing, "", np.round(size, 3).astype(str)),
        "region_cat": region,
        "label": labels,
    })


def make_regression_dataset(n_rows: int = 400, *, seed: int = 0, missing_rate: float = 0.08, with_images: bool = True,
                            noise: float = 0.15) -> pd.DataFrame:
    """``make_dataset``'s columns with a numeric label (a price) that depends on two modalities.

    ``label`` = 10 + 6·a + 3·b + 0.5·N(0, 1), rounded to cents: text and the image's shape each reveal ``a``, the
    category reveals ``b``, the numbers both weakly (as in ``make_dataset``, each with ``noise`` flips). With
    the default noise the text alone can explain about 38 % of the variance (36·0.35² of 11.5), the category
    about 10 %; only the modalities together approach the 98 % that a and b explain.
    """
    frame = make_dataset(n_rows, seed=seed, missing_rate=missing_rate, with_images=with_images, noise=noise,
                         integer_labels=True)
    y = frame["label"].to_numpy(dtype=np.int64)
    a, b = y // 2, y % 2
    rng = np.random.default_rng([seed, 1])
    frame["label"] = np.round(10.0 + 6.0 * a + 3.0 * b + rng.normal(0.0, 0.5, n_rows), 2)
    return frame
