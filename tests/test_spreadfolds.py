"""The fold queue of a bagged expert on a cluster (``multimodal.core.spreadfolds.FoldQueue``): which folds its
process fits and which it hands to other hosts, and when; without Ray (tests/test_cluster.py runs it on one)."""
from __future__ import annotations

import threading
import time

import pytest

from multimodal.core import spreadfolds
from multimodal.core.spreadfolds import FoldQueue


class Folds:
    """``start`` and ``here`` for a queue: records (task id, "here" or "elsewhere") in the order folds start; a
    fold fitted here takes ``seconds_here``; handing one over raises when ``handing_fails``."""

    def __init__(self, seconds_here: float = 0.0, handing_fails: bool = False) -> None:
        self.seconds_here, self.handing_fails = seconds_here, handing_fails
        self.started: list[tuple[int, str]] = []
        self._local = threading.local()

    def here(self, value: bool) -> None:
        self._local.here = value

    def start(self, task_id: int, fold_ctx: dict) -> None:
        where = "here" if getattr(self._local, "here", False) else "elsewhere"
        self.started.append((task_id, where))
        if where == "here":
            time.sleep(self.seconds_here)
        elif self.handing_fails:
            raise RuntimeError("the fold's Ray task could not be submitted")

    def where(self) -> dict[int, str]:
        return dict(self.started)


def _free_once_under_way(cpus: int) -> int:
    """No other host free as a bag starts; one free whenever the queue's own thread asks, later."""
    return int(threading.current_thread().name == "multimodal-fold-queue")


def _queue(n: int) -> FoldQueue:
    return FoldQueue([(i, {"fold": i}) for i in range(n)], cpus=1)


def test_while_no_other_host_is_free_every_fold_is_fitted_here_in_order(monkeypatch):
    monkeypatch.setattr(spreadfolds, "_folds_free_elsewhere", lambda cpus: 0)
    folds = Folds()
    _queue(5).run(folds.start, folds.here)
    assert folds.started == [(i, "here") for i in range(5)]


def test_hosts_free_as_the_bag_starts_take_folds_from_the_back_and_the_first_stays_here(monkeypatch):
    monkeypatch.setattr(spreadfolds, "_folds_free_elsewhere", lambda cpus: 8)
    folds = Folds()
    _queue(3).run(folds.start, folds.here)
    assert folds.started == [(2, "elsewhere"), (1, "elsewhere"), (0, "here")]


def test_a_host_that_frees_up_mid_bag_takes_the_folds_still_waiting_one_at_a_time(monkeypatch):
    # Fold 0 runs here 0-1 s; the freed host takes fold 3 at the first check (0.25 s) and, once its count of
    # free CPUs has settled (1 s later), fold 2; this process goes on from fold 0 to fold 1
    monkeypatch.setattr(spreadfolds, "_folds_free_elsewhere", _free_once_under_way)
    folds = Folds(seconds_here=1.0)
    _queue(4).run(folds.start, folds.here)
    assert folds.where() == {0: "here", 1: "here", 2: "elsewhere", 3: "elsewhere"}
    assert folds.started[:2] == [(0, "here"), (3, "elsewhere")]


def test_a_fold_that_cannot_be_handed_over_stops_the_bag_with_the_reason(monkeypatch):
    monkeypatch.setattr(spreadfolds, "_folds_free_elsewhere", _free_once_under_way)
    folds = Folds(seconds_here=1.0, handing_fails=True)
    with pytest.raises(RuntimeError, match="could not be submitted"):
        _queue(6).run(folds.start, folds.here)
    assert [where for _, where in folds.started].count("here") == 1  # no fold started here after the failure
