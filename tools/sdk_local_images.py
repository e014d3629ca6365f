#!/usr/bin/env python
"""The README's "Images as files" example, run through the SageMaker Python SDK's own local mode.

Usage (the SDK is not a dependency of the product: give its interpreter)::

    eval "$(tools/docker-up.sh)"
    SDK_PYTHON=$(tools/sdk-venv.sh)   # the SDK pinned in tools/sdk-constraints.txt, and docker-compose
    $SDK_PYTHON tools/sdk_local_images.py --training-image multimodal-ci-training:test \\
        --inference-image multimodal-ci-inference:test [--work /tmp/sdk-local-images]

1. A training job (``Estimator(instance_type="local")``) with a ``train`` channel whose ``photo_image`` values are
   relative paths and an ``images`` channel of JPEG files (``TrainingInput(content_type="application/x-image",
   input_mode="FastFile")``, as the README writes it; local mode mounts every channel as File).
2. A batch transform (``model.transformer(...)``) of rows whose ``photo_image`` values are ``s3://`` URIs, served
   by a local S3 API (moto's server, in a container on the Docker network local mode uses, reached by the model
   through ``AWS_ENDPOINT_URL``) with the bucket on the ``MULTIMODAL_S3_ALLOW`` list.

Offline: fake credentials and a region; nothing leaves this machine's Docker networks. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NETWORK = "sagemaker-local"  # the network the SDK's docker-compose file names (sagemaker/local/image.py)
MOTO = "sdk-local-images-s3"
BUCKET = "catalogue"
FAKE = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True).stdout.strip()


def write_data(work: Path, rows: int) -> tuple[Path, Path, Path, list[str]]:
    """train/train.csv (relative paths), images/ (the channel), test/test.csv (s3:// URIs, no header)."""
    from multimodal.tools.synthetic import as_image_files, make_dataset
    images = work / "images"
    train = as_image_files(make_dataset(rows, seed=71), images)
    test = as_image_files(make_dataset(60, seed=72), images)
    (work / "train").mkdir(parents=True, exist_ok=True)
    (work / "test").mkdir(parents=True, exist_ok=True)
    train.to_csv(work / "train" / "train.csv", index=False)
    uris = test.assign(photo_image=[f"s3://{BUCKET}/{p}" if p else "" for p in test["photo_image"]])
    uris.drop(columns="label").to_csv(work / "test" / "test.csv", index=False, header=False)
    return work / "train", images, work / "test", test["label"].tolist()


def start_s3(image: str, images: Path) -> None:
    """moto's S3 server in a container on the local-mode network (alias ``s3``), the images uploaded to it."""
    site = ROOT / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    docker("rm", "-f", MOTO, check=False)
    if not docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$"):
        docker("network", "create", NETWORK)
    docker("run", "-d", "--name", MOTO, "--network", NETWORK, "--network-alias", "s3", "-p", "127.0.0.1::5000",
           "-v", f"{site}:/moto-site:ro", "-e", "PYTHONPATH=/moto-site", "--entrypoint", "python", image,
           "-m", "moto.server", "-H", "0.0.0.0", "-p", "5000")
    port = docker("port", MOTO, "5000").split(":")[-1]
    import boto3
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **{k.lower(): v for k, v in FAKE.items()
                                                                          if k != "AWS_DEFAULT_REGION"},
                      region_name=FAKE["AWS_DEFAULT_REGION"])
    for _ in range(60):
        try:
            s3.create_bucket(Bucket=BUCKET)
            break
        except Exception:  # noqa: BLE001 - the server is starting
            time.sleep(1)
    for path in images.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, path.relative_to(images).as_posix())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--training-image", required=True)
    parser.add_argument("--inference-image", required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sdk-local-images"))
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--model-data", help="a model.tar.gz URI (file://) from an earlier run: skip training")
    args = parser.parse_args()
    os.environ.update(FAKE)
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.local import LocalSession

    train, images, test, labels = write_data(args.work, args.rows)
    session = LocalSession()
    session.config = {"local": {"local_code": True}}
    role = "arn:aws:iam::111111111111:role/multimodal-local"
    started = time.monotonic()
    if args.model_data:
        from sagemaker.model import Model
        estimator = None
    else:
        estimator = Estimator(image_uri=args.training_image, role=role, instance_count=1, instance_type="local",
                              sagemaker_session=session, output_path=f"file://{args.work / 'output'}",
                              hyperparameters={"quality": "toy", "image_model": "efficientnet_lite0", "n_secs": 60,
                                               "n_folds": 2, "bad_images": "missing"})
        estimator.fit({"train": f"file://{train}",
                       "images": TrainingInput(f"file://{images}", content_type="application/x-image",
                                               input_mode="FastFile")})
    trained = time.monotonic() - started
    try:
        start_s3(args.inference_image, images)
        # local mode passes the session's credentials into the container itself: naming them again here would
        # make docker-compose refuse the service ("environment contains non-unique items")
        env = {"MULTIMODAL_S3_ALLOW": f"s3://{BUCKET}/", "AWS_ENDPOINT_URL": "http://s3:5000",
               "AWS_DEFAULT_REGION": FAKE["AWS_DEFAULT_REGION"]}
        if estimator is None:
            model = Model(image_uri=args.inference_image, model_data=args.model_data, role=role, env=env,
                          sagemaker_session=session)
        else:
            model = estimator.create_model(image_uri=args.inference_image, env=env)
        transformer = model.transformer(instance_count=1, instance_type="local", strategy="MultiRecord",
                                        max_payload=6, assemble_with="Line", accept="text/csv",
                                        output_path=f"file://{args.work / 'predictions'}")
        # logs=False: with logs the SDK reads CloudWatch even in local mode, which fails offline after the job
        transformer.transform(f"file://{test}", content_type="text/csv", split_type="Line", logs=False)
    finally:
        docker("rm", "-f", MOTO, check=False)
    lines = (args.work / "predictions" / "test.csv.out").read_text().splitlines()
    predicted = [line.split(",")[1] for line in lines]
    accuracy = sum(p == t for p, t in zip(predicted, labels)) / len(labels)
    print(json.dumps({"train_rows": args.rows, "training_seconds": round(trained, 1), "predicted_rows": len(lines),
                      "test_rows": len(labels), "accuracy": round(accuracy, 3)}))
    return 0 if len(lines) == len(labels) else 1


if __name__ == "__main__":
    sys.exit(main())
