"""The training job on the host that trains: ``configure`` (everything checked before any data is read),
``run`` (read, fit — on a Ray cluster's nodes when given —, save, report, publish) and ``fail`` (an empty model/
and output/failure with a reason that says what to fix). Which host runs them, and how the others wait: ``job``.
"""
from __future__ import annotations

import errno
import logging
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from multimodal.core.errors import ClusterError, DataError, HyperparameterError, TimeBudgetError
from multimodal.core.hyperparameters import resolve, time_budget_seconds
from multimodal.sagemaker.contract import ConfigError
from multimodal.sagemaker.environment import TRAINING_JOB_NAME
from multimodal.sagemaker.opt_ml import (
    CHANNELS,
    FAILURE_LIMIT,
    IMAGES_CHANNEL,
    INPUT_DATA_CONFIG_FILE,
    STAGING_DIR,
    TRAIN_CHANNEL,
    VALIDATION_CHANNEL,
    Paths,
    empty_directory,
    publish_model,
    read_hyperparameters,
    write_failure,
)

from .channels import (
    SHARDED,
    ChannelConfig,
    ChannelReader,
    discover_channels,
    load_input_data_config,
)
from .checkpointing import job_checkpoints
from .hosts import HostsError
from .imagechannel import ImagesDirectory, ReferenceCheck, check_references
from .imagechannel import failure as image_failure

if TYPE_CHECKING:
    from .raycluster import RayCluster

# the job's own logger: its lines keep the name they had before the job was split
log = logging.getLogger("multimodal.sagemaker.training.job")

LOG_HINT = "The traceback is in the training job's log (CloudWatch /aws/sagemaker/TrainingJobs)"


class JobStopped(BaseException):
    """SIGTERM (StopTrainingJob, MaxRuntimeInSeconds) or SIGINT. A BaseException, so that no library swallows it."""

class Stopwatch:
    """Elapsed time since the process started its job, and named stage durations for the summary."""

    def __init__(self) -> None:
        now = time.monotonic()
        self.started = now - _seconds_since_process_start()  # interpreter start-up and imports count too
        self.stages: dict[str, float] = {"start-up": round(now - self.started, 2)}
        self._last = now

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def lap(self, stage: str) -> float:
        now = time.monotonic()
        self.stages[stage] = round(now - self._last, 2)
        self._last = now
        return self.stages[stage]

def _seconds_since_process_start() -> float:
    try:
        import psutil
        return max(time.time() - psutil.Process().create_time(), 0.0)
    except Exception:  # noqa: BLE001 - timing is informative only
        return 0.0


# ---------------------------------------------------------------------------------------------- the job

@dataclass(frozen=True)
class JobConfig:
    hyperparameters: dict[str, Any]
    budget: int
    channels: dict[str, ChannelConfig]

def channel_configs(paths: Paths) -> dict[str, ChannelConfig]:
    declared = load_input_data_config(paths.config_dir / INPUT_DATA_CONFIG_FILE)
    if declared is None:
        declared = discover_channels(paths.data_dir)
        log.info("inputdataconfig.json not found: channels found under %s: %s", paths.data_dir,
                 ", ".join(f"{c.name} ({c.input_mode})" for c in declared.values()) or "none")
    unknown = sorted(set(declared) - set(CHANNELS))
    if unknown:
        log.warning("channel(s) %s ignored: this algorithm reads only %r, %r and %r", ", ".join(unknown),
                    TRAIN_CHANNEL, VALIDATION_CHANNEL, IMAGES_CHANNEL)
    if IMAGES_CHANNEL in declared and declared[IMAGES_CHANNEL].input_mode == "Pipe":
        raise DataError(f"channel {IMAGES_CHANNEL!r} is in Pipe mode, which streams the channel's objects one after "
                        "another and cannot serve a file by its path: give it TrainingInputMode File or FastFile")
    if TRAIN_CHANNEL not in declared:
        raise DataError(f"no {TRAIN_CHANNEL!r} channel: give the training job a channel named {TRAIN_CHANNEL!r} "
                        "whose S3 prefix holds the training CSV file(s) (header row with ID, label and columns "
                        f"ending in _text, _num, _cat or _image; locally: put them in {paths.data_dir / 'train'})")
    return {name: declared[name] for name in CHANNELS if name in declared}

def configure(paths: Paths, clock: Stopwatch) -> JobConfig:
    """Everything checked before any data is read (or any other host waited for): an empty model/, the
    hyperparameters, the channels."""
    log.info("training job %s on %s, multimodal root %s", TRAINING_JOB_NAME.read(),
             socket.gethostname(), paths.root)
    paths.failure_file.unlink(missing_ok=True)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    stale = empty_directory(paths.model_dir)
    if stale:
        log.warning("removed %d stale entr%s from %s", stale, "y" if stale == 1 else "ies", paths.model_dir)
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)

    raw = read_hyperparameters(paths)
    hyperparameters = resolve(raw)
    budget = time_budget_seconds(hyperparameters)
    ignored = sorted(k for k in raw if k.startswith(("_", "sagemaker_")))
    log.info("hyperparameters: %s%s; time budget %d s", ", ".join(f"{k}={v}" for k, v in hyperparameters.items()),
             f" (ignored: {', '.join(ignored)})" if ignored else "", budget)
    configs = channel_configs(paths)
    clock.lap("configuration")
    return JobConfig(hyperparameters, budget, configs)

def run(paths: Paths, clock: Stopwatch, job: JobConfig, cluster: "RayCluster | None" = None) -> int:
    """The job on the host that trains: read, fit (on ``cluster``'s nodes when given), save, report."""
    hyperparameters, budget, configs = job.hyperparameters, job.budget, job.channels

    readers = channel_readers(configs, paths.data_dir if cluster is None else None)
    images = ImagesDirectory(paths.data_dir if cluster is None else None) if IMAGES_CHANNEL in configs else None
    check = check_image_channel(configs, paths, hyperparameters["bad_images"]) if images else None
    clock.lap("image check")
    checkpoints = job_checkpoints(paths, configs, hosts=1 if cluster is None else len(cluster.hosts))
    from multimodal.core.estimator import MultimodalEstimator
    model = MultimodalEstimator(**hyperparameters)
    try:
        if cluster is None:
            model.fit(readers[TRAIN_CHANNEL](),
                      readers[VALIDATION_CHANNEL]() if VALIDATION_CHANNEL in readers else None,
                      images=images() if images else None, checkpoints=checkpoints)
        else:
            model.fit(cluster.data(readers, images=images, replicated=configs[TRAIN_CHANNEL].distribution != SHARDED),
                      checkpoints=checkpoints)
    except JobStopped:
        if checkpoints is not None and checkpoints.saved + checkpoints.resumed:
            log.warning("stopped: %s kept in %s for the job's restart", ", ".join(checkpoints.saved +
                        checkpoints.resumed), checkpoints.directory)
        raise
    log.info("stage read and fit: %.1f s of a %d s budget (job elapsed %.1f s)", clock.lap("read and fit"), budget,
             clock.elapsed())

    staging = paths.model_dir / STAGING_DIR
    size = model.save(staging)
    log.info("stage save: %.1f MB in %.1f s", size / 1e6, clock.lap("save"))

    summaries = channel_summaries(readers, model, distributed=cluster is not None)
    if check is not None:
        summaries[IMAGES_CHANNEL] = check.summary()
    from . import reports
    reports.write_reports(model, paths.output_data_dir, summaries, clock, budget, size)
    log.info("stage reports: %.1f s", clock.lap("reports"))

    from .metrics import print_metric_lines
    print_metric_lines(model.metrics_)
    publish_model(staging, paths.model_dir)
    clock.lap("publish")
    wall = clock.elapsed()
    log.info("job finished in %.1f s: time budget %d s, %s %.1f s (stages: %s)", wall, budget,
             "overhead beyond the budget" if wall > budget else "finished early by", abs(wall - budget),
             ", ".join(f"{k} {v:.1f} s" for k, v in clock.stages.items()))
    return 0

def channel_readers(configs: dict[str, ChannelConfig], data_dir: Path | None) -> dict[str, ChannelReader]:
    """A reader per CSV channel, of ``data_dir`` (None: of ``input/data`` under the ML root of the process that
    reads; on a cluster each host reads its own)."""
    return {name: ChannelReader(config, data_dir, training=name == TRAIN_CHANNEL) for name, config in configs.items()
            if name != IMAGES_CHANNEL}

def check_image_channel(configs: dict[str, ChannelConfig], paths: Paths, bad_images: str) -> ReferenceCheck:
    """The paths of the CSV channels read from files, against one listing of the images channel, before anything
    is embedded (``imagechannel``); with ``bad_images=fail`` a bad one fails the job here."""
    directory = ImagesDirectory(paths.data_dir)()
    if not directory.is_dir():
        raise DataError(f"channel {IMAGES_CHANNEL!r} is declared but {directory} is not a directory")
    files = {name: ChannelReader(config, paths.data_dir)() for name, config in configs.items()
             if name != IMAGES_CHANNEL and config.input_mode != "Pipe"}
    check = check_references(files, directory)
    if check.bad and bad_images == "fail":
        raise image_failure(check)
    if check.bad:
        log.warning("%d image path(s) name no file of the images channel: they will count as missing images "
                    "(bad_images=missing) and be listed in bad_images.csv", len(check.bad))
    return check

def channel_summaries(readers: dict[str, ChannelReader], model: Any, *, distributed: bool) -> dict[str, dict]:
    """Rows, sources and megabytes per channel for metrics.json: what this process read, or, when the hosts of
    a cluster read, the rows trained on and this host's files."""
    out = {}
    for name, reader in readers.items():
        stats = reader.stats
        if distributed:
            rows = model.metrics_.get("rows", {}).get("train" if name == TRAIN_CHANNEL else "validation", 0)
            out[name] = {"rows": rows, "rows_read_by": "every host", "sources": stats.sources}
        else:
            out[name] = {"rows": stats.rows, "sources": stats.sources, "megabytes": round(stats.bytes_read / 1e6, 3)}
    return out


# ---------------------------------------------------------------------------------------------- failure

def failure_reason(exc: BaseException, clock: Stopwatch) -> str:
    """The text of output/failure: what is wrong and how to fix it, within the first 1,024 characters."""
    if isinstance(exc, HyperparameterError):
        reason = (f"Invalid hyperparameters: {exc}. Fix them in the training job's HyperParameters "
                  "(names, types and ranges: the algorithm's hyperparameter specification).")
    elif isinstance(exc, DataError):
        reason = f"Invalid input data: {exc}"
    elif isinstance(exc, (ConfigError, HostsError)):
        reason = f"Invalid job configuration: {exc}"
    elif isinstance(exc, ClusterError):
        reason = f"Distributed training failed: {exc}. {LOG_HINT}."
    elif isinstance(exc, TimeBudgetError):
        reason = f"Time budget too small: {exc}."
    elif isinstance(exc, JobStopped):
        reason = (f"Training was stopped ({exc}) after {clock.elapsed():.0f} s, before it finished. If the job hit "
                  "its MaxRuntimeInSeconds, raise it above the time budget (n_hours/n_mins/n_secs) plus a few "
                  "minutes, or lower the budget.")
    elif isinstance(exc, MemoryError):
        reason = ("Out of memory while training: choose an instance type with more memory, or train on fewer "
                  f"rows or fewer image columns. {LOG_HINT}.")
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        reason = (f"No space left on device ({exc}): raise the training job's VolumeSizeInGB, or use a lighter "
                  f"quality (smaller models). {LOG_HINT}.")
    else:
        # Not a known user error: the exception's own words (library messages often say what to do), kept
        # short enough that the pointer to the log stays within the first 1,024 characters.
        message = " ".join(str(exc).split()) or "(no message)"
        message = message if message.endswith((".", "!", "?")) else message + "."
        tail = f" {LOG_HINT}."
        room = FAILURE_LIMIT - len(type(exc).__name__) - len(tail) - 2
        if len(message) > room:
            message = message[:room - 1] + "…"
        reason = f"{type(exc).__name__}: {message}{tail}"
    return reason

def _stop(signum: int, frame: Any) -> None:
    raise JobStopped(f"signal {signal.Signals(signum).name}")


# A stop raised while Python runs a finalizer (a library object's __del__ during garbage collection: seen with
# xgboost's Booster) is printed and ignored by Python, and the job would run on until SIGKILL. The hook catches that
# case alone and raises the stop again 50 ms later, in the job's own code.
_ignored_stops: list[JobStopped] = []


def catch_ignored_stops(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """A ``sys.unraisablehook`` that raises again a ``JobStopped`` Python ignored; others go to ``previous``."""
    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, JobStopped):
            previous(unraisable)
            return
        log.warning("the stop request (%s) arrived inside a finalizer, where Python ignores it: raising it again",
                    unraisable.exc_value)
        _ignored_stops.append(unraisable.exc_value)
        signal.signal(signal.SIGALRM, _raise_ignored_stop)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
    return hook


def _raise_ignored_stop(signum: int, frame: Any) -> None:
    if _ignored_stops:
        raise _ignored_stops.pop()


def forget_stops() -> None:
    """A stop is being handled: one ignored earlier must not be raised again."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    _ignored_stops.clear()

def fail(paths: Paths, clock: Stopwatch, exc: BaseException) -> str:
    """Clean up after a failure on a host that trains: an empty model/ and output/failure. Returns the reason."""
    if isinstance(exc, SystemExit) and not exc.code:
        raise exc
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second stop request must not interrupt the clean-up
    forget_stops()
    log.error("training failed after %.1f s:\n%s", clock.elapsed(), "".join(traceback.format_exception(exc)))
    empty_directory(paths.model_dir)
    reason = failure_reason(exc, clock)
    write_failure(paths, reason)
    log.error("failure reason: %s", reason)
    return reason
