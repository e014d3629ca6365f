"""The folds of the bagged models an expert's process fits on a cluster of small machines: one queue per model
(``FoldQueue``) and one pool per process (``POOL``) that decides which fold this process fits next and which
goes to another machine with CPUs free, and takes back a fold whose task never started there.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

from . import sidebyside

# A fold task says it has started under this key of the cluster's key-value store (Ray's GCS); Ray's public task
# state API needs the dashboard, which the cluster does not run
_KV_NAMESPACE = "multimodal"
_STARTED_KEY = "fold-started:"


def _folds_free_elsewhere(cpus: int) -> int:
    """How many folds of ``cpus`` CPUs the other hosts can start now: this expert's task holds its own host's
    CPUs while it fits a fold."""
    import ray
    return int(ray.available_resources().get("CPU", 0) // max(cpus, 1))


def _fold_started(ref: Any) -> bool:
    """Whether the fold task of ``ref`` has started (``_fold_task`` says so as it starts)."""
    from ray.experimental import internal_kv
    key = _STARTED_KEY + ref.task_id().hex()
    if internal_kv._internal_kv_get(key, namespace=_KV_NAMESPACE) is None:
        return False
    internal_kv._internal_kv_del(key, namespace=_KV_NAMESPACE)
    return True


def _cancel_fold(ref: Any) -> None:
    """Cancel a fold task that has not started (had it started meanwhile, it stops: the fold is fitted again)."""
    import ray
    ray.cancel(ref, force=False)


def announce_start() -> None:
    """In a fold's Ray task, as it starts: say so (``_fold_started``)."""
    import ray
    from ray.experimental import internal_kv
    internal_kv._internal_kv_put(_STARTED_KEY + ray.get_runtime_context().get_task_id(), b"1",
                                 namespace=_KV_NAMESPACE)


class FoldQueue:
    """The folds of one bagged model not yet started, (task id, fold context) in order, each needing ``cpus``.
    ``run`` fits them from the front in this process while the process's ``FoldPool`` hands folds from the back
    to the other hosts whenever they have CPUs free, so a host that frees up mid-bag takes the folds still
    waiting."""

    def __init__(self, folds: list[tuple[int, dict]], cpus: int, rank: int = 0) -> None:
        self.folds = folds
        self.cpus = cpus
        self.rank = rank  # the bag's place among the bags fitted side by side: a lower rank is served first
        self.failures: list[BaseException] = []
        self.handed: dict[Any, tuple[tuple[int, dict], float]] = {}  # fold task not known to run → (fold, when)
        self.withdraw: Callable[[Any], None] = lambda ref: None
        # set once no fold waits in the queue: the bag fitted side by side after this one may start
        self.drained: threading.Event = sidebyside.bag_drained() or threading.Event()

    def run(self, start: Callable[[int, dict], Any], here: Callable[[bool], None],
            withdraw: Callable[[Any], None] | None = None) -> None:
        """``start(task_id, fold_ctx)`` for every fold: in this thread with ``here(True)`` (the fold runs now),
        in the pool's handing-over thread with ``here(False)`` (a Ray task; ``start`` returns its ref). A fold
        task that has not started ``FoldPool.RECLAIM_SECONDS`` after it was handed over (its host's CPUs went to
        other work meanwhile) is cancelled, ``withdraw(ref)`` called, and the fold queued again. Raises what
        either thread raised."""
        if withdraw is not None:
            self.withdraw = withdraw
        POOL.run(self, start, here)


class FoldPool:
    """The fold queues of the bags this process fits, side by side or one after another. This process fits one
    fold at a time (its CPUs are the expert's): the front fold of the lowest-ranked queue with folds waiting. A
    thread ("multimodal-fold-queue", while any queue is open) checks every ``POLL_SECONDS`` whether another host
    has CPUs free and hands it the back fold of that same queue, so the bag fitted first also finishes first and
    the folds of the bags after it fill the hosts its last folds would leave idle."""

    POLL_SECONDS = 0.25
    # After handing a fold over, wait this long before the next: the cluster's count of free CPUs lags behind
    SETTLE_SECONDS = 1.0
    # A fold task not started this long after it was handed over waits behind other work (the CPUs Ray counted
    # free went to the next expert of their host): it comes back to the queue. A worker starts in 1-2 s.
    RECLAIM_SECONDS = 5.0

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.queues: list[tuple[FoldQueue, Callable[[int, dict], Any]]] = []  # the open queues by rank
        self.fitting = False  # whether a fold runs in this process now
        self.settled = 0.0  # when the count of free CPUs shows the last fold handed over
        self.handing: threading.Thread | None = None

    def run(self, queue: FoldQueue, start: Callable[[int, dict], Any], here: Callable[[bool], None]) -> None:
        with self.changed:
            self.queues.append((queue, start))
            self.queues.sort(key=lambda opened: opened[0].rank)
            self._hand_over(every=True)  # hosts free now take their folds before this process takes one
            if self.handing is None:
                self.handing = threading.Thread(target=self._keep_handing_over, daemon=True,
                                                name="multimodal-fold-queue")
                self.handing.start()
        try:
            while True:
                with self.fitting_here(queue.rank, queue) as fold:
                    if fold is None:
                        break
                    here(True)
                    try:
                        start(*fold)
                    finally:
                        here(False)
        finally:
            with self.changed:
                self.queues = [opened for opened in self.queues if opened[0] is not queue]
                self.changed.notify_all()
        if queue.failures:
            raise queue.failures[0]

    @contextlib.contextmanager
    def fitting_here(self, rank: int, queue: FoldQueue | None = None) -> Iterator[tuple[int, dict] | None]:
        """This process's turn to fit a fold of the bag ranked ``rank``: once no fold runs here and no queue ranked
        lower has folds waiting. With ``queue``: yields its front fold, or None (without waiting for the turn)
        once it has a failure, or no fold left that could still come back to it."""
        def finished() -> bool:
            return queue is not None and bool(queue.failures or not (queue.folds or queue.handed))

        def turn() -> bool:
            first = self._first()
            return not self.fitting and (first is None or first.rank >= rank)

        with self.changed:
            self.changed.wait_for(lambda: finished() or (turn() and (queue is None or bool(queue.folds))))
            if finished():
                mine = False
            else:
                self.fitting = mine = True
                fold = queue.folds.pop(0) if queue is not None else None
                if queue is not None and not queue.folds:
                    queue.drained.set()
        if not mine:
            yield None
            return
        try:
            yield fold
        finally:
            with self.changed:
                self.fitting = False
                self.changed.notify_all()

    def _first(self) -> FoldQueue | None:
        """The lowest-ranked open queue with folds waiting."""
        return next((queue for queue, _ in self.queues if queue.folds), None)

    def _hand_over(self, every: bool = False) -> None:
        """Hand folds from the back of the first queue to the hosts free now (one, or ``every`` one that is free),
        keeping its last fold for this process when it would fit it at once. Called holding ``changed``."""
        queue = self._first()
        if queue is None or time.monotonic() < self.settled:
            return
        start = next(s for q, s in self.queues if q is queue)
        keep = 0 if self.fitting else 1
        try:
            count = min(_folds_free_elsewhere(queue.cpus), len(queue.folds) - keep)
            for _ in range(count if every else min(count, 1)):
                fold = queue.folds.pop()
                if not queue.folds:
                    queue.drained.set()
                ref = start(*fold)
                if ref is not None:
                    queue.handed[ref] = (fold, time.monotonic())
                self.settled = time.monotonic() + self.SETTLE_SECONDS
                self.changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - the queue's fitting thread raises it
            queue.failures.append(exc)
            self.changed.notify_all()

    def _reclaim(self) -> None:
        """Forget the handed folds whose tasks have started; queue again, at the front, those that have not
        started in ``RECLAIM_SECONDS``. Called holding ``changed``."""
        now = time.monotonic()
        for queue, _ in self.queues:
            for ref, (fold, handed_at) in list(queue.handed.items()):
                try:
                    if _fold_started(ref):
                        del queue.handed[ref]
                    elif now - handed_at > self.RECLAIM_SECONDS:
                        _cancel_fold(ref)
                        del queue.handed[ref]
                        queue.withdraw(ref)
                        queue.folds.insert(0, fold)
                    else:
                        continue
                except BaseException as exc:  # noqa: BLE001 - the queue's fitting thread raises it
                    queue.failures.append(exc)
                self.changed.notify_all()

    def _keep_handing_over(self) -> None:
        with self.changed:
            while self.queues:
                self.changed.wait(self.POLL_SECONDS)
                self._reclaim()
                self._hand_over()
            self.handing = None


POOL = FoldPool()
