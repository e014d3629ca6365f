"""The fold queues of an expert's bagged models on a cluster (``multimodal.core.foldpool``): which folds its
process fits and which it hands to other hosts, and when, one model after another or side by side
(``multimodal.core.sidebyside``); without Ray (tests/test_cluster.py runs them on one)."""
from __future__ import annotations

import threading
import time

import pytest

from multimodal.core import foldpool, sidebyside
from multimodal.core.foldpool import FoldQueue


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


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    """Each test's bags in a pool of their own: the process's pool remembers when it last handed a fold over."""
    monkeypatch.setattr(foldpool, "POOL", foldpool.FoldPool())


def _free_once_under_way(cpus: int) -> int:
    """No other host free as a bag starts; one free whenever the queue's own thread asks, later."""
    return int(threading.current_thread().name == "multimodal-fold-queue")


def _queue(n: int) -> FoldQueue:
    return FoldQueue([(i, {"fold": i}) for i in range(n)], cpus=1)


def test_while_no_other_host_is_free_every_fold_is_fitted_here_in_order(monkeypatch):
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", lambda cpus: 0)
    folds = Folds()
    _queue(5).run(folds.start, folds.here)
    assert folds.started == [(i, "here") for i in range(5)]


def test_hosts_free_as_the_bag_starts_take_folds_from_the_back_and_the_first_stays_here(monkeypatch):
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", lambda cpus: 8)
    folds = Folds()
    _queue(3).run(folds.start, folds.here)
    assert folds.started == [(2, "elsewhere"), (1, "elsewhere"), (0, "here")]


def test_a_host_that_frees_up_mid_bag_takes_the_folds_still_waiting_one_at_a_time(monkeypatch):
    # Fold 0 runs here 0-1 s; the freed host takes fold 3 at the first check (0.25 s) and, once its count of
    # free CPUs has settled (1 s later), fold 2; this process goes on from fold 0 to fold 1
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", _free_once_under_way)
    folds = Folds(seconds_here=1.0)
    _queue(4).run(folds.start, folds.here)
    assert folds.where() == {0: "here", 1: "here", 2: "elsewhere", 3: "elsewhere"}
    assert folds.started[:2] == [(0, "here"), (3, "elsewhere")]


def test_a_fold_that_cannot_be_handed_over_stops_the_bag_with_the_reason(monkeypatch):
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", _free_once_under_way)
    folds = Folds(seconds_here=1.0, handing_fails=True)
    with pytest.raises(RuntimeError, match="could not be submitted"):
        _queue(6).run(folds.start, folds.here)
    assert [where for _, where in folds.started].count("here") == 1  # no fold started here after the failure


def _run_side_by_side(queues: list[FoldQueue], folds: Folds, in_order: bool = True) -> None:
    """Each queue's ``run`` in a thread of its own, as AutoGluon's trainer fits bags side by side; with
    ``in_order`` each starts once the one before it is fitting a fold here."""
    threads = []
    for queue in queues:
        fitting_before = len([f for f in folds.started if f[1] == "here"])
        threads.append(threading.Thread(target=queue.run, args=(folds.start, folds.here)))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while in_order and len(folds.started) == fitting_before and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(10)


def test_bags_side_by_side_fit_here_one_fold_at_a_time_the_lower_ranked_bag_first(monkeypatch):
    # The bag ranked 1 opens its queue first; still, once the bag ranked 0 has opened its own, this process fits
    # the folds of bag 0 before the ones of bag 1, and never two at once
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", lambda cpus: 0)
    running, overlapped = [], []

    class Timed(Folds):
        def start(self, task_id: int, fold_ctx: dict) -> None:
            overlapped.append(bool(running))
            running.append(task_id)
            super().start(task_id, fold_ctx)
            running.remove(task_id)

    folds = Timed(seconds_here=0.2)
    first = FoldQueue([(10 + i, {}) for i in range(3)], cpus=1, rank=1)
    second = FoldQueue([(i, {}) for i in range(3)], cpus=1, rank=0)
    _run_side_by_side([first, second], folds)
    assert folds.started == [(10, "here"), (0, "here"), (1, "here"), (2, "here"), (11, "here"), (12, "here")]
    assert not any(overlapped)


def test_a_host_left_idle_by_a_bags_last_fold_takes_a_fold_of_the_next_bag(monkeypatch):
    # Bag 0's last fold runs here (1 s); the host that frees up meanwhile takes the fold at the back of bag 1
    # rather than waiting for bag 0 to end, and this process goes on with bag 1's front fold
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", _free_once_under_way)
    folds = Folds(seconds_here=1.0)
    last = FoldQueue([(0, {})], cpus=1, rank=0)
    following = FoldQueue([(10 + i, {}) for i in range(3)], cpus=1, rank=1)
    _run_side_by_side([last, following], folds)
    assert folds.started[:3] == [(0, "here"), (12, "elsewhere"), (10, "here")]
    assert folds.where() == {0: "here", 10: "here", 11: "elsewhere", 12: "elsewhere"}


def test_a_bag_fitted_in_order_waits_for_the_lower_ranked_queues_turn(monkeypatch):
    # A bag whose folds AutoGluon fits itself, one after another (``fitting_here`` without a queue), takes this
    # process's turn only when no queue ranked lower has folds waiting
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", lambda cpus: 0)
    folds = Folds(seconds_here=0.2)
    order = []
    queue = FoldQueue([(i, {}) for i in range(2)], cpus=1, rank=0)

    def in_order_bag() -> None:
        for _ in range(2):
            with foldpool.POOL.fitting_here(rank=1):
                order.append("in-order bag")
                time.sleep(0.1)

    def queued_bag() -> None:
        queue.run(lambda task_id, ctx: (order.append(f"queued fold {task_id}"), time.sleep(0.2)), folds.here)

    threads = [threading.Thread(target=queued_bag)]
    threads[0].start()
    time.sleep(0.05)
    threads.append(threading.Thread(target=in_order_bag))
    threads[1].start()
    for thread in threads:
        thread.join(10)
    assert order == ["queued fold 0", "queued fold 1", "in-order bag", "in-order bag"]


class Refs(Folds):
    """``Folds`` whose handed-over folds return a task ref, as the Ray strategy's ``start`` does."""

    def start(self, task_id: int, fold_ctx: dict):
        super().start(task_id, fold_ctx)
        return None if self.started[-1][1] == "here" else f"ref-{task_id}-{len(self.started)}"


def test_a_handed_fold_that_never_starts_comes_back_and_is_fitted_here(monkeypatch):
    # The host Ray counted free gave its CPU to its own next expert: the fold's task waits behind it. After
    # RECLAIM_SECONDS the task is cancelled and withdrawn, and this process fits the fold
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", _free_once_under_way)
    monkeypatch.setattr(foldpool.FoldPool, "RECLAIM_SECONDS", 0.5)
    monkeypatch.setattr(foldpool.FoldPool, "SETTLE_SECONDS", 10.0)  # one hand-over only
    monkeypatch.setattr(foldpool, "_fold_started", lambda ref: False)
    cancelled, withdrawn = [], []
    monkeypatch.setattr(foldpool, "_cancel_fold", cancelled.append)
    folds = Refs(seconds_here=1.0)
    _queue(3).run(folds.start, folds.here, withdraw=withdrawn.append)
    assert folds.started[:2] == [(0, "here"), (2, "elsewhere")]
    assert [task_id for task_id, where in folds.started if where == "here"] == [0, 2, 1]
    assert cancelled == withdrawn == ["ref-2-2"]


def test_a_handed_fold_that_started_stays_with_its_host(monkeypatch):
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", _free_once_under_way)
    monkeypatch.setattr(foldpool.FoldPool, "RECLAIM_SECONDS", 0.5)
    monkeypatch.setattr(foldpool, "_fold_started", lambda ref: True)
    cancelled = []
    monkeypatch.setattr(foldpool, "_cancel_fold", cancelled.append)
    folds = Refs(seconds_here=1.0)
    _queue(3).run(folds.start, folds.here)
    assert folds.where() == {0: "here", 1: "here", 2: "elsewhere"} and not cancelled


class FakeTrainer:
    """What ``_train_side_by_side`` uses of AutoGluon's trainer; ``added`` is the order models register in."""

    _callback_early_stop = False

    def __init__(self) -> None:
        self.added: list[str] = []

    @sidebyside._in_rank_order
    def _add_model(self, name: str) -> bool:
        self.added.append(name)
        return True


def test_models_side_by_side_start_as_the_previous_ones_folds_have_all_started_and_register_in_order(monkeypatch):
    # Each model's folds (2, 0.2 s each here) go through the pool; a model starts once the previous one's last
    # fold has started, and the models register with the trainer in the trainer's order however they finish
    from autogluon.tabular.trainer import abstract_trainer
    monkeypatch.setattr(foldpool, "_folds_free_elsewhere", lambda cpus: 0)
    events: list[str] = []
    lock = threading.Lock()

    def fit_model(*, _self, model, **_):
        with lock:
            events.append(f"{model} starts")
        rank = sidebyside.bag_rank()

        def start(task_id: int, ctx: dict) -> None:
            with lock:
                events.append(f"{model} fold {task_id}")
            time.sleep(0.2)

        FoldQueue([(0, {}), (1, {})], cpus=1, rank=rank).run(start, lambda here: None)
        time.sleep(0.5 if model == "first" else 0.0)  # the first model's own work outlasts the others'
        _self._add_model(model)
        return [model]

    monkeypatch.setattr(abstract_trainer, "_detached_train_multi_fold", fit_model)
    side_by_side = sidebyside._train_side_by_side(lambda *a, **k: pytest.fail("fitted one after another"))
    trainer = FakeTrainer()
    with sidebyside.side_by_side(True):
        names = side_by_side(trainer, None, None, ["first", "second", "third"], time_limit=60)
    assert names == trainer.added == ["first", "second", "third"]
    assert events.index("second starts") > events.index("first fold 1")
    assert events.index("third starts") > events.index("second fold 1")
    assert [e for e in events if "fold" in e] == [f"{m} fold {k}" for m in ("first", "second", "third") for k in (0, 1)]


def test_outside_side_by_side_the_trainer_fits_models_one_after_another(monkeypatch):
    calls = []
    side_by_side = sidebyside._train_side_by_side(lambda self, X, y, models, **k: calls.append(models) or models)
    assert side_by_side(FakeTrainer(), None, None, ["a", "b"], time_limit=60) == ["a", "b"] and calls == [["a", "b"]]
