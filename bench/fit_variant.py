#!/usr/bin/env python
"""One product fit with chosen hyperparameters or an ablation, scored on the test rows: one JSON line.

Usage::

    .venv/bin/python bench/fit_variant.py --data /tmp/bench-data --dataset tweets --minutes 3 --quality toy \\
        [--hp parallel_folds=true ...] [--ablate missing-fractions|missing-indicators ...] \\
        [--expert-stack-levels 1] [--joint-weight 12] [--joint-metric accuracy] [--portfolio zeroshot] \\
        [--extra-model REALMLP [--extra-model-modality image] [--extra-model-priority 1000]] [--seed 0] \\
        [--max-train-rows 3000] [--max-test-rows 2000] [--rows]

Run variants one after another (never side by side: they would share the cores) and compare their lines.
docs/benchmarks.md uses it for fit time with and without Ray and for the missing-fraction / indicator ablations.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import IMAGE_MODEL, N_FOLDS, REGRESSION, SEED, problem_type, product_rows, read_split  # noqa: E402


def ablate(names: list[str]) -> None:
    import multimodal.core.estimator as classifier
    if "missing-fractions" in names:
        classifier.FUSION_MISSING_FRACTIONS = False
        classifier.missing_fractions = lambda features, specs: np.zeros((len(features.values), 0), np.float32)
    if "missing-indicators" in names:
        classifier.missing_indicators = lambda schema, features: []


def add_models(families: list[str], modalities: list[str], priority: int | None = None) -> None:
    """Add AutoGluon's default configuration of ``families`` to the experts of ``modalities`` (all if empty), with
    AutoGluon's fit ``priority`` when given (higher fits earlier: a cheap model given a high one is fitted before
    the portfolio can spend the expert's share)."""
    added = {m: [{"ag_args": {"priority": priority}} if priority is not None else {}] for m in families}
    import multimodal.core.experts as experts
    original = experts.hyperparameters_for

    def hyperparameters_for(quality: str, modality: str | None = None) -> dict:
        config = original(quality, modality)
        if not modalities or modality in modalities:
            config = {**config, **added}
        return config
    experts.hyperparameters_for = hyperparameters_for


def joint_metric(metric: str) -> None:
    """Fit the joint expert's AutoGluon predictor for ``metric`` instead of log-loss (classification only): what
    ``presets="best_quality"`` optimises by default is accuracy, which selects and weights other models."""
    import multimodal.core.experts as experts
    original_fit, original_new = experts.Expert.fit.__func__, experts.Expert._new_predictor

    def for_metric(work: Path, classes: list[int]):
        predictor = original_new(work, classes)
        if classes:
            from autogluon.tabular import TabularPredictor
            predictor = TabularPredictor(label=experts.TARGET, problem_type=predictor.problem_type,
                                         eval_metric=metric, path=str(work), verbosity=1)
        return predictor

    def fit(cls, spec, *args, **kwargs):
        if spec.name == "joint":
            cls._new_predictor = staticmethod(for_metric)
        try:
            return original_fit(cls, spec, *args, **kwargs)
        finally:
            cls._new_predictor = staticmethod(original_new)
    experts.Expert.fit = classmethod(fit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--minutes", type=int, default=4)
    parser.add_argument("--quality", default="toy")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--ablate", action="append", default=[], choices=["missing-fractions", "missing-indicators"])
    parser.add_argument("--force-fractions", action="store_true", help="give the fusion the missing fractions")
    parser.add_argument("--expert-stack-levels", type=int, metavar="N",
                        help="N stacking levels inside every expert (the quality's own otherwise)")
    parser.add_argument("--seed", type=int, default=SEED, help="rows sampled and the model seeded by it")
    parser.add_argument("--joint-weight", type=float, metavar="W",
                        help="the joint expert's weight in the time budget's shares (EXPERT_TIME_WEIGHT)")
    parser.add_argument("--extra-model", action="append", default=[], metavar="FAMILY",
                        help="add AutoGluon's default configuration of this model family (e.g. REALMLP, TABM) to "
                             "every expert's hyperparameters")
    parser.add_argument("--extra-model-modality", action="append", default=[], metavar="MODALITY",
                        choices=["text", "num", "cat", "image", "joint"],
                        help="add the --extra-model families only to the experts of these modalities")
    parser.add_argument("--extra-model-priority", type=int, metavar="P",
                        help="AutoGluon's fit priority of the added models (e.g. 1000: before the portfolio)")
    parser.add_argument("--portfolio", metavar="NAME",
                        help="the AutoGluon hyperparameter configuration the experts use at --quality (e.g. zeroshot, "
                             "what presets='best_quality' fits) instead of the product's")
    parser.add_argument("--joint-metric", metavar="METRIC",
                        help="the joint expert's AutoGluon eval_metric (e.g. accuracy) instead of log_loss")
    parser.add_argument("--rows", action="store_true",
                        help="add each test row's score (rows_scored, as compare.py records them): differences to "
                             "a compare.py run on the same seed and rows can then be paired over the rows")
    parser.add_argument("--max-train-rows", type=int)
    parser.add_argument("--max-test-rows", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from multimodal import MultimodalClassifier, MultimodalRegressor
    ablate(args.ablate)
    if args.force_fractions:
        import multimodal.core.estimator as classifier
        classifier.FUSION_MISSING_FRACTIONS = True
    if args.joint_weight is not None:
        from multimodal.core.timebudget import EXPERT_TIME_WEIGHT
        EXPERT_TIME_WEIGHT["joint"] = args.joint_weight
    if args.expert_stack_levels is not None:
        from multimodal.core.experts import QUALITY
        preset, _, folds = QUALITY[args.quality]
        QUALITY[args.quality] = (preset, args.expert_stack_levels, folds)
    if args.extra_model:
        from multimodal.core.images import import_torchvision
        import_torchvision()  # RealMLP's pytabkit imports torchvision, whose PyPI wheel needs the workaround here
        add_models(args.extra_model, args.extra_model_modality, args.extra_model_priority)
    if args.joint_metric:
        joint_metric(args.joint_metric)
    if args.portfolio:
        from multimodal.core.experts import QUALITY
        _, levels, folds = QUALITY[args.quality]
        QUALITY[args.quality] = (args.portfolio, levels, folds)
    train, test = read_split(args.data, args.dataset, args.max_train_rows, args.max_test_rows, seed=args.seed)
    params = dict(pair.split("=", 1) for pair in args.hp)
    estimator = MultimodalRegressor if problem_type(args.data, args.dataset) == REGRESSION else MultimodalClassifier
    model = estimator(n_mins=args.minutes, quality=args.quality, image_model=IMAGE_MODEL, seed=args.seed,
                                 n_folds=N_FOLDS, **params)
    started = time.monotonic()
    model.fit(train)
    fit_seconds = time.monotonic() - started
    scores = model.evaluate(test)
    headline = {k: v for k, v in scores.items() if isinstance(v, float)}  # accuracy/log_loss or rmse/mae/r2
    primary = "accuracy" if "accuracy" in headline else "rmse"
    print(json.dumps({"dataset": args.dataset, "seed": args.seed, "hyperparameters": params, "ablate": args.ablate,
                      "expert_stack_levels": args.expert_stack_levels, "joint_weight": args.joint_weight,
                      "joint_metric": args.joint_metric, "portfolio": args.portfolio,
                      "extra_models": args.extra_model,
                      "extra_model_modalities": args.extra_model_modality,
                      "extra_model_priority": args.extra_model_priority,
                      "fusion_choice": model.metrics_["fusion_choice"],
                      "fusion_missing_fractions": model.fusion_missing_inputs_, **headline,
                      "fit_seconds": round(fit_seconds, 1),
                      "timings_seconds": model.metrics_["timings_seconds"],
                      "experts": {k: round(v[primary], 4) for k, v in scores["experts"].items()},
                      # the three best models of each expert on its out-of-fold rows: shows whether an added
                      # model family was fitted at all and whether it led
                      "expert_models": {e.name: list(e.leaderboard["model"][:3]) for e in model.experts_
                                        if getattr(e, "leaderboard", None) is not None},
                      **({"rows_scored": product_rows(model, test)} if args.rows else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
