"""An expert's bagged models fitted side by side on a cluster of small machines: AutoGluon's trainer fits its
model families one after another, and with 3 folds on 2 machines the last folds of each model left a machine
idle while the next model waited. Within ``side_by_side`` each model runs in a thread of its own, started once
every fold of the model before it has started, and their folds share the process's fold pool
(``foldpool.POOL``) in the trainer's order; the trainer still records the models in its own order.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any, Callable, Iterator


def install() -> None:
    """Wrap AutoGluon's trainer so that ``side_by_side`` takes effect (idempotent)."""
    from autogluon.tabular.trainer.abstract_trainer import AbstractTabularTrainer
    if not getattr(AbstractTabularTrainer._train_multi_fold, "multimodal", False):
        AbstractTabularTrainer._train_multi_fold = _train_side_by_side(AbstractTabularTrainer._train_multi_fold)
        AbstractTabularTrainer._add_model = _in_rank_order(AbstractTabularTrainer._add_model)


_SIDE_BY_SIDE = threading.Event()  # set while this process's expert fits its bags side by side
_BAG = threading.local()  # .rank, .turns, .drained: the bag this thread fits side by side with others (``_InOrder``)


@contextlib.contextmanager
def side_by_side(enabled: bool) -> Iterator[None]:
    """While active (and ``enabled``), AutoGluon's trainer fits the bagged models of a stack level side by side,
    one thread each, instead of one after another: a model starts once every fold of the one before it has
    started (here or on another host), and their folds share this process's ``FoldPool``, so the folds of the
    next model fill the hosts that the last folds of a model would leave idle (3 folds on 2 hosts end every bag
    with a host idle for a fold). For small machines only, where every fold runs through the pool."""
    if enabled:
        _SIDE_BY_SIDE.set()
    try:
        yield
    finally:
        _SIDE_BY_SIDE.clear()


def bag_rank() -> int:
    """The place of the model this thread fits among those fitted side by side (0 outside them)."""
    return getattr(_BAG, "rank", 0)


def _train_side_by_side(original: Callable) -> Callable:
    """AutoGluon's ``_train_multi_fold``, its models fitted side by side while ``side_by_side`` is active."""

    @functools.wraps(original)
    def train_multi_fold(self: Any, X: Any, y: Any, models: list, time_limit: float | None = None,
                         time_split: bool = False, time_ratio: float = 1, hyperparameter_tune_kwargs: dict | None = None,
                         fit_strategy: str = "sequential", **kwargs: Any) -> list[str]:
        tuning = any(v is not None and v != {} for v in (hyperparameter_tune_kwargs or {}).values())
        if not _SIDE_BY_SIDE.is_set() or fit_strategy != "sequential" or tuning or len(models) < 2:
            return original(self, X, y, models, time_limit=time_limit, time_split=time_split, time_ratio=time_ratio,
                            hyperparameter_tune_kwargs=hyperparameter_tune_kwargs, fit_strategy=fit_strategy,
                            **kwargs)
        if self._callback_early_stop:
            return []
        # AutoGluon's sequential branch, each model in a thread of its own
        from autogluon.tabular.trainer.abstract_trainer import _detached_train_multi_fold
        time_start = time.time()
        time_limit = None if time_limit is None else time_limit * time_ratio
        split = None if time_limit is None else time_limit / len(models)
        trained: list[list[str]] = [[] for _ in models]
        failures: list[tuple[int, BaseException]] = []
        turns = _InOrder(len(models))
        drained = [threading.Event() for _ in models]  # every fold of the model has started, or it has ended

        def fit(rank: int, model: Any) -> None:
            _BAG.rank, _BAG.turns, _BAG.drained = rank, turns, drained[rank]
            try:
                trained[rank] = _detached_train_multi_fold(
                    _self=self, model=model, X=X, y=y, time_start=time_start, time_split=time_split,
                    time_limit=time_limit, time_limit_model_split=split,
                    hyperparameter_tune_kwargs=hyperparameter_tune_kwargs, is_ray_worker=False, kwargs=dict(kwargs))
            except BaseException as exc:  # noqa: BLE001 - raised below, as the sequential loop would
                failures.append((rank, exc))
            finally:
                drained[rank].set()
                turns.done(rank)

        # All models at once would set up (and compete with the first folds) for nothing: only the folds of the
        # model after the one whose folds have all started can fill a host that frees up
        threads = [threading.Thread(target=fit, args=(rank, model), name=f"multimodal-bag-{rank}")
                   for rank, model in enumerate(models)]
        for rank, thread in enumerate(threads):
            if rank:
                drained[rank - 1].wait()
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise min(failures, key=lambda failure: failure[0])[1]
        return [name for names in trained for name in names]

    train_multi_fold.multimodal = True  # type: ignore[attr-defined]
    return train_multi_fold


class _InOrder:
    """The bags ranked 0…n-1 of one ``_train_multi_fold`` fitted side by side, which of them are done."""

    def __init__(self, n: int) -> None:
        self.finished = [False] * n
        self.changed = threading.Condition()

    def done(self, rank: int) -> None:
        with self.changed:
            self.finished[rank] = True
            self.changed.notify_all()


def _in_rank_order(add_model: Callable) -> Callable:
    """AutoGluon's ``_add_model``, which registers a fitted model with the trainer: in a bag's thread it waits until
    the bags ranked before it are done, so that the trainer's record keeps the order of the sequential loop (which
    decides, for instance, ties in its weighted ensemble)."""

    @functools.wraps(add_model)
    def in_order(self: Any, *args: Any, **kwargs: Any) -> Any:
        turns = getattr(_BAG, "turns", None)
        if turns is None:
            return add_model(self, *args, **kwargs)
        with turns.changed:
            turns.changed.wait_for(lambda: all(turns.finished[:_BAG.rank]))
            return add_model(self, *args, **kwargs)

    return in_order


def bag_drained() -> threading.Event | None:
    """The event to set once no fold of the model this thread fits waits in its queue (None outside a model's
    thread)."""
    return getattr(_BAG, "drained", None)
