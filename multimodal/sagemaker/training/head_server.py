"""The head's status service: it accepts the other hosts of a multi-host job, tells them the head's result when
it is final, and waits (bounded) for each to confirm it; protocol and settings in ``hosts``."""
from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from multimodal.sagemaker.environment import HOSTS_PORT

from .hosts import (
    ACK_GRACE_S,
    DEFAULT_TIMEOUT_S,
    MAX_LINE,
    SEND_TIMEOUT_S,
    HostsError,
    message_bytes,
    read_message,
    split_lines,
)

log = logging.getLogger("multimodal.hosts")


@dataclass(eq=False)
class _Peer:
    sock: socket.socket
    address: str
    host: str | None = None
    acked: bool = False
    closed: bool = False
    buffer: bytearray = field(default_factory=bytearray)


class HeadStatusServer:
    """On the head: tell every other host, over TCP, that the head is running and then its final result.

    ``with HeadStatusServer(port, others=hosts[1:]) as server: ... server.report(code, reason)``. Training never
    waits on it (the service runs in a daemon thread). Leaving the block reports a failure if nothing was
    reported, then waits until every host in ``others`` has confirmed the result: connected hosts get
    ``ACK_GRACE_S``; hosts that never connected are awaited until ``wait_seconds`` after the server started
    (they give up on the head after that long too), so a head that finishes in seconds still reaches a host
    whose container starts later.
    """

    def __init__(self, port: int, *, others: Sequence[str] = (), wait_seconds: float = DEFAULT_TIMEOUT_S,
                 name: str = "", bind: str = "") -> None:
        self.requested_port, self.others, self.wait_seconds = port, list(others), wait_seconds
        self.name, self.bind = name, bind
        self.port = port
        self._peers: list[_Peer] = []
        self._outcome: tuple[int, str] | None = None
        self._reported_at = 0.0
        self._started = 0.0
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._give_up = threading.Event()
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        return self.start()

    def start(self) -> Self:
        """Listen and serve (idempotent): separate from ``with`` so that a taken port fails before work starts."""
        if self._listener is not None:
            return self
        try:
            self._listener = socket.create_server((self.bind, self.requested_port), backlog=64)
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise HostsError(f"the head cannot listen on port {self.requested_port} ({why}): "
                             f"another program uses it; set {HOSTS_PORT.name} to a free port, the same on every host "
                             "(the training job's Environment)") from None
        self.port = self._listener.getsockname()[1]
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="head-status", daemon=True)
        self._thread.start()
        log.info("head status service listening on port %d for %s", self.port, ", ".join(self.others) or "no host")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._outcome is None:
                self.report(1, f"the training host {self.name or 'head'} stopped without reporting a result")
            self._linger()
        finally:
            self._close()

    def report(self, exit_code: int, reason: str = "") -> None:
        """Send the head's final result to every connected host, and to every host that connects later."""
        with self._changed:
            self._outcome = (int(exit_code), reason)
            self._reported_at = time.monotonic()
            for peer in self._peers:
                if not peer.closed:
                    self._send(peer, message_bytes(event="exit", exit_code=int(exit_code), reason=reason))
            self._changed.notify_all()
        log.info("reported exit status %d to the other hosts", exit_code)

    def stop_waiting(self) -> None:
        """End the wait for the other hosts early (the head was asked to stop); safe in a signal handler."""
        self._give_up.set()

    def _serve(self) -> None:
        assert self._selector is not None
        while not self._closing.is_set():
            try:
                events = self._selector.select(timeout=0.2)
            except (OSError, ValueError):  # closed under us while shutting down
                return
            for key, _ in events:
                try:
                    if key.data is None:
                        self._accept()
                    else:
                        self._receive(key.data)
                except Exception:  # one bad connection must not end the service the other hosts wait on
                    log.exception("head status service: error on a connection (ignored)")

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        try:
            conn, address = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        conn.settimeout(SEND_TIMEOUT_S)
        peer = _Peer(conn, f"{address[0]}:{address[1]}")
        with self._changed:
            self._peers.append(peer)
            self._send(peer, message_bytes(event="running", host=self.name))
            if self._outcome is not None:  # a late host: the result is already known
                code, reason = self._outcome
                self._send(peer, message_bytes(event="exit", exit_code=code, reason=reason))
        self._selector.register(conn, selectors.EVENT_READ, peer)

    def _receive(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(65536)
        except (TimeoutError, BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        peer.buffer.extend(data)
        with self._changed:
            for line in split_lines(peer.buffer):
                self._handle(peer, read_message(line) or {})
            if not data or len(peer.buffer) > MAX_LINE:
                self._drop(peer)
            self._changed.notify_all()

    def _handle(self, peer: _Peer, message: dict) -> None:
        if message.get("event") == "hello" and isinstance(message.get("host"), str):
            peer.host = message["host"]
            log.info("host %s (%s) connected: it waits for this host's result", peer.host, peer.address)
        elif message.get("event") == "ack":
            peer.acked = True

    def _drop(self, peer: _Peer) -> None:
        peer.closed = True
        if self._selector is not None:
            try:
                self._selector.unregister(peer.sock)
            except (KeyError, ValueError):
                pass
        peer.sock.close()
        if peer.host and not peer.acked and self._outcome is None:
            log.warning("host %s disconnected before this host finished (was it stopped?)", peer.host)

    def _send(self, peer: _Peer, data: bytes) -> None:
        try:
            peer.sock.sendall(data)
        except OSError as exc:  # the host is gone: its reader sees the end of the connection and drops it
            log.debug("could not send to %s: %s", peer.host or peer.address, exc)

    def _pending(self) -> tuple[list[str], float]:
        """Hosts that have not yet confirmed the result, and until when to wait for them."""
        settled = {p.host for p in self._peers if p.acked or p.closed}
        seen = {p.host for p in self._peers}
        pending = [h for h in self.others if h not in settled]
        deadline = 0.0
        if any(h in seen for h in pending):  # connected: the result is on its way, confirmation is quick
            deadline = self._reported_at + ACK_GRACE_S
        if any(h not in seen for h in pending):  # it may still be starting, and retries until wait_seconds
            deadline = max(deadline, self._started + self.wait_seconds)
        return pending, deadline

    def _linger(self) -> None:
        with self._changed:
            pending, deadline = self._pending()
            if pending and deadline > time.monotonic():
                log.info("waiting for %s to receive this host's result (at most %.0f s)", ", ".join(pending),
                         max(deadline - time.monotonic(), 0))
            while pending and time.monotonic() < deadline and not self._give_up.is_set():
                self._changed.wait(min(deadline - time.monotonic(), 1.0))
                pending, deadline = self._pending()
        if pending:
            log.warning("host(s) %s did not receive this host's result (never connected, or did not answer)",
                        ", ".join(pending))
        elif self.others:
            log.info("every other host received this host's result")

    def _close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._changed:
            for peer in self._peers:
                if not peer.closed:
                    peer.closed = True
                    peer.sock.close()
        if self._selector is not None:
            self._selector.close()
        if self._listener is not None:
            self._listener.close()
