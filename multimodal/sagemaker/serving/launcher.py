"""``multimodal-serve``: the inference container's server (``docker run IMAGE serve``).

gunicorn (asyncio workers, no ``--preload``, no control socket) serves the Flask app of ``app``
behind the asyncio front of ``front``.
The arbiter binds the port before any model code runs, so connections are accepted at once. Each worker
loads the model from ``$MULTIMODAL_ML_ROOT/model`` itself in a background thread; meanwhile ``/ping``
answers 503, then 200 once the model is loaded and a trial prediction has succeeded. If a worker cannot load
the model (or dies while loading) the whole server logs why and exits with status 3, so that a batch
transform job fails at once instead of pinging a dead container for 30 minutes. SIGTERM is graceful: workers
stop accepting, finish in-flight requests (up to the graceful timeout), then the server exits 0.

Environment variables: the server's whole interface (hyperparameters play no part in serving).

| name | default | meaning |
|---|---|---|
| `SAGEMAKER_BIND_TO_PORT` | `8080` | port to listen on; SageMaker sets it only for images labelled `com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true` |
| `MULTIMODAL_BIND_HOST` | `0.0.0.0` | address to listen on |
| `SAGEMAKER_MODEL_SERVER_WORKERS`, then `MODEL_SERVER_WORKERS` | 1 when the container has at most 6 GiB of memory (every serverless endpoint); otherwise min(cores, ⌊0.8 × available memory ÷ (1.2 GB + model directory size)⌋), at least 1; in a batch transform at most `SAGEMAKER_MAX_CONCURRENT_TRANSFORMS` | worker processes, each with its own copy of the model (one worker measured 0.50 GB RSS warm, 0.91 GB peak after a 6 MB request, small model with an image column; see "Serverless endpoints" in the README for larger models). Cores and memory honour the CPU affinity and cgroup limits |
| `SAGEMAKER_BATCH` | `false` | set to `true` by batch transform: the worker count is then capped by `SAGEMAKER_MAX_CONCURRENT_TRANSFORMS` |
| `SAGEMAKER_MAX_CONCURRENT_TRANSFORMS` | — | set by batch transform (MaxConcurrentTransforms): no more workers than requests that can arrive at once, so fewer model copies load at start and each worker gets more compute threads (one transform at a time: one worker with every core) |
| `SAGEMAKER_BATCH_STRATEGY` | `MULTI_RECORD` | set by batch transform; reported as `BatchStrategy` by `/execution-parameters` (`MULTI_RECORD` or `SINGLE_RECORD`; every request may carry one record or many either way) |
| `MULTIMODAL_THREADS` | max(1, cores ÷ workers) | compute threads per worker (OMP, MKL, OpenBLAS, torch, TensorFlow intra-op), so that workers × threads ≤ cores |
| `MULTIMODAL_HTTP_THREADS` | `8` | requests each worker handles at once once they have fully arrived (bodies are read by the worker's event loop, which also answers `/ping` itself, so neither slow clients nor busy threads delay a ping); predictions run one at a time per worker |
| `SAGEMAKER_MODEL_SERVER_TIMEOUT`, then `MODEL_SERVER_TIMEOUT` | `900` | seconds one prediction may run before its worker is restarted (also gunicorn's worker timeout); above SageMaker's default `InvocationsTimeoutInSeconds` of 600 |
| `MULTIMODAL_GRACEFUL_TIMEOUT` | `120` | seconds in-flight requests get to finish after SIGTERM |
| `MULTIMODAL_KEEPALIVE` | `5` | seconds an idle keep-alive connection is kept |
| `MULTIMODAL_MODEL_LOAD_TIMEOUT` | `900` | seconds a worker may take to load the model and make its trial prediction; longer is a failed start (exit 3) |
| `SAGEMAKER_MAX_PAYLOAD_IN_MB` | `6` | `MaxPayloadInMB` of `/execution-parameters`; larger bodies (MB = 2²⁰ bytes) get 413. `MaxConcurrentTransforms` = workers, capped so that it × `MaxPayloadInMB` ≤ 100 |
| `MULTIMODAL_MAX_PAYLOAD_MB` | — (`SAGEMAKER_MAX_PAYLOAD_IN_MB`) | the largest body taken (MB, at most 1024), when it should differ from the batch payload: an async endpoint's requests reach 1 GB. A body over 32 MB is parsed and predicted in slices of about 32 MB of whole records, so a request's working memory follows the slice (the body itself is held once or twice); records are numbered from the body's start in errors |
| `MULTIMODAL_CSV_PROBABILITIES` | `false` | `true`: CSV responses gain one probability column per class after `ID,label`, in the order of the model's classes (the `classes` list of `model_config.json`: sorted labels); the response header `X-Output-Columns` names the columns. A regression model has no classes: with `true` it refuses to load (exit 3) rather than answer without the promised columns |
| `MULTIMODAL_BAD_RECORDS` | `fail` | `fail`: a request with a bad record gets 400 naming it; `emit`: the bad record's output is `ID,ERROR: <reason>` (JSON: `{"ID": …, "label": null, "probabilities": null, "error": "<reason>"}`) and the other records are predicted |
| `MULTIMODAL_ML_ROOT` | `/opt/ml` | the model is read from `<root>/model` |
| `SAGEMAKER_MULTI_MODEL` | `false` | set to `true` by SageMaker on a multi-model endpoint (the image carries the label `com.amazonaws.sagemaker.capabilities.multi-models=true`): no model at start; SageMaker's model API (`POST /models`, `GET /models`, `GET`/`DELETE /models/<name>`, `POST /models/<name>/invoke`) loads, lists, unloads and invokes models, each answering as a single-model endpoint would (see `multi_model`). One worker process holds every model (the worker-count settings are not used), with every core's compute threads |
| `MULTIMODAL_MODELS_MEMORY_MB` | 0.8 × the memory available at start | multi-model endpoints: the resident memory (MB = 2²⁰ bytes) the loaded models may take the worker to; a load past it gets 507, and SageMaker unloads other models and loads again |
| `MULTIMODAL_LOG_LEVEL` | `info` | log level of the server and gunicorn (`info` logs one line per invocation) |
| `MULTIMODAL_CACHE_DIR` | `$TMPDIR/multimodal-cache` | where `KERAS_HOME`, `TORCH_HOME`, `MPLCONFIGDIR`, `TORCHINDUCTOR_CACHE_DIR` and `XDG_CACHE_HOME` point unless already set: nothing is written to `$HOME` |
| `MULTIMODAL_MAX_IMAGE_PIXELS` | `40000000` | larger images are rejected (see `multimodal.core.images`) |
| `MULTIMODAL_WEIGHTS_DIR` | `/opt/multimodal/weights` | baked-in image encoder weights (see `multimodal.core.images`) |
| `MULTIMODAL_IMAGE_DIR` | — | a directory (e.g. mounted with `docker run -v`) that relative `_image` paths point into; unset, a record with a relative path is a bad record (400, or an `ERROR` record in `emit` mode) saying to send base64 or an `s3://` URI. A path may not leave it (`..`, absolute paths, symbolic links out) |
| `MULTIMODAL_S3_ALLOW` | — (any object the credentials may read) | comma-separated `s3://bucket` or `s3://bucket/prefix` entries: the only S3 objects requests can make the container fetch with its role's credentials; a URI outside them is a bad record naming the rule |
| `MULTIMODAL_S3_TIMEOUT_SECONDS` | `20` | connect and read timeout of an `s3://` fetch (the whole object: 4× this); boto3's own settings apply otherwise (`AWS_ENDPOINT_URL(_S3)`, `AWS_REGION`, `AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`, default `standard`) |
| `MULTIMODAL_MAX_IMAGE_BYTES` | `50000000` | larger image files or objects are refused before being read whole |

`OMP_NUM_THREADS`, `MKL_NUM_THREADS`, `OPENBLAS_NUM_THREADS` and `TF_NUM_INTRAOP_THREADS` are set from
`MULTIMODAL_THREADS` (and `TF_NUM_INTEROP_THREADS` to 1): set that one, not them. `OMP_WAIT_POLICY` defaults to
`PASSIVE` (idle OpenMP threads sleep rather than spin).

Exit status: 0 after SIGTERM; 2 for an invalid setting; 3 when the model cannot be loaded (missing or broken
model directory, failed trial prediction, load timeout, a worker killed while loading, CSV probabilities asked
of a regression model).

Regression models (`problem_type_` "regression"): the response is `ID,prediction` per CSV record
(`X-Output-Columns: ID,prediction`) and `{"ID": …, "prediction": …}` per JSON record, the number as Python's
`repr` of the float64 (see `encode`); a bad record in `emit` mode is `ID,ERROR: <reason>` /
`{"ID": …, "prediction": null, "error": "<reason>"}`. They have no classes, so `MULTIMODAL_CSV_PROBABILITIES=true`
stops the server at load (exit 3, the log says why).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from multimodal.core import settings as core_settings
from multimodal.core.artifact import CONFIG_FILE
from multimodal.core.errors import DataError
from multimodal.core.imagerefs import parse_allow_list
from multimodal.core.resources import available_memory, cpu_count, directory_size, memory_limit
from multimodal.logs import configure_logging
from multimodal.sagemaker.contract import (
    DEFAULT_MAX_PAYLOAD_MB,
    MULTI_RECORD,
    PAYLOAD_BUDGET_MB,
    ConfigError,
    batch_strategy,
)
from multimodal.sagemaker.environment import ML_ROOT, ml_root

from .server_settings import (
    DEFAULT_LOAD_TIMEOUT,
    MIB,
    ServerSettings,
    bad_records_mode,
    env_bool,
    env_int,
    env_megabytes,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080
DEFAULT_HOST = "0.0.0.0"
DEFAULT_TIMEOUT = 900
DEFAULT_GRACEFUL_TIMEOUT = 120
DEFAULT_KEEPALIVE = 5
DEFAULT_HTTP_THREADS = 8
# Memory of one worker besides the model's own size. bench/startup_bench.py measured 0.50 GB RSS once warm and
# 0.91 GB peak after a ~6 MB request (small model with an image column; the fusion network runs in numpy, so
# TensorFlow is never loaded: before that, 1.26 GB warm and 1.42–2.1 GB peak).
WORKER_BASE_BYTES = 1.2e9  # sized for the peak, not the warm figure
MEMORY_FRACTION = 0.8
SMALL_MEMORY_BYTES = 6 * 2**30  # a serverless endpoint's largest MemorySizeInMB (6144): one worker up to this
EXIT_LOAD_FAILED = 3  # the server's status when the model cannot be served (gunicorn's WORKER_BOOT_ERROR)
# A worker that cannot load the model exits with this; the arbiter's child_exit hook then halts the server with
# EXIT_LOAD_FAILED. (Exiting with 3 itself makes gunicorn halt too, but two workers failing at once then crash
# the arbiter: it raises HaltServer again while stopping.)
WORKER_EXIT_LOAD_FAILED = 23
EXIT_HUNG = 1  # a worker whose prediction outran the timeout: the arbiter restarts it
EXIT_CONFIG = 2
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
CACHE_VARIABLES = {"KERAS_HOME": "keras", "TORCH_HOME": "torch", "MPLCONFIGDIR": "matplotlib",
                   "TORCHINDUCTOR_CACHE_DIR": "torchinductor", "XDG_CACHE_HOME": "xdg"}


IMAGE_DIR_ENV = "MULTIMODAL_IMAGE_DIR"
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"  # set by SageMaker for an image labelled ...capabilities.multi-models
MODELS_MEMORY_ENV = "MULTIMODAL_MODELS_MEMORY_MB"
MAX_BODY_ENV = "MULTIMODAL_MAX_PAYLOAD_MB"
MAX_BODY_MB = 1024  # an async endpoint's largest payload (1 GB, through S3)


@dataclass
class ServeConfig:
    model_dir: Path
    host: str
    port: int
    workers: int
    workers_reason: str
    threads: int
    http_threads: int
    timeout: int
    graceful_timeout: int
    keepalive: int
    load_timeout: int
    max_payload_mb: float
    max_body_mb: float | None
    batch_strategy: str
    csv_probabilities: bool
    bad_records: str
    image_dir: Path | None
    log_level: str
    cache_dir: Path
    cores: int
    memory: dict = field(default_factory=dict)
    multi_model: bool = False
    models_memory_bytes: int = 0  # multi-model endpoints: the RSS the loaded models may take the worker to

    def server_settings(self) -> ServerSettings:
        return ServerSettings(workers=self.workers, max_payload_mb=self.max_payload_mb,
                              max_body_mb=self.max_body_mb, batch_strategy=self.batch_strategy,
                              csv_probabilities=self.csv_probabilities, bad_records=self.bad_records,
                              request_timeout=self.timeout, load_timeout=self.load_timeout, image_dir=self.image_dir)


# ---------------------------------------------------------------------------------------------- resources

def model_memory_estimate(model_dir: Path) -> int:
    return int(WORKER_BASE_BYTES + directory_size(model_dir))


def default_workers(cores: int, available: int, per_worker: int) -> int:
    return max(1, min(cores, int(available * MEMORY_FRACTION // max(per_worker, 1))))


def worker_count(environ: Mapping[str, str], cores: int, memory: dict, model_dir: Path) -> tuple[int, str, bool]:
    """(workers, why, multi-model endpoint?): from the environment, else from the cores and the memory."""
    batch = env_bool(environ, "SAGEMAKER_BATCH")
    concurrent = env_int(environ, ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS",), None)
    workers = env_int(environ, ("SAGEMAKER_MODEL_SERVER_WORKERS", "MODEL_SERVER_WORKERS"), None)
    if env_bool(environ, MULTI_MODEL_ENV):  # SageMaker loads a model by one request, which one worker receives
        ignored = f"; the {workers} worker(s) asked for are not used" if workers not in (None, 1) else ""
        return 1, "multi-model endpoint: one worker holds every model" + ignored, True
    if workers is not None:
        return workers, "set by the environment", False
    if memory["limit_bytes"] <= SMALL_MEMORY_BYTES:
        # Every serverless endpoint (at most 6 GB, and SageMaker adds containers for concurrency), and the
        # smallest instances: one model copy, with every core's threads, leaves room for a large request.
        return 1, (f"{memory['limit_bytes'] / 2**30:.1f} GiB of memory, at most a serverless endpoint's "
                   f"{SMALL_MEMORY_BYTES / 2**30:g} GiB: one worker"), False
    per_worker = model_memory_estimate(model_dir) if model_dir.is_dir() else int(WORKER_BASE_BYTES)
    memory["per_worker_estimate_bytes"] = per_worker
    workers = default_workers(cores, memory["available_bytes"], per_worker)
    reason = (f"min({cores} cores, {MEMORY_FRACTION:g} × {memory['available_bytes'] / 1e9:.1f} GB available / "
              f"{per_worker / 1e9:.2f} GB per worker)")
    if batch and concurrent is not None and concurrent < workers:
        # A batch transform sends at most MaxConcurrentTransforms requests at once: more workers would only
        # load the model for nothing (slower start, less memory); each worker gets more compute threads.
        workers, reason = concurrent, f"batch transform, SAGEMAKER_MAX_CONCURRENT_TRANSFORMS={concurrent}"
    return workers, reason, False


# ---------------------------------------------------------------------------------------------- configuration

def read_config(environ: Mapping[str, str] | None = None) -> ServeConfig:
    environ = os.environ if environ is None else environ
    root = ml_root(environ)
    model_dir = root / "model"
    cores = cpu_count()
    memory = {"available_bytes": available_memory(), "limit_bytes": memory_limit()}
    workers, reason, multi_model = worker_count(environ, cores, memory, model_dir)
    threads = env_int(environ, ("MULTIMODAL_THREADS",), max(1, cores // workers))
    max_payload_mb = env_megabytes(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", PAYLOAD_BUDGET_MB) or DEFAULT_MAX_PAYLOAD_MB
    max_body_mb = env_megabytes(environ, MAX_BODY_ENV, MAX_BODY_MB)
    # as the platform spells it (MULTI_RECORD), or as CreateTransformJob does (MultiRecord)
    raw_strategy = (environ.get("SAGEMAKER_BATCH_STRATEGY") or MULTI_RECORD).strip()
    strategy = batch_strategy(raw_strategy)
    if strategy is None:
        raise ConfigError(f"SAGEMAKER_BATCH_STRATEGY={raw_strategy.upper()!r}: expected MULTI_RECORD or SINGLE_RECORD")
    try:
        bad_records = bad_records_mode(environ.get("MULTIMODAL_BAD_RECORDS") or "fail")
    except ValueError as exc:
        raise ConfigError(f"MULTIMODAL_BAD_RECORDS: {exc}") from None
    image_dir = environ.get(IMAGE_DIR_ENV, "").strip() or None
    if image_dir is not None and not Path(image_dir).is_dir():
        raise ConfigError(f"{IMAGE_DIR_ENV}={image_dir!r}: no such directory (mount the image folder there, or unset "
                          "it to accept only base64 and s3:// images)")
    try:
        parse_allow_list(core_settings.S3_ALLOW.read(environ))
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    models_mb = env_int(environ, (MODELS_MEMORY_ENV,), None)
    models_memory = models_mb * MIB if models_mb else int(MEMORY_FRACTION * memory["available_bytes"])
    log_level = (environ.get("MULTIMODAL_LOG_LEVEL") or "info").strip().lower()
    if log_level not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(f"MULTIMODAL_LOG_LEVEL={log_level!r}: expected debug, info, warning, error or critical")
    return ServeConfig(
        model_dir=model_dir,
        host=(environ.get("MULTIMODAL_BIND_HOST") or DEFAULT_HOST).strip(),
        port=env_int(environ, ("SAGEMAKER_BIND_TO_PORT",), DEFAULT_PORT),
        workers=workers,
        workers_reason=reason,
        threads=threads,
        http_threads=env_int(environ, ("MULTIMODAL_HTTP_THREADS",), DEFAULT_HTTP_THREADS, minimum=2),
        timeout=env_int(environ, ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "MODEL_SERVER_TIMEOUT"), DEFAULT_TIMEOUT),
        graceful_timeout=env_int(environ, ("MULTIMODAL_GRACEFUL_TIMEOUT",), DEFAULT_GRACEFUL_TIMEOUT),
        keepalive=env_int(environ, ("MULTIMODAL_KEEPALIVE",), DEFAULT_KEEPALIVE),
        load_timeout=env_int(environ, ("MULTIMODAL_MODEL_LOAD_TIMEOUT",), DEFAULT_LOAD_TIMEOUT),
        max_payload_mb=max_payload_mb,
        max_body_mb=max_body_mb,
        batch_strategy=strategy,
        csv_probabilities=env_bool(environ, "MULTIMODAL_CSV_PROBABILITIES"),
        bad_records=bad_records,
        image_dir=Path(image_dir) if image_dir else None,
        log_level=log_level,
        cache_dir=Path(environ.get("MULTIMODAL_CACHE_DIR") or Path(tempfile.gettempdir()) / "multimodal-cache"),
        cores=cores,
        memory=memory,
        multi_model=multi_model,
        models_memory_bytes=models_memory,
    )


def prepare_environment(config: ServeConfig, environ: dict[str, str] | None = None) -> None:
    """Thread counts for every numeric library, and caches away from $HOME (inherited by the workers)."""
    environ = os.environ if environ is None else environ
    for name in THREAD_VARIABLES:
        environ[name] = str(config.threads)
    environ["TF_NUM_INTEROP_THREADS"] = "1"
    # Idle OpenMP threads sleep instead of spinning: with spinning, 2 threads per worker on 2 busy cores made
    # image encoding 1.7× slower (measured); PASSIVE was as fast as 1 thread or faster.
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    environ.setdefault("KERAS_BACKEND", "tensorflow")
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, sub in CACHE_VARIABLES.items():
        if not environ.get(name):
            environ[name] = str(config.cache_dir / sub)


def set_torch_threads(threads: int) -> None:
    if "torch" in sys.modules:
        import torch
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- gunicorn

def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001
            pass
    sys.stderr.flush()
    sys.stdout.flush()


def worker_app(config: ServeConfig, state_dir: Path) -> Any:
    """The ASGI app of one worker: loads the model in a thread; a failed load ends the whole server."""
    from .app import PING_STATE, create_app
    from .front import Front

    def load(directory: Path = config.model_dir) -> Any:
        set_torch_threads(config.threads)
        # the base class: the model directory says whether it is a classifier or a regression model
        from multimodal.core.estimator import MultimodalEstimator
        model = MultimodalEstimator.load(directory)
        set_torch_threads(config.threads)
        return model

    def failed(exc: BaseException) -> None:
        log.critical("worker %d: the model in %s cannot be served; stopping the server (exit %d)", os.getpid(),
                     config.model_dir, EXIT_LOAD_FAILED)
        (state_dir / f"failed.{os.getpid()}").touch()
        _flush_logs()
        os._exit(WORKER_EXIT_LOAD_FAILED)

    def ready() -> None:
        (state_dir / f"ready.{os.getpid()}").touch()

    def hung(seconds: float) -> None:
        log.critical("worker %d: restarting after a prediction ran %.0f s (timeout %d s)", os.getpid(), seconds,
                     config.timeout)
        _flush_logs()
        os._exit(EXIT_HUNG)

    started = [False]

    def server_started() -> bool:
        """Whether every worker has been ready once (ready markers, and a flag once that happened)."""
        if not started[0]:
            flag = state_dir / "started"
            if flag.exists() or len(list(state_dir.glob("ready.*"))) >= config.workers:
                flag.touch()
                started[0] = True
        return started[0]

    if config.multi_model:
        from .multi_model import create_multi_model_app
        app = create_multi_model_app(load, settings=config.server_settings(), memory_limit=config.models_memory_bytes,
                                     on_hang=hung)
        ready()  # serving at once: models come with the requests that load them
    else:
        app = create_app(load, settings=config.server_settings(), on_load_failure=failed, on_ready=ready,
                         on_hang=hung, server_started=server_started, description=f"the model in {config.model_dir}")
    return Front(app, ping=app.extensions[PING_STATE], max_body=config.server_settings().max_payload_bytes,
                 threads=config.http_threads)


def worker_class() -> type:
    """gunicorn's asyncio (ASGI) worker, ending its process as soon as its graceful shutdown is done.

    The event loop reads requests without holding a thread, so slow clients cannot starve /ping (see
    ``front``). Interpreter teardown with TensorFlow, torch and AutoGluon loaded takes seconds of
    CPU; in-flight requests are finished by then, so the worker skips it.
    """
    from gunicorn.workers.gasgi import ASGIWorker

    class Worker(ASGIWorker):
        def run(self) -> None:
            super().run()
            self.log.info("Worker exiting (pid: %s)", self.pid)
            _flush_logs()
            os._exit(0)

    Worker.__name__ = Worker.__qualname__ = "MultimodalAsyncWorker"
    return Worker


def gunicorn_options(config: ServeConfig, state_dir: Path) -> dict[str, Any]:
    from gunicorn.errors import HaltServer

    def child_exit(server: Any, worker: Any) -> None:
        ready, failed = state_dir / f"ready.{worker.pid}", state_dir / f"failed.{worker.pid}"
        # server.LISTENERS is emptied when the arbiter stops: exits after that are expected
        if server.LISTENERS and not ready.exists():
            reason = ("the model could not be loaded (see the log above)" if failed.exists() else
                      f"worker {worker.pid} died while loading the model (killed, out of memory?)")
            raise HaltServer(reason, EXIT_LOAD_FAILED)
        ready.unlink(missing_ok=True)

    def on_exit(server: Any) -> None:
        shutil.rmtree(state_dir, ignore_errors=True)

    shm = Path("/dev/shm")
    return {
        "bind": [f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"],
        "workers": config.workers,
        "worker_class": worker_class(),
        "asgi_loop": "asyncio",
        "timeout": config.timeout,
        "graceful_timeout": config.graceful_timeout,
        "keepalive": config.keepalive,
        "preload_app": False,
        "control_socket_disable": True,
        "worker_tmp_dir": str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None,
        "loglevel": config.log_level,
        "errorlog": "-",
        "accesslog": None,
        "proc_name": "multimodal-serve",
        "child_exit": child_exit,
        "on_exit": on_exit,
    }


def run_gunicorn(config: ServeConfig) -> None:
    from gunicorn.app.base import BaseApplication

    state_dir = Path(tempfile.mkdtemp(prefix="multimodal-serve-"))
    options = gunicorn_options(config, state_dir)

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return worker_app(config, state_dir)

    Application().run()  # exits through sys.exit with the arbiter's status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv != ["serve"]:
        print(f"usage: multimodal-serve [serve]  (configured by environment variables; see --help), not {argv}",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = read_config()
    except ConfigError as exc:
        configure_logging("info", with_process=True)
        log.error("invalid configuration: %s", exc)
        return EXIT_CONFIG
    configure_logging(config.log_level, with_process=True)
    if not config.multi_model and not (config.model_dir / CONFIG_FILE).is_file():
        log.error("no model to serve: %s/%s not found. SageMaker extracts model.tar.gz into /opt/ml/model; set "
                  "%s to serve a model directory <root>/model elsewhere", config.model_dir, CONFIG_FILE, ML_ROOT.name)
        return EXIT_LOAD_FAILED
    prepare_environment(config)
    what = (f"models loaded on request, within {config.models_memory_bytes / MIB:.0f} MB of RSS (multi-model)"
            if config.multi_model else str(config.model_dir))
    log.info("serving %s on %s:%d: %d worker(s) [%s], %d compute thread(s) and %d HTTP threads each, "
             "timeout %d s, graceful timeout %d s, max payload %g MB, bad records: %s, CSV probabilities: %s",
             what, config.host, config.port, config.workers, config.workers_reason, config.threads,
             config.http_threads, config.timeout, config.graceful_timeout, config.server_settings().body_limit_mb,
             config.bad_records, config.csv_probabilities)
    run_gunicorn(config)
    return 0

if __name__ == "__main__":
    sys.exit(main())
