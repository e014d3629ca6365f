"""Parallel bagging folds: AutoGluon fits an expert's folds side by side as Ray tasks.

``parallel_folds=auto`` uses Ray when this process may use at least ``MIN_PARALLEL_CPUS`` CPUs: on 2 cores,
folds in parallel measured no faster than folds one after another (each fold then has 1 core instead of 2, and
every Ray worker process imports AutoGluon anew), see docs/benchmarks.md.

The fit starts its own single-machine Ray instance and stops it when done, instead of letting AutoGluon call a
bare ``ray.init()``: that one would join whatever cluster ``RAY_ADDRESS`` or a stale ``/tmp/ray`` session names
(and then fail: "When connecting to an existing cluster, num_cpus and num_gpus must not be provided"), start a
dashboard and send usage statistics. Ours is a new local instance whatever the environment says, writes under
``$TMPDIR`` only (a read-only root with a writable /tmp is enough), bounds its object store, and runs with no
network at all (``--network none``; tests/test_docker.py). Prediction never starts Ray.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from typing import Iterator

from . import settings
from .resources import available_memory, cpu_count

log = logging.getLogger(__name__)

MIN_PARALLEL_CPUS = 4
# The object store holds each expert's training frame once (shared by its folds); a quarter of what is available
# leaves the rest to the fold processes.
OBJECT_STORE_SHARE = 0.25
MIN_OBJECT_STORE_BYTES = 256 * 2**20
MAX_TEMP_ROOT_CHARS = 24


def ray_available() -> tuple[bool, str]:
    """(whether a Ray that AutoGluon accepts is installed, why not)."""
    try:
        from autogluon.common.utils.try_import import try_import_ray
        try_import_ray()
    except Exception as error:  # ImportError, or AutoGluon's ValueError for a version outside its range
        return False, str(error).splitlines()[0]
    return True, ""


def fold_strategy(parallel_folds: str, cpus: int | None = None) -> str:
    """AutoGluon's ``fold_fitting_strategy`` for ``parallel_folds`` (``auto``, ``true`` or ``false``)."""
    cpus = cpu_count() if cpus is None else cpus
    if parallel_folds == "false" or (parallel_folds == "auto" and cpus < MIN_PARALLEL_CPUS):
        return "sequential_local"
    available, why = ray_available()
    if not available:
        log.warning("bagging folds are fitted one after another: Ray is unavailable (%s)", why)
        return "sequential_local"
    return "parallel_local"


def object_store_bytes() -> int:
    """The object store a Ray node of ours gets: ``OBJECT_STORE_SHARE`` of the available memory, at least
    ``MIN_OBJECT_STORE_BYTES``."""
    return max(MIN_OBJECT_STORE_BYTES, int(available_memory() * OBJECT_STORE_SHARE))


def short_temp_root() -> str:
    """$TMPDIR, or /tmp when $TMPDIR is too long: Ray's socket paths (its directory + about 70 bytes) must stay
    under 108 bytes."""
    root = tempfile.gettempdir()
    return root if len(root) <= MAX_TEMP_ROOT_CHARS else "/tmp"


@contextlib.contextmanager
def local_ray(strategy: str) -> Iterator[None]:
    """A private single-machine Ray instance for the duration of a fit, when ``strategy`` needs one."""
    if strategy != "parallel_local":
        yield
        return
    import ray
    if ray.is_initialized():  # the caller's own Ray session: use it as it is
        yield
        return
    settings.library_defaults(RAY_USAGE_STATS_ENABLED="0")
    temp_dir = tempfile.mkdtemp(prefix="mm-ray-", dir=short_temp_root())
    cpus = cpu_count()
    store = object_store_bytes()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=store, _temp_dir=temp_dir,
             # RealMLP's pytabkit imports torchvision in the fold processes (multimodal.core.images)
             runtime_env={"worker_process_setup_hook": "multimodal.core.images.allow_torchvision_import"})
    log.info("Ray started for parallel folds: %d CPUs, object store %.0f MB, under %s", cpus, store / 1e6, temp_dir)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
