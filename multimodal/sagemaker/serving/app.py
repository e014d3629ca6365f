"""The Flask app of the inference container: /ping, /execution-parameters and /invocations.

``create_app(model_or_loader, settings=...)`` is the app factory, usable without gunicorn (tests use Flask's
test client). Given a loader (a callable returning a fitted ``MultimodalEstimator``) it loads the model in a
background thread, so /ping answers at once: 503 while loading, 200 once the model is loaded and a trial
prediction (an all-missing row and a filled synthetic row) has succeeded, so the first real request pays no
warm-up cost. Request parsing and response formatting live in ``payloads``; predictions come from the model's
``predict_proba`` (classification) or ``predict`` (``problem_type_ == "regression"``) alone, called once per
request for its valid records.

Loading, the trial prediction and every request's parsing, prediction and formatting run on one dedicated
model thread per process, one request at a time: the compute threads of all workers stay within the cores,
and the thread that serves requests is the one the trial prediction warmed up. The request threads
around it wait for it; the asyncio front keeps answering /ping meanwhile.
See ``launcher`` for the environment variables and the gunicorn set-up, ``front`` for the asyncio front.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from multimodal.core.artifact import REGRESSION
from multimodal.sagemaker.contract import (
    CSV,
    JSON,
    JSONLINES,
    MEDIA_TYPES,
    PAYLOAD_BUDGET_MB,
)

from . import payloads
from .errors import (
    BadRequest,
    HTTPProblem,
    NotAcceptable,
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from .front import DRAIN_FACTOR

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_ROW_REFERENCE = re.compile(r"row \d+( \(ID [^)]*\))?")
PING_STATE = "multimodal.ping"  # app.extensions key: () -> (HTTP status, body) of /ping, for the asyncio front


@dataclass
class ServerSettings:
    workers: int = 1  # reported as MaxConcurrentTransforms
    max_payload_mb: float = 6.0  # reported as MaxPayloadInMB; larger bodies get 413
    batch_strategy: str = "MULTI_RECORD"  # reported as BatchStrategy; every request may carry one record or many
    csv_probabilities: bool = False  # append one probability column per class to CSV output
    bad_records: str = "fail"  # "fail": 400 for the request; "emit": an error record in the bad record's place
    request_timeout: float | None = None  # a prediction running longer calls on_hang (the worker is restarted)
    load_timeout: float | None = 900.0  # loading + trial prediction longer than this counts as a failed load
    image_dir: Path | None = None  # where relative _image paths point (MULTIMODAL_IMAGE_DIR); None: refused

    def __post_init__(self) -> None:
        if self.bad_records not in ("fail", "emit"):
            raise ValueError(f"bad_records must be 'fail' or 'emit', not {self.bad_records!r}")

    def check_model(self, model: Any) -> None:
        """Refuse settings the model cannot honour, at load: the server then stops with the reason, rather than
        answering every CSV request without the columns the setting promised."""
        if self.csv_probabilities and is_regression(model):
            raise ValueError("MULTIMODAL_CSV_PROBABILITIES=true asks for one probability column per class, but the "
                             "model is a regression model (no classes): set MULTIMODAL_CSV_PROBABILITIES=false")

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * MIB)

    @property
    def max_concurrent_transforms(self) -> int:
        return max(1, min(self.workers, int(PAYLOAD_BUDGET_MB // max(self.max_payload_mb, 1))))


def is_regression(model: Any) -> bool:
    """Whether ``model`` predicts numbers (``predict``) rather than classes (``classes_``, ``predict_proba``)."""
    return getattr(model, "problem_type_", None) == REGRESSION


class ModelSlot:
    """The model of this process and its thread: loaded and warmed up there, then used there by ``run``."""

    def __init__(self, source: Any, *, on_failure: Callable[[BaseException], None] | None = None,
                 on_ready: Callable[[], None] | None = None, load_timeout: float | None = None,
                 description: str = "the model", check: Callable[[Any], None] | None = None) -> None:
        if hasattr(source, "predict_proba") or is_regression(source):
            self._loader: Callable[[], Any] = lambda: source
        elif callable(source):
            self._loader = source
        else:
            raise TypeError("create_app needs a fitted model (a classifier with predict_proba or a regression "
                            "model) or a callable that loads one")
        self._check = check
        self.model: Any = None
        self.error: BaseException | None = None
        self.description = description
        self.load_seconds: float | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._on_failure = on_failure
        self._on_ready = on_ready
        self._load_timeout = load_timeout
        self._started = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @property
    def state(self) -> str:
        if self._ready.is_set():
            return "ready"
        return "failed" if self.error is not None else "loading"

    def start(self, background: bool = True) -> None:
        if self._started:
            return
        self._started = True
        loading = self._thread.submit(self._load)
        if not background:
            loading.result()
            return
        if self._load_timeout:
            timer = threading.Timer(self._load_timeout, self._check_timeout)
            timer.daemon = True
            timer.start()

    def _check_timeout(self) -> None:
        if not self._done.is_set():
            self._fail(TimeoutError(f"loading {self.description} and its trial prediction took more than "
                                    f"{self._load_timeout:.0f} s"))

    def _load(self) -> None:
        started = time.monotonic()
        try:
            model = self._loader()
            log.info("model loaded in %.1f s; trial prediction…", time.monotonic() - started)
            if self._check is not None:
                self._check(model)
            warm_up(model)
        except BaseException as exc:  # noqa: BLE001 — any failure to load must stop the server
            self._fail(exc)
            return
        self.model = model
        self.load_seconds = time.monotonic() - started
        self._done.set()
        self._ready.set()
        if is_regression(model):
            log.info("model ready in %.1f s (regression)", self.load_seconds)
        else:
            log.info("model ready in %.1f s (%d classes: %s)", self.load_seconds, len(model.classes_),
                     ", ".join(map(str, model.classes_)))
        if self._on_ready is not None:
            self._on_ready()

    def _fail(self, exc: BaseException) -> None:
        if self._done.is_set():
            return
        self.error = exc
        self._done.set()
        log.critical("cannot serve %s: %s: %s", self.description, type(exc).__name__, exc, exc_info=exc)
        if self._on_failure is not None:
            self._on_failure(exc)

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` on the model thread, after any request before it."""
        return self._thread.submit(function, *args).result()

    def wait(self, timeout: float | None) -> Any:
        self._done.wait(timeout)
        if self._ready.is_set():
            return self.model
        if self.error is not None:
            raise NotReady(f"the model failed to load: {type(self.error).__name__}: {self.error}")
        raise NotReady("the model is still loading")


def _tiny_png() -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def warm_up(model: Any) -> None:
    """A trial prediction: an all-missing row and a filled synthetic row, then a single filled row.

    It proves the model can predict and pays the first-call costs (Keras tracing, AutoGluon's feature
    generators, the image encoder) before /ping turns 200. Raises if the model cannot predict.
    """
    import pandas as pd

    schema = model.schema_
    modality = {c.name: c.modality for c in schema.columns}
    filled = {"text": "warm up", "num": "1", "cat": "warm up", "image": _tiny_png()}
    header = schema.prediction_header
    empty = {c: "" for c in header}
    full = {c: filled.get(modality.get(c), "warm-up") for c in header}
    for rows in ([empty, full], [full]):
        frame = pd.DataFrame(rows, dtype=object)
        _check_trial(model, _model_output(model, frame, None), len(frame))


def _check_trial(model: Any, values: Any, rows: int) -> None:
    """Raise unless the trial outputs are finite, with one number (regression) or one per class for each row."""
    import numpy as np
    finite = bool(np.isfinite(values).all())
    if is_regression(model):
        if values.shape != (rows,) or not finite:
            raise RuntimeError(f"the trial prediction returned unusable predictions (shape {values.shape}, "
                               f"expected ({rows},), finite: {finite})")
    elif values.shape != (rows, len(model.classes_)) or not finite:
        raise RuntimeError(f"the trial prediction returned unusable probabilities (shape {values.shape})")


class Watchdog:
    """Calls ``on_hang`` when one prediction runs longer than ``timeout`` (gunicorn times out silent workers, not long requests)."""

    def __init__(self, timeout: float | None, on_hang: Callable[[float], None] | None) -> None:
        self.timeout = timeout
        self.on_hang = on_hang
        self._since: float | None = None
        self._fired = False
        if timeout and on_hang is not None:
            threading.Thread(target=self._run, name="request-watchdog", daemon=True).start()

    def __enter__(self) -> "Watchdog":
        self._since = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._since = None

    def _run(self) -> None:
        while not self._fired:
            time.sleep(min(1.0, self.timeout / 4))
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                self._fired = True
                log.critical("a prediction has run for more than %.0f s (the request timeout)", self.timeout)
                self.on_hang(time.monotonic() - since)


# ---------------------------------------------------------------------------------------------- the app

def create_app(model_or_loader: Any, *, settings: ServerSettings | None = None, background: bool = True,
               on_load_failure: Callable[[BaseException], None] | None = None,
               on_ready: Callable[[], None] | None = None, on_hang: Callable[[float], None] | None = None,
               server_started: Callable[[], bool] | None = None, description: str = "the model") -> Flask:
    """The Flask app over a fitted ``MultimodalEstimator`` (classifier or regressor) or a callable that loads one.

    ``background=False`` loads (and warms up) before returning. ``on_load_failure`` is called (from the
    loading thread) when loading or the trial prediction fails; the server passes a function that exits.
    ``on_ready`` is called once the model is ready; ``on_hang`` when a prediction outruns
    ``settings.request_timeout``. With several worker processes, ``server_started()`` says whether every
    worker has been ready once: /ping is 200 when this worker is ready and the server has started, or when
    this worker is reloading after a restart of its own (the server as a whole is serving).
    """
    settings = settings or ServerSettings()
    slot = ModelSlot(model_or_loader, on_failure=on_load_failure, on_ready=on_ready, load_timeout=settings.load_timeout,
                     description=description, check=settings.check_model)
    service = _Service(slot, settings, Watchdog(settings.request_timeout, on_hang), server_started)
    app = Flask("multimodal")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.extensions["multimodal"] = slot
    app.extensions[PING_STATE] = service.ping_state
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.add_url_rule("/ping", view_func=service.ping, methods=["GET"])
    app.add_url_rule("/execution-parameters", view_func=service.execution_parameters, methods=["GET"])
    app.add_url_rule("/invocations", view_func=service.invocations, methods=["POST"])
    app.register_error_handler(HTTPProblem, _problem_response)
    app.register_error_handler(RequestEntityTooLarge, lambda exc: _problem_response(PayloadTooLarge(
        f"the body is over the payload limit of {settings.max_payload_mb:g} MB ({settings.max_payload_bytes:,} "
        "bytes): send fewer records per request")))
    app.register_error_handler(HTTPException, lambda exc: _problem_response(
        _problem(exc.code or 500, exc.description or exc.name)))
    app.register_error_handler(Exception, _unexpected)
    slot.start(background=background)
    return app


class _Service:
    """The routes of one app: its model slot, settings and request watchdog."""

    def __init__(self, slot: ModelSlot, settings: ServerSettings, watchdog: Watchdog,
                 server_started: Callable[[], bool] | None) -> None:
        self.slot, self.settings, self.watchdog, self.server_started = slot, settings, watchdog, server_started

    def ping_state(self) -> tuple[int, str]:
        """(HTTP status, body) of /ping; cheap enough for the asyncio front to call on its event loop."""
        state = self.slot.state
        if self.server_started is None:
            healthy = state == "ready"
        elif state == "ready":  # at start-up, 200 only once every worker is ready: no request waits for a load
            healthy = self.server_started()
        else:  # a worker restarted after start-up: the others serve; its own requests wait for its load
            healthy = state == "loading" and self.server_started()
        return (200 if healthy else 503), state + "\n"

    def ping(self) -> Response:
        status, text = self.ping_state()
        return Response(text, status=status, mimetype="text/plain")

    def execution_parameters(self) -> Response:
        settings = self.settings
        return jsonify({"MaxConcurrentTransforms": settings.max_concurrent_transforms,
                        "BatchStrategy": settings.batch_strategy,
                        "MaxPayloadInMB": int(settings.max_payload_mb) if float(settings.max_payload_mb).is_integer()
                        else settings.max_payload_mb})

    def invocations(self) -> Response:
        started = time.monotonic()
        accept = _response_type()
        if accept is None:
            raise NotAcceptable(f"cannot answer with Accept: {request.headers.get('Accept')!r}; accepted: "
                                f"{', '.join(MEDIA_TYPES)}")
        kind, options = payloads.media_type(request.headers.get("Content-Type"))
        content_type = MEDIA_TYPES.get(kind or CSV)
        if content_type is None:
            raise UnsupportedMediaType(f"unsupported Content-Type {kind!r}; send one of {', '.join(MEDIA_TYPES)}")
        body = _read_body(self.settings.max_payload_bytes)
        model = self.slot.wait(self.settings.load_timeout)
        text, batch = self.slot.run(self._handle, model, body, content_type, options.get("charset"), accept)
        log.info("invocation: %d record(s), %d bad, %s → %s, %.0f ms", len(batch), len(batch.errors),
                 content_type, accept, 1000 * (time.monotonic() - started))
        response = Response(text, status=200, mimetype=accept)
        if accept == CSV:
            response.headers["X-Output-Columns"] = ",".join(_csv_columns(model, self.settings))
        return response

    def _handle(self, model: Any, body: bytes, content_type: str, charset: str | None,
                accept: str) -> tuple[str, payloads.Batch]:
        """Parse, check, predict and format one request (on the model thread): the body text and the batch."""
        schema = model.schema_
        batch = payloads.parse(body, content_type, schema.prediction_header, id_column=schema.id_column,
                               charset=charset)
        modalities = {c.name: c.modality for c in schema.columns}
        images = self.settings.image_dir
        payloads.validate(batch, modalities, image_dir=images)
        fail_fast = self.settings.bad_records == "fail"
        if batch.errors and fail_fast:
            raise BadRequest(batch.error_summary())
        with self.watchdog:
            outcome = _predict(model, batch, modalities, fail_fast=fail_fast, images=images)
        if outcome is None:
            raise BadRequest(batch.error_summary())
        return _format(outcome, model, accept, self.settings), batch


def _problem(status: int, message: str) -> HTTPProblem:
    """An outcome werkzeug decided (404, 405, a request it could not parse …), as an HTTPProblem."""
    problem = HTTPProblem(message)
    problem.status = status
    return problem


def _problem_response(problem: HTTPProblem) -> Response:
    """Every error response: the message as text, or {"error": message} when the client accepts JSON."""
    log.log(logging.WARNING if problem.status >= 500 else logging.INFO, "HTTP %d: %s", problem.status,
            problem.message)
    accept = _response_type() if not isinstance(problem, NotAcceptable) else None
    if accept in (JSON, JSONLINES):
        return Response(json.dumps({"error": problem.message}) + "\n", status=problem.status,
                        mimetype=JSON)
    return Response(problem.message + "\n", status=problem.status, mimetype="text/plain")


def _unexpected(exc: Exception) -> Response:
    log.exception("invocation failed")
    return _problem_response(HTTPProblem(f"internal error: {type(exc).__name__}: {exc}"))


def _read_body(limit: int) -> bytes:
    """The request body, or 413 past ``limit``: by Content-Length before reading, else (chunked) while reading.

    A body up to DRAIN_FACTOR × ``limit`` is read to its end before the 413, so that a client that sends its
    whole body before reading the answer sees the 413 rather than a reset connection.
    """
    environ = request.environ
    stream = environ["wsgi.input"]
    length = request.content_length
    if length is not None:
        if length > limit:
            if length <= DRAIN_FACTOR * limit:
                _discard(stream, length)
            raise RequestEntityTooLarge()
        return request.get_data(cache=False)
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not end the stream: nothing can be read safely
    chunks, size = [], 0
    while True:
        chunk = stream.read(min(1 << 16, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            _discard(stream, DRAIN_FACTOR * limit - size)
            raise RequestEntityTooLarge()


def _discard(stream: Any, at_most: int) -> None:
    left = at_most
    while left > 0:
        chunk = stream.read(min(1 << 16, left))
        if not chunk:
            return
        left -= len(chunk)


def _response_type() -> str | None:
    """The best Accept match; text/csv when there is no Accept header or it allows anything."""
    header = request.headers.get("Accept", "").strip()
    if not header:
        return CSV
    best = request.accept_mimetypes.best_match(list(MEDIA_TYPES), default=None)
    return MEDIA_TYPES[best] if best else None


def _model_output(model: Any, frame: Any, images: Path | None) -> Any:
    """Probabilities, shape (rows, classes), of a classifier; predictions, shape (rows,), of a regressor.
    S3 being out of reach (or refusing the credentials) concerns the whole request: one 400 saying so."""
    import numpy as np

    from multimodal.core.imagerefs import ImageAccessError
    where = {} if images is None else {"images": images}
    try:
        if is_regression(model):
            return np.asarray(model.predict(frame, **where), dtype=float)
        return model.predict_proba(frame, **where).to_numpy(dtype=float)
    except ImageAccessError as exc:
        raise BadRequest(str(exc)) from None


def _predict(model: Any, batch: payloads.Batch, modalities: dict[str, str], *, fail_fast: bool,
             images: Path | None = None) -> payloads.Outcome | payloads.Predictions | None:
    """Predict every valid record in one call; isolate records the model still rejects.

    Returns None when a record turned out bad and ``fail_fast`` (the caller answers 400 with the summary).
    """
    from multimodal.core.errors import DataError

    outputs: list[Any] = [None] * len(batch)
    full_images_checked = False
    pending = batch.valid_positions()
    while pending:
        try:
            values = _model_output(model, batch.frame(pending), images)
        except DataError as exc:
            before = len(batch.errors)
            if exc.row is not None and 1 <= exc.row <= len(pending):  # prepare_features names the row
                batch.fail(pending[exc.row - 1], _ROW_REFERENCE.sub("this record", str(exc)), exc.column)
            elif not full_images_checked:  # decode every image as the model does, naming the record
                full_images_checked = True
                payloads.validate(batch, {c: m for c, m in modalities.items() if m == "image"}, full_images=True,
                                  image_dir=images)
            if len(batch.errors) == before:  # still unattributed: split the batch until the record is found
                _bisect(model, batch, pending, outputs, images)
                pending = []
            else:
                if fail_fast:
                    return None
                pending = batch.valid_positions()
            continue
        for k, position in enumerate(pending):
            outputs[position] = values[k]
        pending = []
    outcome = _outcome(model, batch, outputs)
    if batch.errors and fail_fast:
        return None
    return outcome


def _bisect(model: Any, batch: payloads.Batch, positions: list[int], outputs: list, images: Path | None) -> None:
    from multimodal.core.errors import DataError
    stack = [positions]
    while stack:
        part = stack.pop()
        try:
            values = _model_output(model, batch.frame(part), images)
        except DataError as exc:
            if len(part) == 1:
                batch.fail(part[0], str(exc), exc.column)
            else:
                stack += [part[len(part) // 2:], part[:len(part) // 2]]
            continue
        for k, position in enumerate(part):
            outputs[position] = values[k]


def _outcome(model: Any, batch: payloads.Batch, outputs: list) -> payloads.Outcome | payloads.Predictions:
    """The model's raw outputs per record as labels and probabilities, or as predicted numbers."""
    import math
    if not is_regression(model):
        classes = list(model.classes_)
        labels = [None if p is None else classes[int(p.argmax())] for p in outputs]
        return payloads.Outcome(ids=batch.ids, labels=labels, probabilities=outputs, errors=batch.errors)
    for position, value in enumerate(outputs):
        # JSON has no NaN or infinity, and no number would be a truthful answer: the record gets an error
        if value is not None and not math.isfinite(value):
            batch.fail(position, f"the model's prediction for this record is not a finite number ({value}); "
                                 "check the record's values for extremes")
    values = [None if p in batch.errors else float(v) for p, v in enumerate(outputs)]
    return payloads.Predictions(ids=batch.ids, values=values, errors=batch.errors)


def _csv_columns(model: Any, settings: ServerSettings) -> list[str]:
    id_column = model.schema_.id_column
    if is_regression(model):
        return payloads.regression_csv_columns(with_id=id_column is not None, id_column=id_column or "ID")
    return payloads.csv_columns(model.classes_, with_id=id_column is not None, id_column=id_column or "ID",
                                with_probabilities=settings.csv_probabilities)


def _format(outcome: payloads.Outcome | payloads.Predictions, model: Any, accept: str,
            settings: ServerSettings) -> str:
    id_column = model.schema_.id_column
    if isinstance(outcome, payloads.Predictions):
        return _format_regression(outcome, accept, id_column)
    if accept == CSV:
        return payloads.format_csv(outcome, model.classes_, with_id=id_column is not None,
                                   with_probabilities=settings.csv_probabilities)
    formatter = payloads.format_jsonlines if accept == JSONLINES else payloads.format_json
    return formatter(outcome, model.classes_, with_id=id_column is not None, id_column=id_column or "ID")


def _format_regression(outcome: payloads.Predictions, accept: str, id_column: str | None) -> str:
    if accept == CSV:
        return payloads.format_regression_csv(outcome, with_id=id_column is not None)
    formatter = payloads.format_regression_jsonlines if accept == JSONLINES else payloads.format_regression_json
    return formatter(outcome, with_id=id_column is not None, id_column=id_column or "ID")
