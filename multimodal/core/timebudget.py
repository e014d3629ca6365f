"""The time budget of one ``fit``: how many seconds each stage and each expert gets."""
from __future__ import annotations

import copy
import logging
import time

from .experts import ExpertSpec

log = logging.getLogger(__name__)

MIN_EXPERT_SECONDS = 5.0
MIN_FUSION_SECONDS = 10.0
# Shares of the experts' time: image experts see hundreds to thousands of embedding features and need about
# twice the time of the others; the joint expert sees every column.
EXPERT_TIME_WEIGHT = {"text": 1.0, "num": 1.0, "cat": 1.0, "image": 2.0, "joint": 3.0}


class TimeBudget:
    """The seconds of one ``fit``: embedding first, then the experts in turn, shared by ``EXPERT_TIME_WEIGHT``
    (time one leaves unused passes to the next), with a reserve kept for the fusion network."""

    def __init__(self, seconds: float, spent: float = 0.0) -> None:
        """``spent``: seconds of this budget earlier attempts of the same fit used (checkpoints)."""
        self.total = float(seconds)
        self.started = time.monotonic() - spent
        self.fusion_reserve = min(max(0.1 * self.total, 10.0), 120.0)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.total - self.elapsed()

    def expert_share(self, spec: ExpertSpec, remaining: list[ExpertSpec]) -> float:
        """Seconds for ``spec``, the first of the ``remaining`` experts; at least its minimum (with a warning)."""
        left = self.left() - self.fusion_reserve
        weight = EXPERT_TIME_WEIGHT[spec.modality]
        share = left * weight / sum(EXPERT_TIME_WEIGHT[s.modality] for s in remaining)
        if share < MIN_EXPERT_SECONDS * weight:
            log.warning("time budget nearly spent: %.0f s left for %d expert(s); giving %s the minimum of %.0f s, "
                        "so training will overrun the budget. Raise n_mins/n_hours.", max(left, 0), len(remaining),
                        spec.name, MIN_EXPERT_SECONDS * weight)
            share = MIN_EXPERT_SECONDS * weight
        return share

    def reserving(self, seconds: float) -> "TimeBudget":
        """The same budget (same clock) with ``seconds`` kept for the fusion instead of its reserve."""
        other = copy.copy(self)
        other.fusion_reserve = float(seconds)
        return other

    def fusion_seconds(self) -> float:
        """What is left, but at least the few seconds the fusion network needs (it would stop after an epoch)."""
        return max(self.left(), MIN_FUSION_SECONDS)
