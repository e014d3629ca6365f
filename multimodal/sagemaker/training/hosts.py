"""Coordination between the hosts of a multi-instance training job (``InstanceCount`` > 1).

The *head*, ``hosts[0]`` of ``resourceconfig.json`` (SageMaker sorts the list), drives the training; the other
hosts lend their Ray nodes to it (raycluster.py). They must neither exit before it nor write anything:
SageMaker merges every host's ``/opt/ml/model`` into ``model.tar.gz``, and the SDK's local mode (docker
compose) gives all hosts one shared ``model/`` directory and stops every container as soon as one exits. So
the head serves a tiny status service for the job's lifetime and every other host waits on it, then exits with
the head's outcome.

Protocol: newline-delimited JSON over one TCP connection per extra host.

  extra -> head   {"event": "hello", "host": "algo-2"}           right after connecting
  head  -> extra  {"event": "running", "host": "algo-1"}          right after accepting
  head  -> extra  {"event": "exit", "exit_code": 0, "reason": ""}  once the head's result is final
  extra -> head   {"event": "ack"}                                 the result arrived; the extra then closes

Unknown events are ignored by both sides, so later versions can add some. The hosts also form a Ray cluster
for training (raycluster.py): this connection is how the extra hosts learn that the job is over and how it
ended, which Ray does not say (a Ray node's own exit status is 1 whenever any Ray process died).

Settings (environment variables, the same on every host; declared in ``multimodal.sagemaker.environment``):

  MULTIMODAL_HOSTS_PORT     7560  TCP port of the head's status service. Chosen below Linux's ephemeral range
                                  (32768-60999), so that no outgoing connection on the head can already hold it,
                                  and away from the ports distributed training stacks use by default (22 for
                                  MPI's ssh, 6379/8265/10001 for Ray, 29500 for torch.distributed) and from the
                                  inference server's 8080.
  MULTIMODAL_HOSTS_TIMEOUT  600   seconds an extra host keeps trying to reach the head (name resolution and
                                  connection are retried: on SageMaker the hosts' names resolve only once every
                                  instance is up, and the head may start later). Also how long after its start the
                                  head waits, once its result is final, for extra hosts that never connected.
  MULTIMODAL_HOSTS_BIND     ""    address the head listens on ("" = every interface; tests use 127.0.0.1).
"""
from __future__ import annotations

import json
import logging
import os
import select
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from multimodal.core.settings import Setting, SettingError
from multimodal.sagemaker.environment import HOSTS_ADDRESSES, HOSTS_BIND, HOSTS_PORT, HOSTS_TIMEOUT

log = logging.getLogger("multimodal.hosts")

DEFAULT_TIMEOUT_S = HOSTS_TIMEOUT.default
CONNECT_ATTEMPT_S = 5.0  # one connection attempt; the whole wait is bounded by the timeout
HANDSHAKE_TIMEOUT_S = 60.0  # lenient: the head answers from a thread that shares the GIL with training
ACK_GRACE_S = 30.0  # how long the head waits for a connected extra host to confirm it received the result
SEND_TIMEOUT_S = 5.0  # a stuck extra host must never block the head
PROGRESS_LOG_S = 30.0
MAX_LINE = 64 * 1024


class HostsError(RuntimeError):
    """Coordination between the hosts failed; the message says what to check."""


class HeadUnreachable(HostsError):
    """The head could not be reached within the timeout."""


class HeadLost(HostsError):
    """The connection to the head ended before it reported its result."""


def _setting(setting: Setting) -> Any:
    """The setting's value; a bad one is a HostsError (the job reports it as the failure reason)."""
    try:
        return setting.read()
    except SettingError as exc:
        raise HostsError(str(exc)) from None


def address_of(host: str) -> str:
    """The address to reach ``host`` at: its entry in MULTIMODAL_HOSTS_ADDRESSES (local emulation: host names
    on loopback addresses without touching /etc/hosts), else the name itself (resolved by DNS)."""
    return _setting(HOSTS_ADDRESSES).get(host, host)


def port_from_env(setting: Setting = HOSTS_PORT) -> int:
    """The TCP port ``setting`` names (the head's status service by default)."""
    return _setting(setting)


def timeout_from_env() -> float:
    return _setting(HOSTS_TIMEOUT)


def bind_from_env() -> str:
    return _setting(HOSTS_BIND)


def _line(**message: Any) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")


def _parse(line: bytes) -> dict | None:
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


def _split_lines(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete lines at the start of ``buffer``."""
    lines = []
    while (end := buffer.find(b"\n")) >= 0:
        lines.append(bytes(buffer[:end]))
        del buffer[:end + 1]
    return lines


# ---------------------------------------------------------------------------------------------- the head

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
                    self._send(peer, _line(event="exit", exit_code=int(exit_code), reason=reason))
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
            self._send(peer, _line(event="running", host=self.name))
            if self._outcome is not None:  # a late host: the result is already known
                code, reason = self._outcome
                self._send(peer, _line(event="exit", exit_code=code, reason=reason))
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
            for line in _split_lines(peer.buffer):
                self._handle(peer, _parse(line) or {})
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


# ---------------------------------------------------------------------------------------------- the other hosts

def _keepalive(sock: socket.socket) -> None:
    """Let the kernel notice a head whose machine vanished (no FIN ever comes), independently of Python."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _describe(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"its name does not resolve yet ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens on that port yet"
    if isinstance(exc, TimeoutError):
        return "no answer"
    return exc.strerror or str(exc) or type(exc).__name__


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
                problem = _describe(exc)
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
            self._sock.sendall(_line(event="hello", host=self.name))
            greeting = self._next_message()
        except TimeoutError:
            greeting = None
        if greeting is None or greeting.get("event") not in ("running", "exit"):
            raise HostsError(f"something answered on {self.head}:{self.port}, but not a training head of this "
                             f"algorithm: set {HOSTS_PORT.name} to a free port, the same on every host")
        self._sock.settimeout(None)  # training may take hours; a dead head is noticed by TCP keep-alive
        _keepalive(self._sock)
        log.info("connected to the training host %s: waiting for its result", self.head)

    def _next_message(self) -> dict | None:
        """The next line, parsed (``{}`` when it is not a JSON object); None once the connection ended first."""
        while (end := self._buffer.find(b"\n")) < 0:
            if not self._recv():
                return None
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        message = _parse(line) or {}
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
        for line in _split_lines(self._buffer):
            self._record(_parse(line) or {})

    def _record(self, message: dict) -> None:
        if message.get("event") == "exit" and self._outcome is None:
            code = message.get("exit_code")
            self._outcome = (code if isinstance(code, int) and not isinstance(code, bool) else 1,
                             str(message.get("reason") or ""))

    def _acknowledge(self) -> None:
        try:
            if self._sock is not None:
                self._sock.sendall(_line(event="ack"))
        except OSError:  # the head is already gone; it needed the ack only to stop waiting
            pass
        self.close()


def wait_for_head(host: str, port: int, timeout: float = DEFAULT_TIMEOUT_S, *, name: str = "") -> tuple[int, str]:
    """Reach the head ``host`` within ``timeout`` seconds and wait for its result: ``(exit_code, reason)``.

    Raises HeadUnreachable, HeadLost or HostsError (something else answers on the port)."""
    with HeadClient(host, port, timeout=timeout, name=name) as client:
        return client.wait()
