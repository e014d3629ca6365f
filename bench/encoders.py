#!/usr/bin/env python
"""The encoders' runtimes side by side, in one run on one machine (issue 21; prints a markdown table and writes
bench/results/encoders.json).

Usage::

    .venv/bin/python bench/encoders.py [--photos 256] [--train-photos 5000] [--threads 2] [--skip-train]

On the same ~300 KB JPEG photos (crops of the real photos scikit-learn ships, enlarged to about 1200×900):

* decode alone (``decode_bytes``: base64 file → 224×224 RGB), one thread and ``--threads`` threads;
* ``ImageEmbedder.forward`` alone on decoded batches of 32, and ``ImageEmbedder.embed`` (decode + forward,
  streamed) on the base64 values, per runtime and precision: "today's path" (torch, bf16 autocast where the CPU
  computes bf16 natively, fp32 elsewhere: what the product ran before the runtime layer), torch fp32, ONNX
  Runtime fp32, OpenVINO fp32 (the default) and OpenVINO bf16; with the minimum and median cosine of each
  runtime's embeddings to torch fp32's;
* the text encoder (MiniLM) per runtime: sentences/s of ``TextEmbedder.embed`` on 1,000 review-like texts;
* a training job's read + embed stage (``Featurizer.ingest`` on a CSV naming ``--train-photos`` image files in
  an images directory, what the ``images`` channel gives the job) for today's path and the default.

Each configuration runs with ``--threads`` compute threads (torch's setting, which the runtimes follow).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def photos(n: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEG files of about 300 KB (1200×900, quality 95), crops of scikit-learn's two sample photos."""
    import sklearn.datasets
    from PIL import Image
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(sklearn.datasets.load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    out = []
    for k in range(n):
        photo = sources[k % 2]
        w, h = photo.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        buffer = io.BytesIO()
        photo.crop((x, y, x + cw, y + ch)).resize((1200, 900), Image.BICUBIC).save(buffer, "JPEG", quality=95)
        out.append(buffer.getvalue())
    return out


def rate(count: int, seconds: list[float]) -> float:
    return round(count / statistics.median(seconds), 1)


def today(native: bool) -> tuple[str, str]:
    return ("torch", "bf16" if native else "fp32")


def use(runtime: str, precision: str) -> None:
    os.environ["MULTIMODAL_ENCODER_RUNTIME"] = runtime
    os.environ["MULTIMODAL_ENCODER_PRECISION"] = precision


def decode_figures(files: list[bytes], threads: int, repeats: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor
    from multimodal.core.images import decode_bytes
    one, many = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for f in files:
            decode_bytes(f)
        one.append(time.perf_counter() - t)
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(decode_bytes, files))
        many.append(time.perf_counter() - t)
    return {"decode_1_thread": rate(len(files), one), f"decode_{threads}_threads": rate(len(files), many)}


def image_figures(configs: list[tuple[str, str]], values: list[str], decoded: np.ndarray, repeats: int) -> list[dict]:
    from multimodal.core.images import ImageEmbedder
    rows, reference = [], None
    for runtime, precision in configs:
        use(runtime, precision)
        embedder = ImageEmbedder("efficientnet_lite0")
        embedder.forward(decoded[:32])  # warm-up (first-call compilation)
        forward, embed = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            out = np.concatenate([embedder.forward(decoded[i:i + 32]) for i in range(0, len(decoded), 32)])
            forward.append(time.perf_counter() - t)
            t = time.perf_counter()
            embedder.embed(values, column="photo_image", row_names=str)
            embed.append(time.perf_counter() - t)
        if (runtime, precision) == ("torch", "fp32"):
            reference = out
        rows.append({"runtime": runtime, "precision": precision, "forward_images_per_s": rate(len(decoded), forward),
                     "embed_images_per_s": rate(len(values), embed), "out": out})
    for row in rows:
        out = row.pop("out")
        cos = np.sum(out * reference, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
        row.update(min_cosine=round(float(cos.min()), 4), median_cosine=round(float(np.median(cos)), 5))
    return rows


def text_figures(configs: list[tuple[str, str]], repeats: int) -> list[dict]:
    from multimodal.core.text import TextEmbedder
    rng = np.random.default_rng(1)
    words = ("the dress fits well, but the \"silky\" fabric pills after one wash; sleeves run long and the zip "
             "broke on day one. lovely colour, true to size, I ordered a medium and returned it").split()
    texts = [" ".join(rng.choice(words, int(rng.integers(5, 150)))) for _ in range(1000)]
    rows = []
    for runtime, precision in configs:
        use(runtime, precision)
        embedder = TextEmbedder("minilm")
        embedder.embed(texts[:64], column="warm-up")
        seconds = []
        for _ in range(repeats):
            t = time.perf_counter()
            embedder.embed(texts, column="review_text")
            seconds.append(time.perf_counter() - t)
        rows.append({"runtime": runtime, "precision": precision, "sentences_per_s": rate(len(texts), seconds),
                     "load_s": round(embedder.load_seconds, 2)})
    return rows


def train_stage(configs: list[tuple[str, str]], n: int, threads: int) -> list[dict]:
    """Featurizer.ingest of a CSV naming ``n`` image files: each configuration in a child process of its own."""
    work = Path(tempfile.mkdtemp(prefix="bench-encoders-"))
    images = work / "images"
    images.mkdir()
    pool = photos(64, seed=7)
    lines = ["ID,photo_image,label"]
    for k in range(n):
        (images / f"p{k}.jpg").write_bytes(pool[k % len(pool)])
        lines.append(f"{k},p{k}.jpg,{k % 3}")
    (work / "train.csv").write_text("\n".join(lines) + "\n")
    rows = []
    for runtime, precision in configs:
        code = (f"import sys, time, torch; sys.path.insert(0, {str(ROOT)!r}); torch.set_num_threads({threads});"
                "import pandas as pd; from multimodal.core.featurize import Featurizer, read_local;"
                "f = Featurizer(image_model='efficientnet_lite0', text_model='ngrams', image_batch_size=32,"
                " text_batch_size=64, bad_images='error', joint_embedding_dims=32);"
                f"t = time.perf_counter(); read_local(f, pd.read_csv({str(work / 'train.csv')!r}, dtype=str,"
                f" chunksize=1000), None, {str(images)!r}); print(time.perf_counter() - t)")
        env = {**os.environ, "MULTIMODAL_ENCODER_RUNTIME": runtime, "MULTIMODAL_ENCODER_PRECISION": precision}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        seconds = float(done.stdout.strip().splitlines()[-1])
        rows.append({"runtime": runtime, "precision": precision, "photos": n, "seconds": round(seconds, 1),
                     "photos_per_s": round(n / seconds, 1)})
    return rows


def markdown(results: dict) -> str:
    today_, threads = tuple(results["today"]), results["threads"]
    base = next(r for r in results["images"] if (r["runtime"], r["precision"]) == today_)
    lines = [f"Machine: {results['cpu']}, {results['cores']} cores, native bf16: {results['native_bf16']}; "
             f"{results['threads']} compute threads; {results['photos']} photos of {results['photo_kb']:.0f} KB on "
             "average.", "",
             f"Decode alone: {results['decode']['decode_1_thread']} images/s on one thread, "
             f"{results['decode'][f'decode_{threads}_threads']} on {threads}.", "",
             "| image encoder runtime | forward images/s | embed (decode + forward) images/s | embed ÷ today's | "
             "min / median cosine to torch fp32 |", "|---|---:|---:|---:|---|"]
    for r in results["images"]:
        name = f"{r['runtime']} {r['precision']}" + (" (today's path)" if (r["runtime"], r["precision"]) == today_
                                                     else "")
        lines.append(f"| {name} | {r['forward_images_per_s']} | {r['embed_images_per_s']} | "
                     f"{r['embed_images_per_s'] / base['embed_images_per_s']:.1f}× | {r['min_cosine']} / "
                     f"{r['median_cosine']} |")
    lines += ["", "| text encoder runtime | sentences/s | load s |", "|---|---:|---:|"]
    lines += [f"| {r['runtime']} {r['precision']} | {r['sentences_per_s']} | {r['load_s']} |" for r in results["text"]]
    if results.get("train"):
        lines += ["", "| training read + embed | photos | seconds | photos/s |", "|---|---:|---:|---:|"]
        lines += [f"| {r['runtime']} {r['precision']} | {r['photos']} | {r['seconds']} | {r['photos_per_s']} |"
                  for r in results["train"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--train-photos", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true", help="leave out the training read + embed stage")
    args = parser.parse_args()
    import torch
    from multimodal.core import runtimes
    from multimodal.core.images import decode_bytes
    torch.set_num_threads(args.threads)
    native = runtimes.bf16_is_native()
    files = photos(args.photos)
    values = [base64.b64encode(f).decode() for f in files]
    decoded = np.stack([decode_bytes(f) for f in files])
    configs = [today(native), ("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
    configs = list(dict.fromkeys(configs))
    results = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "native_bf16": native,
               "threads": args.threads, "photos": len(files), "photo_kb": sum(map(len, files)) / len(files) / 1024,
               "today": today(native)}
    print("decoding…", flush=True)
    results["decode"] = decode_figures(files, args.threads, args.repeats)
    print("image encoders…", flush=True)
    results["images"] = image_figures(configs, values, decoded, args.repeats)
    print("text encoders…", flush=True)
    results["text"] = text_figures([("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
                                    ("openvino", "bf16")], args.repeats)
    if not args.skip_train:
        print(f"training read + embed of {args.train_photos} photos…", flush=True)
        results["train"] = train_stage([today(native), ("openvino", "fp32")], args.train_photos, args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoders.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
