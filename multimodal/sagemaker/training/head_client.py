"""The other hosts' side: reach the head (retrying name resolution and connection within the timeout), wait
for its result, confirm it; protocol and settings in ``hosts``."""
from __future__ import annotations

import logging
import select
import socket
import time
from typing import Self

from multimodal.sagemaker.environment import HOSTS_PORT

from .hosts import (
    CONNECT_ATTEMPT_S,
    DEFAULT_TIMEOUT_S,
    HANDSHAKE_TIMEOUT_S,
    MAX_LINE,
    PROGRESS_LOG_S,
    HeadLost,
    HeadUnreachable,
    HostsError,
    address_of,
    describe,
    keepalive,
    message_bytes,
    read_message,
    split_lines,
)

log = logging.getLogger("multimodal.hosts")


class HeadClient:
    """On an extra host: reach the head (retrying name resolution and connection until ``timeout``), then wait,
    without a time limit, for its result. ``wait()`` returns ``(exit_code, reason)``."""

    def __init__(self, head: str, port: int, *, timeout: float = DEFAULT_TIMEOUT_S, name: str = "") -> None:
        self.head, self.port, self.timeout, self.name = head, port, timeout, name
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._outcome: tuple[int, str] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def connect(self) -> None:
        """Reach the head (retrying until the timeout) and check that it is one; ``wait()`` does it if needed."""
        if self._sock is None:
            self._sock = self._connect()
            self._handshake()

    def wait(self) -> tuple[int, str]:
        self.connect()
        while self._outcome is None:
            self._read()
        self._acknowledge()
        return self._outcome

    def finished(self) -> bool:
        """Whether the head has reported its result, or the connection ended, without waiting for either."""
        self._absorb(b"")  # lines that arrived with the greeting
        if self._outcome is not None:
            return True
        if self._sock is None:
            return False
        while select.select([self._sock], [], [], 0)[0]:
            if not self._recv():
                return True  # the connection ended: wait() says how
            self._absorb(b"")
            if self._outcome is not None:
                return True
        return False

    def outcome_if_sent(self) -> tuple[int, str] | None:
        """The result if it has already arrived, without waiting: for a host stopped while it waited."""
        self._absorb(b"")  # a line may have arrived just before the stop interrupted its parsing
        if self._outcome is None and self._sock is not None:
            try:
                self._sock.setblocking(False)
                while self._outcome is None and (data := self._sock.recv(65536)):
                    self._absorb(data)
            except OSError:
                pass
        return self._outcome

    def _connect(self) -> socket.socket:
        started = time.monotonic()
        deadline, delay, next_log = started + self.timeout, 0.25, started + PROGRESS_LOG_S
        log.info("waiting for the training host %s (port %d, at most %g s to reach it)", self.head, self.port,
                 self.timeout)
        while True:
            attempt = max(min(CONNECT_ATTEMPT_S, deadline - time.monotonic()), 0.1)
            try:
                return socket.create_connection((address_of(self.head), self.port), timeout=attempt)
            except OSError as exc:  # DNS not ready, head not listening yet: both are normal at start
                problem = describe(exc)
            now = time.monotonic()
            if now >= deadline:
                raise HeadUnreachable(
                    f"could not reach the training host {self.head} on port {self.port} within {self.timeout:g} s "
                    f"(last attempt: {problem}). Check that {self.head} started and that the hosts may connect to "
                    f"each other on that port ({HOSTS_PORT.name}, the same on every host)")
            if now >= next_log:
                log.info("still waiting for %s:%d: %s (%.0f s left)", self.head, self.port, problem, deadline - now)
                next_log = now + PROGRESS_LOG_S
            time.sleep(min(delay, max(deadline - now, 0)))
            delay = min(delay * 2, 2.0)

    def _handshake(self) -> None:
        assert self._sock is not None
        self._sock.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            self._sock.sendall(message_bytes(event="hello", host=self.name))
            greeting = self._next_message()
        except TimeoutError:
            greeting = None
        if greeting is None or greeting.get("event") not in ("running", "exit"):
            raise HostsError(f"something answered on {self.head}:{self.port}, but not a training head of this "
                             f"algorithm: set {HOSTS_PORT.name} to a free port, the same on every host")
        self._sock.settimeout(None)  # training may take hours; a dead head is noticed by TCP keep-alive
        keepalive(self._sock)
        log.info("connected to the training host %s: waiting for its result", self.head)

    def _next_message(self) -> dict | None:
        """The next line, parsed (``{}`` when it is not a JSON object); None once the connection ended first."""
        while (end := self._buffer.find(b"\n")) < 0:
            if not self._recv():
                return None
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        message = read_message(line) or {}
        self._record(message)
        return message

    def _read(self) -> None:
        if self._next_message() is None:
            raise HeadLost(f"the connection to the training host {self.head} ended before it reported a result: "
                           f"{self.head} stopped abruptly (killed, out of memory, or its instance failed); its log "
                           "says why")

    def _recv(self) -> bool:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except TimeoutError:  # only during the handshake, which has a time limit
            raise
        except OSError:  # reset or aborted: the head is gone, as with an orderly end of the connection
            data = b""
        if len(self._buffer) > MAX_LINE:  # not this protocol: never wait for a line that does not end
            data = b""
        self._buffer.extend(data)
        return bool(data)

    def _absorb(self, data: bytes) -> None:
        self._buffer.extend(data)
        for line in split_lines(self._buffer):
            self._record(read_message(line) or {})

    def _record(self, message: dict) -> None:
        if message.get("event") == "exit" and self._outcome is None:
            code = message.get("exit_code")
            self._outcome = (code if isinstance(code, int) and not isinstance(code, bool) else 1,
                             str(message.get("reason") or ""))

    def _acknowledge(self) -> None:
        try:
            if self._sock is not None:
                self._sock.sendall(message_bytes(event="ack"))
        except OSError:  # the head is already gone; it needed the ack only to stop waiting
            pass
        self.close()


def wait_for_head(host: str, port: int, timeout: float = DEFAULT_TIMEOUT_S, *, name: str = "") -> tuple[int, str]:
    """Reach the head ``host`` within ``timeout`` seconds and wait for its result: ``(exit_code, reason)``.

    Raises HeadUnreachable, HeadLost or HostsError (something else answers on the port)."""
    with HeadClient(host, port, timeout=timeout, name=name) as client:
        return client.wait()
