"""What the time left after the experts buys (the ``use_leftover_time`` hyperparameter).

At quality ``toy`` AutoGluon's models are tiny (10 boosting rounds, 5 epochs) and the experts end long before
their shares: on 3,000 rows a 4-minute fit used to end after 20-130 s. The joint expert, which sees every column,
is then fitted again at a stronger quality with the time left, and whichever of the two joint experts has the
lower out-of-fold loss is kept: both losses are on the same rows, out of fold, so the choice is honest, and the
fusion is then fitted on the outputs of the one kept. The per-modality experts stay as they are: the fusion
learns what they add over the joint expert, and the joint expert is the one that gains most from stronger
models (at ``best`` it carries the fused model alone; docs/benchmarks.md).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from .experts import Expert, ExpertJob, ExpertSpec
from .selection import loss
from .targets import Target
from .timebudget import TimeBudget
from .views import JOINT

log = logging.getLogger(__name__)

# The quality the leftover buys, by the quality asked for. Only toy: at light and above AutoGluon's models fill
# their shares (a light fit of 3,000 rows used all of 4 minutes).
STRONGER_QUALITY = {"toy": "light"}
# Fewer seconds than this would not buy a bagged light model of the joint expert's width.
MIN_SECONDS = 60.0
# The fusion keeps this many times its reserve after the leftover's fit: its cross-validated choice fits six
# networks, which with the leftover unused had all the time they wanted.
FUSION_RESERVES = 2.0

Fitted = list[tuple[Expert, np.ndarray]]
Options = Callable[[ExpertSpec], dict[str, Any]]
Fit = Callable[..., tuple[Fitted, list[str | None]]]


def out_of_fold_loss(oof: np.ndarray, values: np.ndarray, classes: list[int], target: Target) -> float:
    """An expert's mean out-of-fold loss on its own target ``values`` (``selection.loss``: the cross-entropy of its
    probabilities over its ``classes``, the insufficient information class included, each row's class looked up
    among them; or the squared error of a regressor's predictions)."""
    return loss(oof, np.searchsorted(classes, values) if classes else values, target)


def spend(jobs: list[ExpertJob], results: Fitted, keys: list[str | None], target: Target, budget: TimeBudget,
          options: Options, fit: Fit) -> tuple[Fitted, list[str | None], dict | None]:
    """The joint expert fitted again at a stronger quality when the budget leaves at least ``MIN_SECONDS`` for it →
    (the experts, their checkpoint keys, a report for ``metrics_["leftover"]``; None when nothing was done).
    ``options(spec)``: ``Expert.fit``'s keyword arguments (its ``quality`` the one asked for); ``fit(jobs, *,
    options, budget, stage)`` fits experts → ((expert, out-of-fold outputs) per job, their checkpoint keys)."""
    joint = next((i for i, job in enumerate(jobs) if job.spec.modality == JOINT), None)
    quality = options(jobs[0].spec)["quality"]
    stronger = STRONGER_QUALITY.get(quality)
    held = budget.reserving(FUSION_RESERVES * budget.fusion_reserve)
    spare = held.left() - held.fusion_reserve
    if joint is None or stronger is None or spare < MIN_SECONDS:
        return results, keys, None
    log.info("the experts at quality %s ended with %.0f s of the budget to spare: fitting the joint expert again "
             "at quality %s (use_leftover_time)", quality, spare, stronger)
    (again,), (key,) = fit([jobs[joint]], options=lambda spec: {**options(spec), "quality": stronger}, budget=held,
                           stage="leftover")
    values = jobs[joint].target
    before, after = (out_of_fold_loss(oof, values, expert.classes, target) for expert, oof in (results[joint], again))
    kept = stronger if after < before else quality
    log.info("joint expert: out-of-fold %s %.4f at quality %s, %.4f at %s: keeping the %s one",
             "log-loss" if again[0].classes else "squared error", before, quality, after, stronger, kept)
    report = {"seconds": round(spare, 1), "quality": stronger, "kept": kept,
              "out_of_fold_loss": {quality: round(before, 6), stronger: round(after, 6)}}
    if kept == quality:
        return results, keys, report
    return [*results[:joint], again, *results[joint + 1:]], [*keys[:joint], key, *keys[joint + 1:]], report
