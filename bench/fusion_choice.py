#!/usr/bin/env python
"""How the fused model is chosen: the network, the weighted ensemble of the experts or their blend, by the old
rule (lower loss on the rows the network early-stops on) and by the new one (5-fold cross-validation over the
out-of-fold rows, the network or the blend only when better by more than one standard error), on the same
experts, scored on test rows.

Usage::

    .venv/bin/python bench/fusion_choice.py --data /tmp/bench-data --datasets films_rating tweets \\
        [--minutes 10] [--quality best] [--max-train-rows 3000] [--max-test-rows 2000] [--seed 0] [--bagged-too] \\
        [--out DIR] [--write-docs]
    .venv/bin/python bench/fusion_choice.py --table DIR/results.jsonl ...   # one table of earlier runs

One product fit per set (``bench/datasets.py --out DIR`` writes them). Every candidate is kept (the estimator
keeps only the chosen one), and each is scored on the test rows with each expert alone, so the table says what
either rule would have given and how far each falls from the best expert (paired standard errors over the
test rows; RMSE's by 1,000 bootstrap resamples). The fusion inputs (out-of-fold and test) are saved to
``DIR/<set>.npz`` for further experiments without refitting the experts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402
    DOCS,
    IMAGE_MODEL,
    N_FOLDS,
    REGRESSION,
    SEED,
    fusion_inputs,
    paired_se,
    problem_type,
    read_split,
)
from scale_out import machine  # noqa: E402

log = logging.getLogger("fusion_choice")


def fit_keeping_both(train, kind: str, minutes: int, quality: str, seed: int, bagged_too: bool = False):
    """The product fitted as usual, with both fusion candidates and the fusion's inputs kept on the side. With
    ``bagged_too``, each expert keeps every AutoGluon model (not only those prediction uses), so that its bagged
    models can be asked as well as the ones ``refit_full`` fitted on all rows (``bagged_inputs``)."""
    from autogluon.tabular import TabularPredictor
    from multimodal.core import selection
    from multimodal.core.estimator import MultimodalEstimator
    kept = {}
    original_clone = TabularPredictor.clone_for_deployment
    if bagged_too:
        TabularPredictor.clone_for_deployment = lambda self, path, **kw: self.clone(path, **kw)
    original_choose, original_fit = selection.choose_fusion, MultimodalEstimator._fit_fusion

    def choose(network, ensemble, *args):
        kept.update(network=network, ensemble=ensemble)
        return original_choose(network, ensemble, *args)

    def fit_fusion(self, split, x, *args):
        kept.update(x=x, y=split.y)
        return original_fit(self, split, x, *args)

    selection.choose_fusion, MultimodalEstimator._fit_fusion = choose, fit_fusion
    try:
        model = MultimodalEstimator(problem_type=REGRESSION if kind == REGRESSION else "auto", n_mins=minutes,
                                    quality=quality, image_model=IMAGE_MODEL, seed=seed, n_folds=N_FOLDS)
        model.fit(train)
    finally:
        selection.choose_fusion, MultimodalEstimator._fit_fusion = original_choose, original_fit
        TabularPredictor.clone_for_deployment = original_clone
    return model, kept


def bagged_inputs(model, test) -> np.ndarray | None:
    """The fusion's inputs for ``test`` from each expert's bagged models instead of its refitted ones (the fit
    must have kept them: ``fit_keeping_both(bagged_too=True)``); None when no expert was refitted."""
    switched = {}
    for expert in model.experts_:
        bagged = expert.predictor.model_refit_map(inverse=True).get(expert.predictor.model_best)
        if bagged:
            switched[expert.name] = expert.predictor.model_best
            expert.predictor.set_model_best(bagged)
            expert._placeholder_output = None
    if not switched:
        return None
    try:
        return fusion_inputs(model, test)[0]
    finally:
        for expert in model.experts_:
            if expert.name in switched:
                expert.predictor.set_model_best(switched[expert.name])
                expert._placeholder_output = None


def row_scores(model, kept: dict, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per test row: correct or not (classes), or the squared error on the target's scale (regression)."""
    from multimodal.core.targets import each_expert_probabilities
    from multimodal.core.selection import Blend
    fusions = {"network": kept["network"], "ensemble": kept["ensemble"],
               "blend": Blend(kept["network"], kept["ensemble"])}
    if model.problem_type_ == REGRESSION:
        outputs = {name: model.target_.predicted(fusion.predict(x)) for name, fusion in fusions.items()}
        outputs.update({e.name: model.target_.on_target_scale(x[:, i]) for i, e in enumerate(model.experts_)})
        return {k: (v - y) ** 2 for k, v in outputs.items()}
    each = each_expert_probabilities(x, [e.classes for e in model.experts_], len(model.classes_))
    outputs = {**{name: fusion.predict(x) for name, fusion in fusions.items()},
               **{e.name: p for e, p in zip(model.experts_, each)}}
    return {k: (v.argmax(axis=1) == y).astype(float) for k, v in outputs.items()}


def score(rows: np.ndarray, regression: bool) -> float:
    return float(np.sqrt(rows.mean())) if regression else float(rows.mean())


def difference(a: np.ndarray, b: np.ndarray, regression: bool) -> tuple[float, float]:
    """score(a) - score(b) and its standard error, paired over the rows (``compare.paired_se``, which gives
    accuracy differences in points: here in fractions, as the scores)."""
    d = score(a, regression) - score(b, regression)
    return d, paired_se(np.array([d]), a, b, regression) / (1 if regression else 100)


def run_set(args: argparse.Namespace, name: str) -> dict:
    kind = problem_type(args.data, name)
    regression = kind == REGRESSION
    train, test = read_split(args.data, name, args.max_train_rows, args.max_test_rows, seed=args.seed)
    started = time.monotonic()
    model, kept = fit_keeping_both(train, kind, args.minutes, args.quality, args.seed, args.bagged_too)
    fit_seconds = time.monotonic() - started
    x_test, y_test = fusion_inputs(model, test)
    x_bagged = bagged_inputs(model, test) if args.bagged_too else None
    np.savez_compressed(args.out / f"{name}.npz", x=kept["x"], y=kept["y"], x_test=x_test, y_test=y_test,
                        **({} if x_bagged is None else {"x_test_bagged": x_bagged}))
    rows = row_scores(model, kept, x_test, y_test)
    choice = model.metrics_["fusion_choice"]
    held_out = choice["validation_loss"]
    old = min(held_out, key=held_out.get)
    experts = [e.name for e in model.experts_]
    sign = -1 if regression else 1  # lower RMSE is better
    best = max(experts, key=lambda e: sign * score(rows[e], regression))
    result = {"dataset": name, "kind": kind, "minutes": args.minutes, "quality": args.quality, "seed": args.seed,
              "train_rows": len(train), "test_rows": len(test), "fit_seconds": round(fit_seconds, 1),
              "scores": {k: score(v, regression) for k, v in rows.items()}, "best_expert": best,
              "old_rule": old, "new_rule": choice["chosen"], "held_out_loss": held_out,
              "cross_validation": choice["cross_validation"], "ensemble_weights": choice["ensemble_weights"]}
    for rule in ("old_rule", "new_rule"):
        result[f"{rule}_minus_best_expert"] = difference(rows[result[rule]], rows[best], regression)
    if x_bagged is not None:  # the same fusions and experts, fed by the bagged models: what refitting changed
        bagged_rows = row_scores(model, kept, x_bagged, y_test)
        result["scores_bagged"] = {k: score(v, regression) for k, v in bagged_rows.items()}
    log.info("%s", json.dumps(result))
    return result


def markdown(results: list[dict]) -> str:
    lines = [f"### Fusion choice: held-out rows against 5-fold cross-validation ({dt.date.today()})", "",
             f"Machine: {machine()}. Scores on the test rows (accuracy; RMSE for regression). Old rule: the lower "
             "loss on the rows the network early-stops on. New rule: of the network and the blend (the mean of the "
             "network's and the ensemble's outputs), the lower cross-validated loss among those lower than the "
             "ensemble's by more than one standard error; else the ensemble.", "",
             "| set (train/test rows) | budget | network | ensemble | blend | best expert | old rule picks | "
             "new rule picks | cross-validated loss network / blend / ensemble (network − ensemble ± se; blend − "
             "ensemble ± se; network − blend ± se) | old − best expert | new − best expert |",
             "|---|---|---:|---:|---:|---|---|---|---|---:|---:|"]
    for r in results:
        s, cv = r["scores"], r["cross_validation"] or {}
        cv_cell = "too few rows"
        if cv:
            versus = cv.get("versus_reference", {"network": cv})  # runs before the blend compared the network only
            versus = [*versus.values(), *cv.get("versus_blend", {}).values()]  # and before network − blend
            cv_cell = (f"{cv['loss']['network']:.4f} / {cv['loss'].get('blend', float('nan')):.4f} / "
                       f"{cv['loss']['ensemble']:.4f} (" + "; ".join(
                           f"{v['difference']:+.4f} ± {v['standard_error']:.4f}" for v in versus) + ")")
        old, new = r["old_rule_minus_best_expert"], r["new_rule_minus_best_expert"]
        lines.append(f"| {r['dataset']} ({r['train_rows']:,}/{r['test_rows']:,}) | {r['minutes']} min "
                     f"{r['quality']} | {s['network']:.4f} | {s['ensemble']:.4f} | {s.get('blend', float('nan')):.4f} "
                     f"| {r['best_expert']} {s[r['best_expert']]:.4f} | {r['old_rule']} | {r['new_rule']} | "
                     f"{cv_cell} | {old[0]:+.4f} ± {old[1]:.4f} | {new[0]:+.4f} ± {new[1]:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--table", nargs="+", type=Path, metavar="JSONL", help="only print the table of these results")
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--quality", default="best")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--max-train-rows", type=int, default=3000)
    parser.add_argument("--max-test-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fusion-choice")
    parser.add_argument("--bagged-too", action="store_true",
                        help="also score every fusion and expert on the experts' bagged models (before refit_full)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.table:
        print(markdown([json.loads(line) for path in args.table for line in path.read_text().splitlines() if line]))
        return 0
    if not (args.data and args.datasets):
        parser.error("--data and --datasets are needed (or --table)")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.datasets:
        results.append(run_set(args, name))
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps(results[-1]) + "\n")
    table = markdown(results)
    print(table)
    if args.write_docs:
        with DOCS.open("a") as f:
            f.write("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
