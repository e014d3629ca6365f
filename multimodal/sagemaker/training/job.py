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
                                     output/failure). Settings: ``multimodal.sagemaker.environment``.
  input/data/train/                  required: .csv / .csv.gz files with the same header (see channels.py),
                                     read as a stream of record batches: images are embedded batch by batch
  input/data/validation/             optional: early-stops the fusion network; its scores are reported
  model/                             the model (MultimodalEstimator.save); written to model/.partial/ and moved
                                     into place only once everything succeeded: a failed job leaves model/ empty
  output/data/                       metrics.json, leaderboard_<expert>.csv, fusion_training_curve.png, and
                                     confusion_matrix.png (classes) or predicted_vs_actual.png and
                                     residuals.png (regression)
  output/failure                     on failure: what is wrong and how to fix it (the job's FailureReason)
  checkpoints/                       optional (CheckpointConfig's LocalPath, or $MULTIMODAL_CHECKPOINTS): the
                                     head keeps finished work there and a restarted job resumes from it
                                     (checkpointing.py, multimodal.core.checkpoints)

Here: which host does what (one host trains; with several, the head trains on a Ray cluster of all of them and
the others wait for its result). The steps of the host that trains are ``steps`` (configure, run, fail); the
``/opt/ml`` layout and its files are ``multimodal.sagemaker.opt_ml``; the reports ``reports``.

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
import logging
import signal
import sys

from multimodal.logs import configure_logging
from multimodal.sagemaker.environment import quiet_tensorflow
from multimodal.sagemaker.opt_ml import Paths, read_hosts, shortened, write_failure

from .head_client import HeadClient
from .head_server import HeadStatusServer
from .hosts import HostsError, bind_from_env, port_from_env, timeout_from_env
from .steps import LOG_HINT, JobStopped, Stopwatch, _stop, catch_ignored_stops, configure, fail, run

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the hosts' roles

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
    reason = shortened(reason)
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
    previous_hook, sys.unraisablehook = sys.unraisablehook, catch_ignored_stops(sys.unraisablehook)
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
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            # With several hosts SIGTERM stays ignored: the process exits right after this (see settled()).
            signal.signal(signum, signal.SIG_IGN if len(hosts) > 1 and signum == signal.SIGTERM else handler)


if __name__ == "__main__":
    sys.exit(main())
