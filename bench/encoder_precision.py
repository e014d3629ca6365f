#!/usr/bin/env python
"""How far OpenVINO's image encoder can go below fp32 and keep torch fp32's embeddings (issue 21): prints a
markdown table and writes bench/results/encoder_precision.json.

Usage::

    .venv/bin/python bench/encoder_precision.py [--threads 2] [--repeats 3]

EfficientNet-Lite0's ONNX export (the one the product runs), compiled by OpenVINO on this CPU:

* fp32 and bf16 (``INFERENCE_PRECISION_HINT``), one stream with all threads, batches of 32 (the product's way);
* bf16 with a group of convolutions kept in fp32: the first or last k, the depthwise, expand or project
  convolutions, the stem and head. OpenVINO's CPU plugin keeps a node's own precision when its IR carries the
  ``DisablePrecisionConversion`` runtime attribute; the script writes it into the IR's XML. Some groups make
  OpenVINO fail at inference ("object is not initialized"); those rows say so;
* fp32 with two streams (``PERFORMANCE_HINT=THROUGHPUT``) and smaller batches: whether another schedule lifts
  fp32's forward rate.

Embeddings are compared with torch fp32's on two sets of real photos: the 32 enlarged crops of
``tests/test_runtimes.py`` (the tolerance's test) and the 256 photos of ``bench/encoders.py``. A row is within
the issue's tolerance when its minimum cosine over both is at least 0.995. Forward rates are on the 256 photos.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from encoders import cpu_model, photos  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from test_runtimes import cosines, enlarged_crops  # noqa: E402  (the tolerance's test photos and measure)

TOLERANCE = 0.995


def ir_with_fp32_convolutions(source: Path, keep: list[str], directory: Path, name: str) -> Path:
    """A copy of the IR ``source`` whose convolutions named in ``keep`` carry DisablePrecisionConversion."""
    tree = ET.parse(source)
    for layer in tree.getroot().find("layers"):
        if layer.get("name") in keep:
            info = layer.find("rt_info")
            info = ET.SubElement(layer, "rt_info") if info is None else info
            ET.SubElement(info, "attribute", {"name": "DisablePrecisionConversion", "version": "0",
                                              "value": "dynamic:f16"})
    target = directory / f"{name}.xml"
    tree.write(target)
    shutil.copy(source.with_suffix(".bin"), target.with_suffix(".bin"))
    return target


def convolution_groups(ir: Path) -> dict[str, list[str]]:
    convs = [layer.get("name") for layer in ET.parse(ir).getroot().find("layers")
             if layer.get("type") in ("Convolution", "GroupConvolution")]
    groups = {f"first {k}": convs[:k] for k in (1, 2, 4, 8)}
    groups.update({f"last {k}": convs[-k:] for k in (1, 2, 4, 8)})
    for part in ("depthwise", "expand", "project"):
        groups[f"every {part} convolution"] = [c for c in convs if f"_{part}_conv" in c]
    groups["stem and head"] = [c for c in convs if "_conv_stem" in c or "_conv_head" in c]
    return groups


def measure(core, model_path: Path, sets: dict, config: dict, batch: int, streams: int, repeats: int) -> dict:
    import openvino
    compiled = core.compile_model(str(model_path), "CPU", config)
    queue = openvino.AsyncInferQueue(compiled, streams)
    outputs: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, i: outputs.__setitem__(i, np.array(request.get_output_tensor(0).data)))

    def run(images: np.ndarray) -> np.ndarray:
        outputs.clear()
        for i in range(0, len(images), batch):
            queue.start_async({"images": images[i:i + batch]}, i)
        queue.wait_all()
        return np.concatenate([outputs[i] for i in sorted(outputs)])

    row = {}
    for name, (images, reference) in sets.items():
        cos = cosines(run(images), reference)
        row[name] = {"min_cosine": round(float(cos.min()), 5), "median_cosine": round(float(np.median(cos)), 5)}
    images = sets["bench photos"][0]
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(images)
        seconds.append(time.perf_counter() - started)
    row["forward_images_per_s"] = round(len(images) / statistics.median(seconds), 1)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from multimodal.core import images, runtimes
    spec = images.ENCODERS["efficientnet_lite0"]
    module = images.image_module(spec).eval()
    sets = {}
    for name, files in (("test photos", enlarged_crops()), ("bench photos", photos(256))):
        decoded = np.stack([images.decode_bytes(f) for f in files])
        with torch.no_grad():
            sets[name] = (decoded, module(torch.from_numpy(decoded)).numpy())
    ov = runtimes.import_openvino()
    core = ov.Core()
    work = Path(tempfile.mkdtemp(prefix="encoder-precision-"))
    ir = work / "encoder.xml"
    ov.save_model(core.read_model(str(runtimes.exported(images.image_graph(spec)))), str(ir), compress_to_fp16=False)
    one_stream = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
    plans = [("fp32", ir, {**one_stream, "INFERENCE_PRECISION_HINT": "f32"}, 32, 1),
             ("bf16", ir, {**one_stream, "INFERENCE_PRECISION_HINT": "bf16"}, 32, 1)]
    for k, (group, keep) in enumerate(convolution_groups(ir).items()):
        plans.append((f"bf16, fp32 kept in {group} ({len(keep)})", ir_with_fp32_convolutions(ir, keep, work, f"g{k}"),
                      {**one_stream, "INFERENCE_PRECISION_HINT": "bf16"}, 32, 1))
    for batch in (1, 8, 32):
        plans.append((f"fp32, 2 streams, batches of {batch}", ir,
                      {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2,
                       "INFERENCE_PRECISION_HINT": "f32"}, batch, 2))
    rows = []
    for label, path, config, batch, streams in plans:
        try:
            rows.append({"plan": label, **measure(core, path, sets, config, batch, streams, args.repeats)})
        except RuntimeError as exc:  # OpenVINO refuses some precision groups at inference
            rows.append({"plan": label, "error": str(exc).strip().splitlines()[-1][:160]})
        print(json.dumps(rows[-1]), flush=True)
    results = {"cpu": cpu_model(), "openvino": ov.__version__, "threads": args.threads, "rows": rows}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "encoder_precision.json").write_text(json.dumps(results, indent=2))
    print(f"\n{results['cpu']}, OpenVINO {results['openvino']}, {args.threads} threads\n")
    print("| plan | forward images/s | min cosine, test photos | min cosine, bench photos | within 0.995 |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['plan']} | failed: {r['error']} | | | |")
            continue
        low = min(r["test photos"]["min_cosine"], r["bench photos"]["min_cosine"])
        print(f"| {r['plan']} | {r['forward_images_per_s']} | {r['test photos']['min_cosine']} | "
              f"{r['bench photos']['min_cosine']} | {'yes' if low >= TOLERANCE else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
