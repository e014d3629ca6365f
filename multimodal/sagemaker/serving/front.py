"""The asyncio front of the inference server: whole requests are read on the event loop, then served by a thread.

Why: a thread-per-connection server (gunicorn's gthread worker) hands a connection to a request thread as
soon as its first bytes arrive, so a few clients that send slowly hold every thread, and ``/ping`` --
SageMaker's health check, which times out after 2 s -- waits behind them. Here the event loop reads each
request body (bounded by the payload limit) without holding a thread, answers ``/ping`` itself without
queueing behind anything, and passes complete requests to the Flask app (``app.create_app``) on a bounded
pool of request threads. Predictions still run one at a time on the model thread of ``app.ModelSlot``.

Served by gunicorn's asyncio worker (``launcher.worker_class``); the Flask app stays usable on its own (tests
use its test client).
"""
from __future__ import annotations

import asyncio
import io
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

PING_PATH = "/ping"
# A body over the limit but under DRAIN_FACTOR × the limit is read (and dropped) before the 413, so that a
# client that sends its whole body before reading the answer sees the 413 rather than a reset connection.
DRAIN_FACTOR = 4


def to_drain(limit: int, *, declared: int | None = None, read: int = 0) -> int:
    """How many more bytes of a body over ``limit`` to read and drop before the 413 (the rule above, for this
    front and for the app served on its own): a declared body whole when it is at most DRAIN_FACTOR × the limit,
    else none; a body of unknown length up to DRAIN_FACTOR × the limit in all (``read`` already)."""
    if declared is not None:
        return declared if declared <= DRAIN_FACTOR * limit else 0
    return max(0, DRAIN_FACTOR * limit - read)

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class Front:
    """ASGI application over a WSGI app: ``/ping`` answered on the loop, other requests read whole first."""

    def __init__(self, wsgi_app: Callable, *, ping: Callable[[], tuple[int, str]], max_body: int,
                 threads: int) -> None:
        self.wsgi_app = wsgi_app
        self.ping = ping
        self.max_body = max_body
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="request")

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["path"] == PING_PATH and scope["method"] in ("GET", "HEAD"):
                status, text = self.ping()
                await _respond(send, status, [(b"content-type", b"text/plain; charset=utf-8")], text.encode())
                return
            body = await self._read_body(scope, receive)
            if body is None:
                return  # the client left before sending its whole request
            environ = wsgi_environ(scope, body)
            loop = asyncio.get_running_loop()
            status, headers, payload = await loop.run_in_executor(self.pool, call_wsgi, self.wsgi_app, environ)
            await _respond(send, status, headers, payload)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, scope: dict, receive: Receive) -> bytes | None:
        """The whole body, or a prefix the WSGI app will answer 413 to; None when the client disconnected.

        Over the limit, the app sees the declared Content-Length (or, chunked, limit + 1 bytes) and answers
        413 before reading anything, as it does when served on its own.
        """
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            drain = to_drain(self.max_body, declared=declared)
            if drain and not await _drain(receive, drain):
                return None
            return b""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body:
                if message.get("more_body") and not await _drain(receive, to_drain(self.max_body, read=size)):
                    return None
                return b"".join(chunks)[:self.max_body + 1]
            if not message.get("more_body"):
                return b"".join(chunks)


async def _drain(receive: Receive, at_most: int) -> bool:
    """Read and drop up to ``at_most`` more body bytes; False when the client disconnected."""
    left = at_most
    while left > 0:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        left -= len(message.get("body", b""))
        if not message.get("more_body"):
            break
    return True


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: dict) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser rejects such requests before they reach the app
    return None


def wsgi_environ(scope: dict, body: bytes) -> dict[str, Any]:
    """The PEP 3333 environ of a request whose body has been read (``wsgi.input`` is in memory)."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    # A chunked body keeps no Content-Length: the app reads the stream to its end (wsgi.input_terminated), and
    # past the limit answers 413 as it does when served on its own.
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").upper().replace("-", "_"), raw_value.decode("latin-1")
        if name == "TRANSFER_ENCODING":
            continue  # the body is already de-chunked
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def call_wsgi(app: Callable, environ: dict) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run the WSGI app on ``environ`` (in a request thread): (status, headers, body)."""
    started: dict[str, Any] = {}
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        started["status"], started["headers"] = status, headers
        return written.append

    result = app(environ, start_response)
    try:
        body = b"".join([*written, *result])
    finally:
        if hasattr(result, "close"):
            result.close()
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in started["headers"]
               if k.lower() != "content-length"]
    return int(started["status"].split(" ", 1)[0]), headers, body
