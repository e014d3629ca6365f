#!/usr/bin/env python
"""A real-time endpoint deployed with the SageMaker Python SDK's local mode, invoked with each content type.

Usage (the SDK is not a dependency of the product: run it with the interpreter ``tools/sdk-venv.sh`` prints)::

    eval "$(tools/docker-up.sh)"
    SDK_PYTHON=$(tools/sdk-venv.sh)
    $SDK_PYTHON tools/sdk_local_endpoint.py --image multimodal-ci-inference:test --model-data /path/model.tar.gz \\
        --rows rows.csv [--port 8080] [--requests 20] [--env NAME=VALUE ...]

``rows.csv`` holds records as ``/invocations`` takes them (no header, no label) with a header line first, so that
the JSON bodies can be keyed by column. Deploys ``Model(...).deploy(instance_type="local")`` exactly as the README
writes it for SageMaker (an ``ml.`` instance type there), sends the first record as ``text/csv``,
``application/jsonlines`` and ``application/json`` (``Accept`` the same), then all records as one CSV request,
``--requests`` times each, and deletes the endpoint. Offline: fake credentials and a region, nothing leaves this
machine. Prints one JSON line: each case's answer (text) and its median and slowest latency in ms, as the SDK's
``predictor.predict`` sees them (HTTP through the SDK's local runtime client, to ``localhost:PORT``).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

FAKE = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ROLE = "arn:aws:iam::111111111111:role/multimodal-local"


def bodies(rows: Path) -> dict[str, tuple[str, bytes]]:
    """Case → (content type, body): the first record in each format, then every record as CSV."""
    reader = csv.reader(io.StringIO(rows.read_text(encoding="utf-8"), newline=""))
    header, records = next(reader), list(reader)
    first = dict(zip(header, records[0]))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(records)
    every = out.getvalue().rstrip("\n").encode()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(records[0])
    return {"1 row, text/csv": ("text/csv", out.getvalue().rstrip("\n").encode()),
            "1 row, application/jsonlines": ("application/jsonlines", json.dumps(first).encode()),
            "1 row, application/json": ("application/json", json.dumps([first]).encode()),
            f"{len(records)} rows, text/csv": ("text/csv", every)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model-data", type=Path, required=True, help="a model.tar.gz (a training job's)")
    parser.add_argument("--rows", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable of the model's environment (the server's settings), repeatable")
    args = parser.parse_args()
    os.environ.update({k: os.environ.get(k, v) for k, v in FAKE.items()})
    from sagemaker.deserializers import BytesDeserializer
    from sagemaker.local import LocalSession
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": args.port}}
    model = Model(image_uri=args.image, model_data=f"file://{args.model_data.resolve()}", role=ROLE,
                  env=dict(item.split("=", 1) for item in args.env), predictor_cls=Predictor, sagemaker_session=session)
    started = time.monotonic()
    predictor = model.deploy(initial_instance_count=1, instance_type="local",
                             serializer=IdentitySerializer("text/csv"), deserializer=BytesDeserializer())
    result: dict = {"deploy_seconds": round(time.monotonic() - started, 1), "cases": {}}
    try:
        for case, (content_type, body) in bodies(args.rows).items():
            times, answer = [], b""
            for _ in range(args.requests):
                began = time.monotonic()
                answer = predictor.predict(body, initial_args={"ContentType": content_type, "Accept": content_type})
                times.append(time.monotonic() - began)
            result["cases"][case] = {"answer": answer.decode(), "p50_ms": round(1000 * statistics.median(times), 1),
                                     "max_ms": round(1000 * max(times), 1)}
    finally:
        predictor.delete_endpoint()
        model.delete_model()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
