"""The `multimodal` command: a thin layer over MultimodalClassifier and the SageMaker tooling."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("multimodal")


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _weights(args: argparse.Namespace) -> int:
    from .images import TORCHVISION_WEIGHTS, fetch_weights
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


def _example(args: argparse.Namespace) -> int:
    """Generate data, train, predict held-out rows and print the accuracy: the product in one minute."""
    import pandas as pd  # noqa: F401  (fail early if the set-up is incomplete)
    from . import MultimodalClassifier
    from .synthetic import make_dataset
    work = Path(args.out or tempfile.mkdtemp(prefix="multimodal-example-"))
    work.mkdir(parents=True, exist_ok=True)
    train, test = make_dataset(args.rows, seed=1), make_dataset(max(args.rows // 3, 50), seed=2)
    train.to_csv(work / "train.csv", index=False)
    test.drop(columns="label").to_csv(work / "test.csv", index=False, header=False)
    log.info("example data in %s: %d training rows, %d held-out rows", work, len(train), len(test))
    started = time.monotonic()
    model = MultimodalClassifier(quality="toy", image_model="efficientnet_lite0", n_mins=args.minutes,
                                 n_folds=3).fit(train)
    model.save(work / "model")
    scores = MultimodalClassifier.load(work / "model").evaluate(test)
    print(f"held-out accuracy {scores['accuracy']:.3f} (fused) vs "
          + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in scores["experts"].items())
          + f"; trained in {time.monotonic() - started:.0f} s; model in {work / 'model'}")
    (work / "scores.json").write_text(json.dumps(scores, indent=2))
    return 0


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

    example = commands.add_parser("example", help="train and evaluate on a small generated data set")
    example.add_argument("--rows", type=int, default=600, help="training rows (default 600)")
    example.add_argument("--minutes", type=int, default=4, help="time budget in minutes (default 4)")
    example.add_argument("--out", help="working directory (default: a new temporary one)")
    example.set_defaults(func=_example)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
