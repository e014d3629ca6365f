"""`multimodal-train` (`train` in the training image): the SageMaker training-container contract.

A thin layer over MultimodalEstimator. Paths are under ``/opt/ml``, or ``$MULTIMODAL_ML_ROOT`` for local runs:

  input/config/hyperparameters.json  optional; absent = every default. Flat object, every value a string,
                                     validated against hyperparameter_specification.json; keys starting with
                                     ``_`` or ``sagemaker_`` are ignored. A value written JSON-quoted, as the
                                     SageMaker Python SDK writes script-mode hyperparameters (``"\"toy\""``), is
                                     unwrapped to the string inside (``toy``) first.
  input/config/inputdataconfig.json  optional; absent = every channel directory under input/data in File mode
                                     (and a FIFO ``<channel>_0`` in Pipe mode).
  input/config/resourceconfig.json   optional; absent (or one host) = a single host, no Ray cluster. With
                                     several hosts they form a Ray cluster (raycluster.py): every host reads
                                     and embeds its share of the rows (FullyReplicated: every n-th batch of
                                     the same data; ShardedByS3Key: its own files) and the experts are fitted
                                     across the hosts; only the first host (sorted), the head, writes model/
                                     and output/. The others exit with the head's result (0, or 1 with
                                     output/failure). Settings: hosts.py and raycluster.py.
  input/data/train/                  required: .csv / .csv.gz files with the same header (see channels.py),
                                     read as a stream of record batches: images are embedded batch by batch
  input/data/validation/             optional: early-stops the fusion network; its scores are reported
  model/                             the model (MultimodalEstimator.save); written to model/.partial/ and moved
                                     into place only once everything succeeded: a failed job leaves model/ empty
  output/data/                       metrics.json, leaderboard_<expert>.csv, fusion_training_curve.png, and
                                     confusion_matrix.png (classes) or predicted_vs_actual.png and
                                     residuals.png (regression)
  output/failure                     on failure: what is wrong and how to fix it (the job's FailureReason)

Exit status 0 = success, 1 = failure. Metric lines are printed on stdout (format: metrics.py); the
log (stages, row counts, timings, tracebacks) goes to stderr. SIGTERM (StopTrainingJob, MaxRuntimeInSeconds)
ends the job as a failure with a reason and an empty model/ (on an extra host: exit 1, nothing written).

Time: ``fit`` spends the budget n_hours*3600 + n_mins*60 + n_secs; the entrypoint adds start-up, reading
(≈ 1 s per 100 MB of CSV), saving, reports and interpreter exit, about 5 s in all, plus the time to predict the
rows of the confusion matrix (the validation channel, or at most 500 training rows) while the classifier does
not supply it. The last log line gives the figures ("job finished in ... s: time budget ... s, overhead ...").
Measured on 2 shared CPU cores (load ≈ 5), 600 rows without images, n_secs=60, quality=toy: 72 s wall =
60 s budget + 7 s that ``fit`` overran (each expert's minimum time) + 5 s entrypoint (start-up 1.8 s, save
0.1 s, reports 1.1 s, exit 2.2 s).
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import shutil
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multimodal.core.artifact import CONFIG_FILE, REGRESSION
from multimodal.core.errors import ClusterError, DataError, HyperparameterError, TimeBudgetError
from multimodal.core.hyperparameters import (
    IGNORED_PREFIXES,
    resolve,
    time_budget_seconds,
)
from multimodal.logs import configure_logging
from multimodal.sagemaker.contract import ConfigError
from multimodal.sagemaker.environment import TRAINING_JOB_NAME, ml_root, quiet_tensorflow

from .channels import (
    ChannelConfig,
    ChannelReader,
    discover_channels,
    load_input_data_config,
)
from .imagechannel import IMAGES_CHANNEL, ImagesDirectory, ReferenceCheck, check_references
from .imagechannel import failure as image_failure
from .hosts import (
    HeadClient,
    HeadStatusServer,
    HostsError,
    bind_from_env,
    port_from_env,
    timeout_from_env,
)

if TYPE_CHECKING:
    from .raycluster import RayCluster

log = logging.getLogger(__name__)

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"
STAGING_DIR = ".partial"
FAILURE_LIMIT = 1024  # SageMaker keeps the first 1,024 characters of output/failure as the FailureReason
SHARDED = "ShardedByS3Key"
LOG_HINT = "The traceback is in the training job's log (CloudWatch /aws/sagemaker/TrainingJobs)"


class JobStopped(BaseException):
    """SIGTERM (StopTrainingJob, MaxRuntimeInSeconds) or SIGINT. A BaseException, so that no library swallows it."""


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def from_env(cls) -> "Paths":
        return cls(ml_root())

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"


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


# ---------------------------------------------------------------------------------------------- configuration

def read_json_config(path: Path, what: str, default: Any) -> Any:
    if not path.is_file():
        log.info("%s not found: %s", path.name, what)
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name} is not valid JSON ({exc}); SageMaker writes it from the job request: "
                          "check how the job was created") from None


def read_hyperparameters(paths: Paths) -> dict[str, Any]:
    raw = read_json_config(paths.config_dir / "hyperparameters.json", "using every default hyperparameter", {})
    if not isinstance(raw, dict):
        raise HyperparameterError(f"hyperparameters.json must be a JSON object of name/value strings, e.g. "
                                  f'{{"n_mins": "10"}}, not {type(raw).__name__}')
    values, unwrapped = unwrap_json_quoted(raw)
    if unwrapped:
        log.info("hyperparameter(s) %s were written JSON-quoted (as the SageMaker Python SDK writes script-mode "
                 "hyperparameters): the string inside the quotes is used", ", ".join(unwrapped))
    return values


def unwrap_json_quoted(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Replace each value that is a JSON string literal (``"\\"toy\\""``) by the string it encodes (``toy``).

    The SageMaker Python SDK json.dumps every hyperparameter of a script-mode estimator, so a string arrives
    quoted while a number does not (``"5"`` stays ``"5"``). Only one level of quoting is removed, and only when
    the whole value is one JSON string; what is still invalid afterwards fails validation as usual. Keys that
    are not ours (``_…``, ``sagemaker_…``) are left alone. Returns the values and the names unwrapped."""
    values, unwrapped = dict(raw), []
    for name, value in raw.items():
        if name.startswith(IGNORED_PREFIXES) or not isinstance(value, str):
            continue
        text = value.strip()
        if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
            continue
        try:
            inner = json.loads(text)
        except ValueError:
            continue
        if isinstance(inner, str):
            values[name] = inner
            unwrapped.append(name)
    return values, unwrapped


def read_hosts(paths: Paths) -> tuple[str, list[str]]:
    default = {"current_host": "algo-1", "hosts": ["algo-1"]}
    config = read_json_config(paths.config_dir / "resourceconfig.json", "a single host", default)
    if not isinstance(config, dict):
        raise ConfigError("resourceconfig.json must be a JSON object with current_host and hosts")
    hosts = config.get("hosts") or [config.get("current_host") or "algo-1"]
    current = config.get("current_host") or sorted(hosts)[0]
    return str(current), sorted(str(h) for h in hosts)


def channel_configs(paths: Paths) -> dict[str, ChannelConfig]:
    declared = load_input_data_config(paths.config_dir / "inputdataconfig.json")
    if declared is None:
        declared = discover_channels(paths.data_dir)
        log.info("inputdataconfig.json not found: channels found under %s: %s", paths.data_dir,
                 ", ".join(f"{c.name} ({c.input_mode})" for c in declared.values()) or "none")
    unknown = sorted(set(declared) - {TRAIN_CHANNEL, VALIDATION_CHANNEL, IMAGES_CHANNEL})
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
    return {name: declared[name] for name in (TRAIN_CHANNEL, VALIDATION_CHANNEL, IMAGES_CHANNEL) if name in declared}


# ---------------------------------------------------------------------------------------------- model directory

def empty_directory(directory: Path) -> int:
    """Remove everything inside ``directory`` (kept itself: on SageMaker it may be a mount point)."""
    removed = 0
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def publish_model(staging: Path, model_dir: Path) -> None:
    """Move the saved model from ``model/.partial`` into ``model/``; model_config.json (what marks a complete
    model) is moved last, so an interruption never leaves something that passes for a model."""
    entries = sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_FILE)
    for entry in entries:
        target = model_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        entry.rename(target)
    staging.rmdir()


# ---------------------------------------------------------------------------------------------- the job

@dataclass(frozen=True)
class JobConfig:
    hyperparameters: dict[str, Any]
    budget: int
    channels: dict[str, ChannelConfig]


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
    from multimodal.core.estimator import MultimodalEstimator
    model = MultimodalEstimator(**hyperparameters)
    if cluster is None:
        model.fit(readers[TRAIN_CHANNEL](), readers[VALIDATION_CHANNEL]() if VALIDATION_CHANNEL in readers else None,
                  images=images() if images else None)
    else:
        model.fit(cluster.data(readers, images=images, replicated=configs[TRAIN_CHANNEL].distribution != SHARDED))
    log.info("stage read and fit: %.1f s of a %d s budget (job elapsed %.1f s)", clock.lap("read and fit"), budget,
             clock.elapsed())

    staging = paths.model_dir / STAGING_DIR
    size = model.save(staging)
    log.info("stage save: %.1f MB in %.1f s", size / 1e6, clock.lap("save"))

    summaries = channel_summaries(readers, model, distributed=cluster is not None)
    if check is not None:
        summaries[IMAGES_CHANNEL] = check.summary()
    write_reports(model, paths, summaries, clock, budget, size)
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


def write_reports(model: Any, paths: Paths, channels: dict[str, dict], clock: Stopwatch, budget: int,
                  model_bytes: int) -> None:
    """output/data: metrics.json (the model's ``metrics_`` and a ``job`` block), the experts' leaderboards, the
    fusion training curve, and the confusion matrix (classification) or the predicted-vs-actual scatter and the
    residual histogram (regression)."""
    from . import reports
    out = paths.output_data_dir
    problem_type = model.problem_type_
    regression = problem_type == REGRESSION
    metrics = dict(model.metrics_)  # for regression this holds "target" (mean, std, min, max of the training target)
    block = model.metrics_.get("validation") or {}
    matrix = None if regression else (block.get("confusion_matrix") or None)
    title = f"fused model on the {model.metrics_.get('validation_source', 'validation')}"
    metrics["job"] = {
        "time_budget_seconds": budget,
        "seconds_before_reports": round(clock.elapsed(), 2),
        "stages_seconds": dict(clock.stages),
        "channels": channels,
        "model_megabytes": round(model_bytes / 1e6, 3),
        "problem_type": problem_type,
        **({} if regression else {"classes": list(model.classes_)}),
        "experts": model.expert_names_,
    }
    if matrix is not None:
        metrics["confusion_matrix"] = {"title": title, "classes": list(model.classes_),
                                       "rows_true_columns_predicted": matrix}
    reports.write_metrics_json(metrics, out)
    if getattr(model, "bad_images_", None):
        reports.write_bad_images(model.bad_images_, out)
    boards = reports.write_leaderboards(model.leaderboards_, out)
    if matrix is not None:
        reports.plot_confusion_matrix(matrix, model.classes_, out / reports.CONFUSION_MATRIX_FILE, title=title)
    if regression:
        predictions = getattr(model, "validation_predictions_", None)
        if predictions is not None and len(predictions):
            actual, predicted = predictions["actual"], predictions["predicted"]
            reports.plot_predicted_vs_actual(actual, predicted, out / reports.PREDICTED_VS_ACTUAL_FILE, title=title)
            reports.plot_residuals(actual, predicted, out / reports.RESIDUALS_FILE, title=title)
        else:
            log.warning("no validation predictions: %s and %s not written", reports.PREDICTED_VS_ACTUAL_FILE,
                        reports.RESIDUALS_FILE)
    curve = model.metrics_.get("fusion_curve") or {}
    if curve:
        reports.plot_training_curve(curve, out / reports.TRAINING_CURVE_FILE)
    log.info("reports in %s: %s", out, ", ".join(sorted(p.name for p in out.iterdir())))
    if not boards:
        log.warning("no expert leaderboard to write")


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


def write_failure(paths: Paths, reason: str) -> None:
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        paths.failure_file.write_text(reason + "\n", encoding="utf-8")
    except OSError:
        log.exception("could not write %s", paths.failure_file)


def _stop(signum: int, frame: Any) -> None:
    raise JobStopped(f"signal {signal.Signals(signum).name}")


def fail(paths: Paths, clock: Stopwatch, exc: BaseException) -> str:
    """Clean up after a failure on a host that trains: an empty model/ and output/failure. Returns the reason."""
    if isinstance(exc, SystemExit) and not exc.code:
        raise exc
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second stop request must not interrupt the clean-up
    log.error("training failed after %.1f s:\n%s", clock.elapsed(), "".join(traceback.format_exception(exc)))
    empty_directory(paths.model_dir)
    reason = failure_reason(exc, clock)
    write_failure(paths, reason)
    log.error("failure reason: %s", reason)
    return reason


def train_or_fail(paths: Paths, clock: Stopwatch, hosts: tuple[str, list[str]] | None = None) -> tuple[int, str]:
    """Run the job on the host that trains: (0, "") or (1, the failure reason), failures cleaned up. With
    ``hosts`` (this host, every host), on a Ray cluster of all of them, stopped before returning."""
    try:
        job = configure(paths, clock)
        if hosts is None:
            return run(paths, clock, job), ""
        from .raycluster import RayCluster
        cluster = RayCluster.start(hosts[0], hosts[1], timeout_from_env())
        clock.lap("Ray cluster")
        try:
            return run(paths, clock, job, cluster), ""
        finally:
            cluster.close()
    except BaseException as exc:  # noqa: BLE001 - every failure must leave a reason and no model
        return 1, fail(paths, clock, exc)


def lead(paths: Paths, clock: Stopwatch, current: str, hosts: list[str]) -> int:
    """The head of a multi-host job: a Ray cluster of every host trains; the others wait on its status service."""
    others = [h for h in hosts if h != current]
    log.info("%d hosts (%s): this host (%s) starts a Ray cluster of all of them, reads and embeds the data and "
             "fits the experts across them, and alone writes the model", len(hosts), ", ".join(hosts), current)
    try:
        server = HeadStatusServer(port_from_env(), others=others, wait_seconds=timeout_from_env(), name=current,
                                  bind=bind_from_env()).start()
    except BaseException as exc:  # noqa: BLE001 - e.g. the port is taken: fail now, not after training
        fail(paths, clock, exc)
        return 1
    with server:
        code, reason = train_or_fail(paths, clock, (current, hosts))
        # The result is final: a stop request from now on only cuts short the wait for the other hosts.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: server.stop_waiting())
        server.report(code, reason)
    settled()
    return code


def follow_head(paths: Paths, current: str, head: str) -> int:
    """An extra host: lend a Ray node to the head's cluster, read data only when the head's tasks ask, never
    touch model/ (it may be the head's, shared); wait for the head's result and exit with it. output/failure is
    written only for a problem this host detects itself."""
    log.info("host %s: joining the Ray cluster of %s, which drives the training and writes the model", current, head)
    try:
        client = HeadClient(head, port_from_env(), timeout=timeout_from_env(), name=current)
    except HostsError as exc:
        return extra_host_failed(paths, f"Invalid job configuration on host {current}: {exc}.")
    node = None
    with client:
        try:
            client.connect()
            from .raycluster import join
            node = join(current, head, timeout_from_env(), cancelled=client.finished)
            code, reason = client.wait()
        except HostsError as exc:
            return extra_host_failed(paths, f"Host {current} could not follow the training host {head}: {exc}.")
        except Exception as exc:  # a problem this host found itself: say so, as for the others
            log.exception("host %s failed while waiting for %s", current, head)
            return extra_host_failed(paths, f"Host {current} failed while waiting for the training host {head}: "
                                            f"{type(exc).__name__}: {exc}. {LOG_HINT}.")
        except JobStopped as exc:
            outcome = client.outcome_if_sent()
            if outcome is None:
                log.error("host %s stopped (%s) while waiting for %s: exit 1, nothing written", current, exc, head)
                return 1
            code, reason = outcome
        finally:
            if node is not None:
                node.stop()
    settled()
    if code == 0:
        log.info("the training host %s succeeded: exit 0 (the job's model is %s's)", head, head)
        return 0
    return extra_host_failed(paths, f"The training host {head} failed: {reason or f'exit status {code}'}")


def extra_host_failed(paths: Paths, reason: str) -> int:
    reason = reason if len(reason) <= FAILURE_LIMIT else reason[:FAILURE_LIMIT - 1] + "…"
    log.error("failure reason: %s", reason)
    write_failure(paths, reason)
    return 1


def settled() -> None:
    """This host's result is final (and, on the head, about to be reported). From now on a stop request must not
    change it: docker compose (the SDK's local mode) stops every container once one exits, so the host that
    finishes last is always sent SIGTERM, and on the head that must not empty a published model."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimodal-train", description="Run the SageMaker training job: read /opt/ml (or $MULTIMODAL_ML_ROOT), "
                                             "train, write model/ and output/.")
    parser.add_argument("mode", nargs="?", choices=["train"], help="accepted for `docker run IMAGE train`")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    clock = Stopwatch()
    configure_logging()
    quiet_tensorflow()
    paths = Paths.from_env()
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    hosts: list[str] = []
    try:
        try:
            current, hosts = read_hosts(paths)
        except BaseException as exc:  # noqa: BLE001 - which host this is is unknown: fail as a single host does
            fail(paths, clock, exc)
            return 1
        if len(hosts) > 1 and current != hosts[0]:
            return follow_head(paths, current, hosts[0])
        if len(hosts) > 1:
            return lead(paths, clock, current, hosts)
        return train_or_fail(paths, clock)[0]
    finally:
        for signum, handler in previous.items():
            # With several hosts SIGTERM stays ignored: the process exits right after this (see settled()).
            signal.signal(signum, signal.SIG_IGN if len(hosts) > 1 and signum == signal.SIGTERM else handler)


if __name__ == "__main__":
    sys.exit(main())
