"""Coordination between the hosts of a multi-instance training job (``InstanceCount`` > 1): what the head's
status service (``head_server``) and the other hosts' client (``head_client``) share — the settings, the errors,
the line protocol below.

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
import socket
from typing import Any

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


def read_setting(setting: Setting) -> Any:
    """The setting's value; a bad one is a HostsError (the job reports it as the failure reason)."""
    try:
        return setting.read()
    except SettingError as exc:
        raise HostsError(str(exc)) from None


def address_of(host: str) -> str:
    """The address to reach ``host`` at: its entry in MULTIMODAL_HOSTS_ADDRESSES (local emulation: host names
    on loopback addresses without touching /etc/hosts), else the name itself (resolved by DNS)."""
    return read_setting(HOSTS_ADDRESSES).get(host, host)


def port_from_env(setting: Setting = HOSTS_PORT) -> int:
    """The TCP port ``setting`` names (the head's status service by default)."""
    return read_setting(setting)


def timeout_from_env() -> float:
    return read_setting(HOSTS_TIMEOUT)


def bind_from_env() -> str:
    return read_setting(HOSTS_BIND)


def message_bytes(**message: Any) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")


def read_message(line: bytes) -> dict | None:
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


def split_lines(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete lines at the start of ``buffer``."""
    lines = []
    while (end := buffer.find(b"\n")) >= 0:
        lines.append(bytes(buffer[:end]))
        del buffer[:end + 1]
    return lines


def keepalive(sock: socket.socket) -> None:
    """Let the kernel notice a head whose machine vanished (no FIN ever comes), independently of Python."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def describe(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"its name does not resolve yet ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens on that port yet"
    if isinstance(exc, TimeoutError):
        return "no answer"
    return exc.strerror or str(exc) or type(exc).__name__
