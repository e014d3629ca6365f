"""The Flask app of the inference container: /ping, /execution-parameters and /invocations.

``create_app(model_or_loader, settings=...)`` is the app factory, usable without gunicorn (tests use Flask's
test client). Given a loader (a callable returning a fitted ``MultimodalEstimator``) it loads the model in a
background thread, so /ping answers at once: 503 while loading, 200 once the model is loaded and a trial
prediction (an all-missing row and a filled synthetic row) has succeeded, so the first real request pays no
warm-up cost.

A request goes through the modules in its own order, once: ``decode`` (the body → a ``Batch`` of records),
``records`` (their checks, then the prediction with bad-record isolation: ``predict_proba`` of a classifier,
``predict`` of a regressor, called once per request for its valid records), ``encode`` (the outcome → the
response body). Loading, the trial prediction and every request's parsing, prediction and formatting run on one
dedicated model thread per process, one request at a time (``model_slot``): the compute threads of all workers
stay within the cores, and the thread that serves requests is the one the trial prediction warmed up. The
request threads around it wait for it; the asyncio front keeps answering /ping meanwhile.
See ``launcher`` for the environment variables and the gunicorn set-up, ``front`` for the asyncio front.
"""
from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any, Callable

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from multimodal.sagemaker.contract import (
    CSV,
    JSON,
    JSONLINES,
    MEDIA_TYPES,
)

from . import decode, encode, records
from .errors import (
    BadRequest,
    HTTPProblem,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from .front import to_drain
from .model_slot import ModelSlot, Watchdog
from .server_settings import MIB, ServerSettings
from .kinds import kind_of

log = logging.getLogger(__name__)


# Bodies up to SLICE_BYTES are parsed and predicted whole; larger ones (an async endpoint's, up to 1 GB) slice by
# slice, so that a request's working memory follows the slice and not the body (decode.slices). Each slice pays
# the experts' fixed cost of a prediction call (~0.25 s for a 2-fold toy model on 2 cores, whatever its rows):
# at the default payload's 6 MB, a 26 MB request of 64 photo rows went in 4 slices and took 1.15 s instead of
# about 0.6 (docs/benchmarks.md, issue 21); 32 MB keeps the batch transform's usual requests whole and adds
# about 200 MB of working memory to a 200 MB async body's (test_launcher).
SLICE_BYTES = 32 * MIB
PING_STATE = "multimodal.ping"  # app.extensions key: () -> (HTTP status, body) of /ping, for the asyncio front


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
    service = Service(slot, settings, Watchdog(settings.request_timeout, on_hang), server_started)
    app = flask_app(settings, service)
    app.extensions["multimodal"] = slot
    slot.start(background=background)
    return app


def flask_app(settings: ServerSettings, service: Service) -> Flask:
    """A Flask app with the server's error responses, payload limit and the routes every server has
    (/ping, /execution-parameters, /invocations) answered by ``service``."""
    app = Flask("multimodal")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.extensions[PING_STATE] = service.ping_state
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.add_url_rule("/ping", view_func=service.ping, methods=["GET"])
    app.add_url_rule("/execution-parameters", view_func=service.execution_parameters, methods=["GET"])
    app.add_url_rule("/invocations", view_func=service.invocations, methods=["POST"])
    app.register_error_handler(HTTPProblem, _problem_response)
    app.register_error_handler(RequestEntityTooLarge, lambda exc: _problem_response(PayloadTooLarge(
        f"the body is over the payload limit of {settings.body_limit_mb:g} MB ({settings.max_payload_bytes:,} "
        "bytes): send fewer records per request")))
    app.register_error_handler(HTTPException, lambda exc: _problem_response(
        _problem(exc.code or 500, exc.description or exc.name)))
    app.register_error_handler(Exception, _unexpected)
    return app


class Service:
    """The routes of one app: its model slot, settings and request watchdog."""

    def __init__(self, slot: ModelSlot | None, settings: ServerSettings, watchdog: Watchdog,
                 server_started: Callable[[], bool] | None) -> None:
        self.slot, self.settings, self.watchdog, self.server_started = slot, settings, watchdog, server_started
        # Each model's requests run on its slot's thread; where several models share a process (multi-model
        # endpoints) this keeps their predictions one at a time, within the process's compute threads.
        self.predicting = threading.Lock()

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
        return self.respond(self.slot)

    def respond(self, slot: ModelSlot, name: str | None = None) -> Response:
        """The answer of ``slot``'s model to this request (/invocations, or a multi-model endpoint's invoke)."""
        started = time.monotonic()
        accept = _response_type()
        if accept is None:
            raise NotAcceptable(f"cannot answer with Accept: {request.headers.get('Accept')!r}; accepted: "
                                f"{', '.join(MEDIA_TYPES)}")
        kind, options = decode.media_type(request.headers.get("Content-Type"))
        content_type = MEDIA_TYPES.get(kind or CSV)
        if content_type is None:
            raise UnsupportedMediaType(f"unsupported Content-Type {kind!r}; send one of {', '.join(MEDIA_TYPES)}")
        body = _read_body(self.settings.max_payload_bytes)
        model = slot.wait(self.settings.load_timeout)
        text, n_records, n_bad = slot.run(self._handle, model, body, content_type, options.get("charset"), accept)
        log.info("invocation%s: %d record(s), %d bad, %s → %s, %.0f ms", f" of model {name}" if name else "",
                 n_records, n_bad, content_type, accept, 1000 * (time.monotonic() - started))
        response = Response(text, status=200, mimetype=accept)
        if accept == CSV:
            columns = kind_of(model).columns(model.schema_.id_column, self.settings.csv_probabilities)
            response.headers["X-Output-Columns"] = ",".join(columns)
        return response

    def _handle(self, model: Any, body: bytes, content_type: str, charset: str | None,
                accept: str) -> tuple[str, int, int]:
        """Parse, check, predict and format one request (on the model thread), slice by slice when it is large
        (``decode.slices``): the body text, the number of records and of bad ones."""
        pieces = decode.slices(body, content_type, SLICE_BYTES)
        texts, records_seen, bad = [], 0, 0
        for number, (piece, first) in enumerate(pieces, 1):
            text, batch = self._handle_slice(model, piece, first, content_type, charset, accept)
            texts.append(text)
            records_seen, bad = records_seen + len(batch), bad + len(batch.errors)
            if len(pieces) > 1:
                log.info("invocation: slice %d of %d done (%d records so far, %d bad)", number, len(pieces),
                         records_seen, bad)
        return encode.join(texts, accept), records_seen, bad

    def _handle_slice(self, model: Any, body: bytes, first: int, content_type: str, charset: str | None,
                      accept: str) -> tuple[str, records.Batch]:
        schema = model.schema_
        batch = decode.parse(body, content_type, schema.prediction_header, id_column=schema.id_column,
                             charset=charset, first=first)
        modalities = {c.name: c.modality for c in schema.columns}
        images = self.settings.image_dir
        records.validate(batch, modalities, image_dir=images)
        fail_fast = self.settings.bad_records == "fail"
        if batch.errors and fail_fast:
            raise BadRequest(batch.error_summary())
        kind = kind_of(model)
        with self.predicting, self.watchdog:
            outcome = records.predict(model, kind, batch, modalities, fail_fast=fail_fast, images=images)
        if outcome is None:
            raise BadRequest(batch.error_summary())
        return kind.format(outcome, accept, schema.id_column, self.settings.csv_probabilities), batch


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

    What is read (and dropped) before the 413 follows ``front.to_drain``, the one rule for both ways of serving.
    """
    environ = request.environ
    stream = environ["wsgi.input"]
    length = request.content_length
    if length is not None:
        if length > limit:
            _discard(stream, to_drain(limit, declared=length))
            raise RequestEntityTooLarge()
        if isinstance(stream, io.BytesIO) and stream.tell() == 0:  # the asyncio front's body, already whole:
            held = stream.getvalue()  # the very bytes object, not a copy (an async endpoint's body is 1 GB)
            if len(held) == length:
                return held
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
            _discard(stream, to_drain(limit, read=size))
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
