"""The asyncio front of a server worker, driven directly as an ASGI application (no sockets)."""
from __future__ import annotations

import asyncio

from support import StandInModel

from multimodal.sagemaker.serving.app import ServerSettings, create_app
from multimodal.sagemaker.serving.front import Front, wsgi_environ

LIMIT = 1000


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": b"", "headers": headers,
            "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000),
            "root_path": ""}


def run(front: Front, scope: dict, chunks: list[bytes], disconnect: bool = False) -> tuple[int | None, bytes, int]:
    """Send ``chunks`` as the body; returns (status, body, number of receive() calls)."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})
    received, sent = [0], []

    async def receive() -> dict:
        received[0] += 1
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(front(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), received[0]


def make_front(ping=lambda: (200, "ready\n")) -> Front:
    app = create_app(StandInModel(), settings=ServerSettings(max_payload_mb=LIMIT / 2**20), background=False)
    return Front(app, ping=ping, max_body=LIMIT, threads=2)


def test_ping_is_answered_by_the_loop_without_the_app():
    calls = []
    front = Front(lambda environ, start: calls.append(1), ping=lambda: (503, "loading\n"), max_body=LIMIT, threads=1)
    assert run(front, http_scope("GET", "/ping", []), [b""])[:2] == (503, b"loading\n")
    assert calls == []  # no request thread, no WSGI call


def test_a_request_read_in_chunks_reaches_the_app_whole():
    body = b"r1,soft warm,red,1,2,\nr2,,blue,,3,\n"
    chunks = [body[i:i + 7] for i in range(0, len(body), 7)]
    status, answer, _ = run(make_front(), http_scope("POST", "/invocations", [(b"content-type", b"text/csv")]), chunks)
    assert status == 200 and [line.split(b",")[0] for line in answer.split(b"\n")] == [b"r1", b"r2"]


def test_over_the_limit_is_413_after_draining_a_moderate_excess_and_at_once_for_a_huge_one():
    headers = [(b"content-type", b"text/csv"), (b"content-length", str(2 * LIMIT).encode())]
    status, answer, received = run(make_front(), http_scope("POST", "/invocations", headers), [b"x" * 100] * 20)
    assert status == 413 and b"payload limit" in answer and received == 20  # read to its end first
    headers[-1] = (b"content-length", str(100 * LIMIT).encode())
    status, _, received = run(make_front(), http_scope("POST", "/invocations", headers), [b"x" * 100] * 20)
    assert status == 413 and received == 0  # not worth reading
    chunked = [(b"content-type", b"text/csv"), (b"transfer-encoding", b"chunked")]
    status, _, _ = run(make_front(), http_scope("POST", "/invocations", chunked), [b"x" * 300] * 5)
    assert status == 413


def test_a_client_that_leaves_mid_body_gets_nothing_and_costs_no_thread():
    calls = []
    front = Front(lambda environ, start: calls.append(1), ping=lambda: (200, ""), max_body=LIMIT, threads=1)
    status, _, _ = run(front, http_scope("POST", "/invocations", [(b"content-length", b"50")]), [b"r1,"],
                       disconnect=True)
    assert status is None and calls == []


def test_the_wsgi_environ_keeps_headers_and_drops_the_chunked_framing():
    scope = http_scope("POST", "/invocations", [(b"content-type", b"text/csv"), (b"accept", b"text/csv"),
                                                (b"accept", b"application/json"),
                                                (b"transfer-encoding", b"chunked"), (b"x-trace", b"1")])
    environ = wsgi_environ(scope, b"abc")
    assert environ["CONTENT_TYPE"] == "text/csv" and environ["HTTP_ACCEPT"] == "text/csv,application/json"
    assert "HTTP_TRANSFER_ENCODING" not in environ and "CONTENT_LENGTH" not in environ
    assert environ["wsgi.input"].read() == b"abc" and environ["wsgi.input_terminated"] is True
    assert environ["PATH_INFO"] == "/invocations" and environ["HTTP_X_TRACE"] == "1"
