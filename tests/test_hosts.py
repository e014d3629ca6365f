"""The head's status service and the wait-for-head client (head_server.py, head_client.py), in-process over loopback.

Every test is bounded: servers listen on 127.0.0.1 on a port the OS picks, client timeouts are a second or two,
and helper threads are joined with a timeout.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest
from support import free_port

from multimodal.sagemaker.training import hosts
from multimodal.sagemaker.training.head_client import HeadClient, wait_for_head
from multimodal.sagemaker.training.head_server import HeadStatusServer
from multimodal.sagemaker.training.hosts import HeadLost, HeadUnreachable, HostsError

LOOPBACK = "127.0.0.1"


def server(others=("algo-2",), wait_seconds=5.0) -> HeadStatusServer:
    return HeadStatusServer(0, others=list(others), wait_seconds=wait_seconds, name="algo-1", bind=LOOPBACK)


def in_thread(function, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Run ``function`` in a daemon thread; its result or exception lands in the returned dict."""
    box: dict = {}

    def target():
        try:
            box["result"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_the_extra_host_gets_the_heads_success():
    with server() as head:
        thread, box = in_thread(wait_for_head, LOOPBACK, head.port, 5, name="algo-2")
        time.sleep(0.3)
        assert thread.is_alive(), "the extra host must wait while the head works"
        head.report(0)
    thread.join(5)
    assert box == {"result": (0, "")}


def test_the_extra_host_gets_the_heads_failure_and_reason():
    with server() as head:
        thread, box = in_thread(wait_for_head, LOOPBACK, head.port, 5, name="algo-2")
        head.report(1, "Invalid hyperparameters: quality='tooy' is not one of toy, …")
    thread.join(5)
    assert box == {"result": (1, "Invalid hyperparameters: quality='tooy' is not one of toy, …")}


def test_a_head_that_finishes_first_waits_for_a_host_that_starts_later():
    head = server(wait_seconds=10).start()
    head.report(0)
    thread, box = in_thread(lambda: (time.sleep(1.0), wait_for_head(LOOPBACK, head.port, 5, name="algo-2"))[1])
    started = time.monotonic()
    head.__exit__(None, None, None)  # returns once algo-2 confirmed the result, long before wait_seconds
    thread.join(5)
    assert box == {"result": (0, "")}
    assert 0.8 < time.monotonic() - started < 5


def test_the_head_stops_waiting_for_a_host_that_never_connects():
    started = time.monotonic()
    with server(others=["algo-2", "algo-3"], wait_seconds=1.0) as head:
        head.report(0)
    assert time.monotonic() - started < 3


def test_a_stop_request_cuts_the_heads_wait_short():
    head = server(wait_seconds=30).start()
    head.report(0)
    threading.Timer(0.5, head.stop_waiting).start()
    started = time.monotonic()
    head.__exit__(None, None, None)
    assert time.monotonic() - started < 3


def test_leaving_the_block_without_a_report_reports_a_failure():
    head = server().start()
    thread, box = in_thread(wait_for_head, LOOPBACK, head.port, 5, name="algo-2")
    time.sleep(0.3)
    head.__exit__(RuntimeError, RuntimeError("boom"), None)
    thread.join(5)
    code, reason = box["result"]
    assert code == 1 and "stopped without reporting a result" in reason


def test_an_unreachable_head_fails_after_the_timeout_naming_it():
    started = time.monotonic()
    with pytest.raises(HeadUnreachable, match=r"could not reach the training host 127.0.0.1 on port \d+ within 1.5 s"):
        wait_for_head(LOOPBACK, free_port(LOOPBACK), 1.5, name="algo-2")
    assert 1.4 < time.monotonic() - started < 5


def test_a_head_name_that_does_not_resolve_is_retried_until_the_timeout():
    started = time.monotonic()
    with pytest.raises(HeadUnreachable, match="does not resolve"):
        wait_for_head("algo-1.invalid", free_port(LOOPBACK), 1.0, name="algo-2")  # .invalid never resolves (RFC 6761)
    assert time.monotonic() - started < 10


def test_a_head_that_appears_late_is_reached():
    port = free_port(LOOPBACK)
    thread, box = in_thread(wait_for_head, LOOPBACK, port, 10, name="algo-2")
    time.sleep(1.0)  # the client is retrying: connection refused
    with HeadStatusServer(port, others=["algo-2"], name="algo-1", bind=LOOPBACK) as head:
        head.report(0)
    thread.join(5)
    assert box == {"result": (0, "")}


def fake_head(behaviour) -> tuple[socket.socket, threading.Thread]:
    """A one-connection TCP server on loopback doing ``behaviour(conn)``."""
    listener = socket.create_server((LOOPBACK, 0))

    def serve():
        conn, _ = listener.accept()
        with conn:
            behaviour(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_head_that_dies_before_reporting_fails_the_extra_host():
    listener, thread = fake_head(lambda conn: conn.sendall(b'{"event":"running","host":"algo-1"}\n'))
    with listener, pytest.raises(HeadLost, match="ended before it reported a result"):
        wait_for_head(LOOPBACK, listener.getsockname()[1], 2, name="algo-2")
    thread.join(5)


def test_something_else_on_the_port_is_not_taken_for_a_head():
    listener, thread = fake_head(lambda conn: (conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"), time.sleep(0.5)))
    with listener, pytest.raises(HostsError, match="not a training head of this algorithm"):
        wait_for_head(LOOPBACK, listener.getsockname()[1], 2, name="algo-2")
    thread.join(5)


def test_a_result_already_received_is_found_after_a_stop():
    """A stop can interrupt the wait after the head's result arrived: the result still decides the exit."""
    with server() as head:
        client = HeadClient(LOOPBACK, head.port, timeout=2, name="algo-2")
        client.connect()
        assert client.outcome_if_sent() is None
        head.report(3, "why")
        time.sleep(0.3)
        assert client.outcome_if_sent() == (3, "why")
        client.close()
        head.stop_waiting()


def test_a_taken_port_fails_at_start_naming_the_setting():
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(HostsError, match=f"cannot listen on port {port}.*MULTIMODAL_HOSTS_PORT"):
            HeadStatusServer(port, bind=LOOPBACK).start()


@pytest.mark.parametrize("name, value, expected", [
    ("MULTIMODAL_HOSTS_PORT", None, 7560), ("MULTIMODAL_HOSTS_PORT", "8123", 8123),
    ("MULTIMODAL_HOSTS_TIMEOUT", None, 600.0), ("MULTIMODAL_HOSTS_TIMEOUT", "2.5", 2.5),
])
def test_settings_come_from_the_environment(monkeypatch, name, value, expected):
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)
    read = hosts.port_from_env if name == "MULTIMODAL_HOSTS_PORT" else hosts.timeout_from_env
    assert read() == expected


@pytest.mark.parametrize("name, value", [
    ("MULTIMODAL_HOSTS_PORT", "0"), ("MULTIMODAL_HOSTS_PORT", "70000"), ("MULTIMODAL_HOSTS_PORT", "http"),
    ("MULTIMODAL_HOSTS_TIMEOUT", "0"), ("MULTIMODAL_HOSTS_TIMEOUT", "-1"), ("MULTIMODAL_HOSTS_TIMEOUT", "nan"),
    ("MULTIMODAL_HOSTS_TIMEOUT", "ten"),
])
def test_invalid_settings_are_refused_naming_them(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    read = hosts.port_from_env if name == "MULTIMODAL_HOSTS_PORT" else hosts.timeout_from_env
    with pytest.raises(HostsError, match=name):
        read()
