"""The folds of a bagged expert fitted on several machines of a Ray cluster and joined into the one predictor
AutoGluon expects, on the machine that fits the expert.

AutoGluon's ``parallel_local`` fold strategy submits each fold as a Ray task, which on a cluster may land on
any machine, and saves the fold model on that machine's disk; its ``parallel_distributed`` strategy brings the
models back through S3 or a shared file system, which network isolation rules out. ``SpreadFoldFittingStrategy``
is ``parallel_local`` with one change: a fold that ran on another machine comes back to the expert's machine
as a tar archive (the task's second return value), unpacked where AutoGluon looks for it
(``sync_model_artifact``, AutoGluon's own hook for bringing fold models home). The expert's task waits in
``ray.wait`` while its folds run, and Ray lends its CPUs to them meanwhile, so a machine with nothing of its own
left to fit takes folds of the others' experts. A bagged model whose fit starts while no other machine has a
CPU free fits its folds in the expert's process, one after another, as on one machine.

``install()`` teaches AutoGluon's bagged models the strategy name ``STRATEGY`` (``ag_args_ensemble``'s
``fold_fitting_strategy`` takes only AutoGluon's own names); ``BAGS`` records, in this process, each bagged
model's wall time and where and how long each of its folds ran.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from . import archives

STRATEGY = "multimodal_spread_hosts"
# {"model", "seconds", "folds": [{"node_id", "seconds"}, ...]} of each bagged model fitted in this process
BAGS: list[dict] = []


def install() -> None:
    """Make ``fold_fitting_strategy=STRATEGY`` choose the folds' strategy by the cluster's CPUs free now
    (idempotent)."""
    from autogluon.core.models.ensemble.bagged_ensemble_model import BaggedEnsembleModel
    chosen = BaggedEnsembleModel._get_fold_fitting_strategy
    if getattr(chosen, "multimodal", False):
        return

    def choose(self: Any, model_base: Any, num_gpus: Any) -> type:
        if self.params.get("fold_fitting_strategy") != STRATEGY:
            return chosen(self, model_base, num_gpus)
        here, spread = _strategy_classes()
        # Models that cannot fit folds in parallel say so (AutoGluon's own rule for parallel_local); and while
        # every host is busy, folds fitted in this process cost no task, transfer or new worker
        if self.params.get("_disable_parallel_fitting", False) or not _cpu_free_elsewhere():
            return here
        return spread

    choose.multimodal = True  # type: ignore[attr-defined]
    BaggedEnsembleModel._get_fold_fitting_strategy = choose


def _cpu_free_elsewhere() -> bool:
    """Whether another host has a CPU free now: this expert's task holds its own host's."""
    import ray
    return ray.available_resources().get("CPU", 0) >= 1


@functools.lru_cache(maxsize=1)
def _strategy_classes() -> tuple[type, type]:
    """(folds one after another in this process, folds spread over the cluster), both recorded in ``BAGS``."""
    import ray
    from autogluon.core.models.ensemble.fold_fitting_strategy import (
        ParallelLocalFoldFittingStrategy,
        SequentialLocalFoldFittingStrategy,
    )

    class Recorded:
        """Each fold's node and seconds (``_folds``), and the bagged model's wall time, into ``BAGS``."""

        _folds: list[dict]

        def after_all_folds_scheduled(self) -> None:
            started, self._folds = time.monotonic(), []
            super().after_all_folds_scheduled()  # type: ignore[misc]
            BAGS.append({"model": self.bagged_ensemble_model.name,  # type: ignore[attr-defined]
                         "seconds": round(time.monotonic() - started, 2), "folds": self._folds})

    class HereFoldFittingStrategy(Recorded, SequentialLocalFoldFittingStrategy):
        def _fit_fold_model(self, fold_ctx: Any) -> None:
            started = time.monotonic()
            super()._fit_fold_model(fold_ctx)
            self._folds.append({"node_id": ray.get_runtime_context().get_node_id(),
                                "seconds": round(time.monotonic() - started, 2)})

    class SpreadFoldFittingStrategy(Recorded, ParallelLocalFoldFittingStrategy):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._shipped: dict[str, Any] = {}  # fold model name → ref of (node id, archive or None, seconds)
            # AutoGluon gives every fold a fresh worker process (max_calls=1) to free GPU memory; without GPUs a
            # reused worker saves importing AutoGluon and the model libraries again for each fold
            options: dict[str, Any] = {"max_retries": 0, "num_returns": 2}
            if self.num_gpus:
                options["max_calls"] = 1
            self._ray_fit = self.ray.remote(**options)(_fold_task)

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

    return HereFoldFittingStrategy, SpreadFoldFittingStrategy


def _fold_task(**kwargs: Any) -> tuple[Any, tuple[str, bytes | None, float]]:
    """AutoGluon's fold task; on a machine other than the expert's (``head_node_id``, where AutoGluon's task
    was submitted from), in a directory of its own, sent back as an archive and removed."""
    import ray
    from autogluon.core.models.ensemble.fold_fitting_strategy import _ray_fit
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
