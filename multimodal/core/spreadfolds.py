"""The folds of a bagged expert fitted on several machines of a Ray cluster and joined into the one predictor
AutoGluon expects, on the machine that fits the expert.

AutoGluon's ``parallel_local`` fold strategy submits each fold as a Ray task, which on a cluster may land on
any machine, and saves the fold model on that machine's disk; its ``parallel_distributed`` strategy brings the
models back through S3 or a shared file system, which network isolation rules out. ``SpreadFoldFittingStrategy``
builds on ``parallel_local``: a fold that ran on another machine comes back to the expert's machine as a tar
archive (the task's second return value), unpacked where AutoGluon looks for it (``sync_model_artifact``,
AutoGluon's own hook for bringing fold models home).

Which folds go where: on machines too small to gain from folds side by side (fewer CPUs than
``parallel.MIN_PARALLEL_CPUS``, the single-machine rule) the folds form a queue (``foldpool.FoldQueue``). The
expert's process fits them from the front, one after another, as on one machine (no task, transfer or second
worker process importing AutoGluon), while a thread of its (``foldpool.FoldPool``) hands the fold at the back to
another machine whenever one has CPUs free, so a machine that finishes its own work mid-bag takes the folds
still waiting; within ``sidebyside.side_by_side`` the expert's models run side by side, their queues in that one
pool. On larger machines (and with GPUs) every fold is a Ray task, as ``parallel_local`` submits them, and Ray's
scheduler gives each to the first CPUs free on any machine, the expert's own included (Ray lends them while the
expert waits).

``install()`` teaches AutoGluon's bagged models the strategy name ``STRATEGY`` (``ag_args_ensemble``'s
``fold_fitting_strategy`` takes only AutoGluon's own names); ``BAGS`` records, in this process, each bagged
model's wall time and where and how long each of its folds ran.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import archives, foldpool, sidebyside
from .parallel import MIN_PARALLEL_CPUS

STRATEGY = "multimodal_spread_hosts"
# {"model", "started" (time.monotonic()), "seconds", "folds": [{"node_id", "seconds"}, ...]} of each bagged model
# fitted in this process, as each ends
BAGS: list[dict] = []


def install() -> None:
    """Make ``fold_fitting_strategy=STRATEGY`` name ``SpreadFoldFittingStrategy``, and let AutoGluon's trainer fit
    its bagged models side by side within ``sidebyside.side_by_side`` (idempotent)."""
    from autogluon.core.models.ensemble.bagged_ensemble_model import BaggedEnsembleModel
    sidebyside.install()
    chosen = BaggedEnsembleModel._get_fold_fitting_strategy
    if getattr(chosen, "multimodal", False):
        return

    def choose(self: Any, model_base: Any, num_gpus: Any) -> type:
        if self.params.get("fold_fitting_strategy") != STRATEGY:
            return chosen(self, model_base, num_gpus)
        here, spread = _strategy_classes()
        # Models that cannot fit folds in parallel say so (AutoGluon's own rule for parallel_local)
        return here if self.params.get("_disable_parallel_fitting", False) else spread

    choose.multimodal = True  # type: ignore[attr-defined]
    BaggedEnsembleModel._get_fold_fitting_strategy = choose


class _InProcess:
    """Stands in for the Ray remote function that AutoGluon's ``_fit`` calls once it has built a fold's
    arguments: runs the fold task in this process and hands its two results back as object refs."""

    @staticmethod
    def options(**_: Any) -> type["_InProcess"]:
        return _InProcess

    @staticmethod
    def remote(**kwargs: Any) -> tuple[Any, Any]:
        import ray
        values = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in kwargs.items()}
        result, shipped = _fold_task(announce=False, **values)
        return ray.put(result), ray.put(shipped)


class _Either:
    """AutoGluon's ``_ray_fit`` for ``QueuedFolds``: a Ray task, or in this process for the thread in
    ``here(True)``."""

    def __init__(self, remote: Any) -> None:
        self.remote_fit = remote
        self._local = threading.local()

    def options(self, **options: Any) -> Any:
        return _InProcess if getattr(self._local, "here", False) else self.remote_fit.options(**options)

    def here(self, value: bool) -> None:
        self._local.here = value


@functools.lru_cache(maxsize=1)
def _strategy_classes() -> tuple[type, type]:
    """(folds one after another in this process, folds spread over the cluster), both recorded in ``BAGS``."""
    import ray
    from autogluon.core.models.ensemble.fold_fitting_strategy import (
        ParallelLocalFoldFittingStrategy,
        SequentialLocalFoldFittingStrategy,
    )
    from autogluon.core.utils.exceptions import TimeLimitExceeded

    class Recorded:
        """Each fold's node and seconds (``_folds``), and the bagged model's wall time, into ``BAGS``."""

        _folds: list[dict]

        def after_all_folds_scheduled(self) -> None:
            started, self._folds = time.monotonic(), []
            super().after_all_folds_scheduled()  # type: ignore[misc]
            BAGS.append({"model": self.bagged_ensemble_model.name,  # type: ignore[attr-defined]
                         "started": started, "seconds": round(time.monotonic() - started, 2), "folds": self._folds})

    class HereFoldFittingStrategy(Recorded, SequentialLocalFoldFittingStrategy):
        def _fit_fold_model(self, fold_ctx: Any) -> None:
            with foldpool.POOL.fitting_here(sidebyside.bag_rank()):  # one fold at a time in this process, bags side by side or not
                started = time.monotonic()
                super()._fit_fold_model(fold_ctx)
            self._folds.append({"node_id": ray.get_runtime_context().get_node_id(),
                                "seconds": round(time.monotonic() - started, 2)})

    class QueuedFolds(ParallelLocalFoldFittingStrategy):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._shipped: dict[str, Any] = {}  # fold model name → ref of (node id, archive or None, seconds)
            # AutoGluon gives every fold a fresh worker process (max_calls=1) to free GPU memory; without GPUs a
            # reused worker saves importing AutoGluon and the model libraries again for each fold
            options: dict[str, Any] = {"max_retries": 0, "num_returns": 2}
            if self.num_gpus:
                options["max_calls"] = 1
            self._ray_fit = _Either(self.ray.remote(**options)(_fold_task))

        def after_all_folds_scheduled(self) -> None:
            if self.num_gpus or self.num_cpus >= MIN_PARALLEL_CPUS:
                super().after_all_folds_scheduled()  # every fold a Ray task, AutoGluon's parallel_local
                return
            X, y, X_pseudo, y_pseudo = self._prepare_data()
            data = {"model_base_ref": self.ray.put(self.model_base), "X_ref": X, "y_ref": y,
                    "X_pseudo_ref": X_pseudo, "y_pseudo_ref": y_pseudo, "gpu_assignments": {},
                    "resources": {"num_cpus": self.num_cpus, "num_gpus": 0},
                    "head_node_id": self.ray.get_runtime_context().get_node_id(), "kwargs": self.model_base_kwargs}
            queue = foldpool.FoldQueue(list(enumerate(self.jobs)), self.num_cpus, rank=sidebyside.bag_rank())
            pending: dict[Any, dict] = {}

            def start(task_id: int, fold_ctx: dict) -> Any:
                # _fit builds the fold's arguments as AutoGluon does; _Either runs it here or as a Ray task
                ref = self._fit(**data, time_limit_fold=self._queued_time_limit(len(queue.folds) + 1),
                                task_id=task_id, fold_ctx=fold_ctx)
                pending[ref] = fold_ctx
                return ref

            try:
                queue.run(start, self._ray_fit.here, withdraw=lambda ref: pending.pop(ref, None))
            except BaseException:
                self.terminate_all_unfinished_tasks(list(pending))
                raise
            self._collect(pending)
            self._update_bagged_ensemble_child_resources()
            self._update_bagged_ensemble_times()

        def _queued_time_limit(self, folds_left: int) -> float | None:
            """A fold's time limit: what is left of the bag's, shared among the folds not yet started (as
            AutoGluon's sequential strategy shares it)."""
            if self.time_limit is None:
                return None
            time_left = self.time_limit - (time.time() - self.time_start)
            if time_left <= 0:
                raise TimeLimitExceeded
            return time_left / folds_left * self.time_limit_fold_ratio

        def _collect(self, pending: dict) -> None:
            """Take in every fold of ``pending`` as it finishes (AutoGluon's own processing of a fold's result)."""
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                fold_ctx = pending.pop(done[0])
                self._process_fold_results(done[0], list(pending), fold_ctx)

        def _fit(self, **kwargs: Any) -> Any:
            result, shipped = super()._fit(**kwargs)
            suffix = self._get_fold_properties(kwargs["fold_ctx"])[5]
            self._shipped[f"{self.model_base.name}{suffix}"] = shipped
            return result

        def _sync_model_artifact(self, local_path: str, model_sync_path: str | None) -> None:
            fold = os.path.basename(os.path.normpath(local_path))
            node_id, archive, seconds = self.ray.get(self._shipped.pop(fold))
            if archive is not None:
                archives.unpack(archive, Path(local_path))
            self._folds.append({"node_id": node_id, "seconds": seconds})

    class SpreadFoldFittingStrategy(Recorded, QueuedFolds):
        """Folds in a queue on small machines, every fold a Ray task on large ones; recorded in ``BAGS``."""

    return HereFoldFittingStrategy, SpreadFoldFittingStrategy


def _fold_task(announce: bool = True, **kwargs: Any) -> tuple[Any, tuple[str, bytes | None, float]]:
    """AutoGluon's fold task; on a machine other than the expert's (``head_node_id``, where AutoGluon's task
    was submitted from), in a directory of its own, sent back as an archive and removed. ``announce``: as a Ray
    task, say first that it has started (``_fold_started``)."""
    import ray
    from autogluon.core.models.ensemble.fold_fitting_strategy import _ray_fit
    if announce:
        foldpool.announce_start()
    started = time.monotonic()
    here = ray.get_runtime_context().get_node_id()
    if here == kwargs["head_node_id"]:
        result = _ray_fit(**kwargs)
        return result, (here, None, round(time.monotonic() - started, 2))
    work = tempfile.mkdtemp(prefix="mm-fold-")
    try:
        result = _ray_fit(**{**kwargs, "bagged_ensemble_model_path": work})
        archive = None if isinstance(result, dict) else archives.pack(Path(work) / result[0])  # dict: its error
        return result, (here, archive, round(time.monotonic() - started, 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
