#!/usr/bin/env python
"""How much an expert's out-of-fold outputs flatter it: the bagged AutoGluon predictor an expert is, fitted on one
modality's columns of a regression set, its out-of-fold RMSE against its RMSE on the test rows, for the weighted
ensemble AutoGluon puts on top of its models (what the fusion learns from), for that ensemble's weights fitted
out of fold (cross-fitted: each fifth of the rows weighted by a selection on the other four fifths), and for the
single model with the best out-of-fold score.

Usage::

    .venv/bin/python bench/expert_oof_optimism.py --data /tmp/bench-data --dataset films_rating \\
        [--suffix _text] [--seconds 90] [--seed 1] [--max-train-rows 3000] [--max-test-rows 2000]

The question: the weighted ensemble's weights are chosen on the very rows whose out-of-fold outputs it then
reports, so an expert with little signal could pick the models that fit those rows by chance, and the fusion
would trust it more than its test outputs deserve. On films_rating's film titles it did not (docs/benchmarks.md:
cross-fitted weights changed the out-of-fold RMSE by +0.001). The cross-fitted figure is exposed to a model whose
out-of-fold outputs are wild on one fold only: on films_rating's categories one NeuralNetTorch bag predicted ~9.9
for a fold's rows (out-of-fold RMSE 1.94) while leading on the other four, so the fold that did not choose its
weights got it (cross-fitted 1.605 against 1.310). One JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import regression_target, read_split  # noqa: E402

FOLDS = 5
STEPS = 25  # AutoGluon's WeightedEnsemble default


def cross_fitted(oof: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Each row's ensemble output from weights selected (the fusion's ``WeightedEnsemble``: Caruana's forward
    selection for the squared error) on the other folds' rows."""
    from sklearn.model_selection import KFold

    from multimodal.core.selection import WeightedEnsemble
    from multimodal.core.targets import NumberTarget
    layout, target = [[] for _ in range(oof.shape[1])], NumberTarget(0.0, 1.0)
    out = np.empty(len(y))
    for fit_rows, rows in KFold(FOLDS, shuffle=True, random_state=seed).split(oof):
        ensemble = WeightedEnsemble.fit(oof[fit_rows], y[fit_rows], layout, target, iterations=STEPS)
        out[rows] = ensemble.predict(oof[rows])[:, 0]
    return out


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--suffix", default="_text", help="the modality's column suffix; 'all' for every column")
    parser.add_argument("--seconds", type=float, default=90.0, help="AutoGluon's time limit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-train-rows", type=int, default=3000)
    parser.add_argument("--max-test-rows", type=int, default=2000)
    args = parser.parse_args()
    from autogluon.tabular import TabularPredictor

    from multimodal.core.experts import QUALITY, feature_metadata, hyperparameters_for
    train, test = read_split(args.data, args.dataset, args.max_train_rows, args.max_test_rows, seed=args.seed)
    columns = [c for c in train.columns if c not in ("ID", "label") and (args.suffix == "all" or
                                                                          c.endswith(args.suffix))]
    frame = train[columns].copy()
    for c in columns:  # numbers as numbers (missing as NaN): the expert's own imputation does not matter here
        if c.endswith("_num"):
            frame[c] = frame[c].replace("", np.nan).astype(float)
            test[c] = test[c].replace("", np.nan).astype(float)
    y, y_test = regression_target(train), regression_target(test)
    text = [c for c in columns if c.endswith("_text")]
    with tempfile.TemporaryDirectory() as work:
        predictor = TabularPredictor(label="y", problem_type="regression", eval_metric="root_mean_squared_error",
                                     path=work, verbosity=0)
        started = time.monotonic()
        predictor.fit(frame.assign(y=y), time_limit=args.seconds, hyperparameters=hyperparameters_for("best"),
                      num_bag_folds=QUALITY["best"][2], num_bag_sets=1, num_stack_levels=0, dynamic_stacking=False,
                      feature_metadata=feature_metadata(frame, text), calibrate=False,
                      ag_args_ensemble={"model_random_seed": args.seed})
        seconds = time.monotonic() - started
        board = predictor.leaderboard(silent=True)
        base = list(board.loc[board["stack_level"] == 1, "model"])
        oof = np.column_stack([predictor.predict_oof(model=m).to_numpy() for m in base])
        single = base[int(np.argmin([rmse(oof[:, i], y) for i in range(len(base))]))]
        features = test[columns]
        # the cross-fitted weights change the out-of-fold outputs only: the test rows get AutoGluon's ensemble
        ensemble_test_rmse = rmse(predictor.predict(features).to_numpy(), y_test)
        result = {
            "dataset": args.dataset, "columns": columns, "seed": args.seed, "fit_seconds": round(seconds, 1),
            "models": len(base), "ensemble": predictor.model_best,
            "weighted_ensemble": {"oof_rmse": rmse(predictor.predict_oof().to_numpy(), y),
                                  "test_rmse": ensemble_test_rmse},
            "cross_fitted_ensemble": {"oof_rmse": rmse(cross_fitted(oof, y, args.seed), y),
                                      "test_rmse": ensemble_test_rmse},
            "best_single_model": {"model": single, "oof_rmse": rmse(oof[:, base.index(single)], y),
                                  "test_rmse": rmse(predictor.predict(features, model=single).to_numpy(), y_test)},
            "predict_the_mean": {"oof_rmse": rmse(np.full(len(y), y.mean()), y),
                                 "test_rmse": rmse(np.full(len(y_test), y.mean()), y_test)},
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
