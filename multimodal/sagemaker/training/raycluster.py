"""Multi-instance training: the hosts of resourceconfig.json form one Ray cluster for the job's lifetime.

``hosts[0]`` (the head) starts the Ray head node, waits until every host's node has joined, trains with the
reading, embedding and experts spread over the nodes (``multimodal.core.cluster``) and alone writes
``model/`` and ``output/``. Every other host joins the head's cluster with a Ray worker node and waits for the
head's result over the status connection of ``hosts.py``, then stops its node and exits with that result. Each
node is a ``ray start --block`` child process, stopped with SIGTERM; its exit status is never taken for the
job's (it is 1 whenever any Ray process died, which is what happens on the way out).

Settings (environment variables, the same on every host; declared in ``multimodal.sagemaker.environment``):

  MULTIMODAL_RAY_PORT        6379  the Ray head's GCS port (TCP). Ray's other ports (object manager, node
                                   manager, workers) are chosen by Ray; between SageMaker instances of one job
                                   every port is open.
  MULTIMODAL_NODE_CPUS       all   CPUs each host offers to Ray (``--num-cpus``); GPUs are those torch sees.
  MULTIMODAL_HOSTS_TIMEOUT   600   seconds to resolve and reach the head (from an extra host) and for every
                                   host to join (on the head); see hosts.py.
  MULTIMODAL_HOSTS_ADDRESSES ""    for local emulation only: a JSON object mapping host names to addresses
                                   ({"algo-1": "127.0.0.1", "algo-2": "127.0.0.2"}); unset, names resolve by DNS.

Interface: each node registers with the address its own host name resolves to (on SageMaker the instance's
address on the job's network, ``network_interface_name`` of resourceconfig.json), so that Ray never picks
another interface. Ray's health checks mark a node dead about ``HEALTH_CHECK_PERIOD_MS`` ×
``HEALTH_CHECK_FAILURES`` after it stops answering; the head then fails the job within seconds.
"""
from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from multimodal.core.cluster import ClusterData, NodeData
from multimodal.core.parallel import object_store_bytes, short_temp_root
from multimodal.core.resources import cpu_count
from multimodal.sagemaker.environment import NODE_CPUS, RAY_PORT, child_environment

from .hosts import HostsError, address_of, port_from_env, read_setting

log = logging.getLogger("multimodal.hosts")

HEALTH_CHECK_PERIOD_MS = 1000
HEALTH_CHECK_TIMEOUT_MS = 5000
HEALTH_CHECK_FAILURES = 15
STARTED_MARK = "Ray runtime started"
START_ATTEMPT_S = 60.0
STOP_GRACE_S = 30.0
PROGRESS_LOG_S = 30.0


def ray_port_from_env() -> int:
    return port_from_env(RAY_PORT)


def node_cpus_from_env() -> int:
    cpus = read_setting(NODE_CPUS)
    return cpu_count() if cpus is None else cpus


def gpu_count() -> int:
    try:
        import torch
        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no usable torch: no GPU for Ray either
        return 0


def resolve(host: str, timeout: float) -> str:
    """The IPv4 address of ``host``, retrying name resolution until ``timeout`` (on SageMaker the hosts' names
    resolve only once every instance is up)."""
    name = address_of(host)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0]
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise HostsError(f"the name of host {host} did not resolve within {timeout:g} s ({exc})") from None
            time.sleep(1.0)


class RayNode:
    """This host's Ray node: a ``ray start --block`` child process and its log file."""

    def __init__(self, args: list[str], name: str) -> None:
        self.name = name
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"mm-ray-{name[:8]}-", dir=short_temp_root()))
        self.log_path = self.temp_dir / "ray-start.log"
        executable = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
        if executable is None:
            raise HostsError("the `ray` command is not installed next to this Python: reinstall the package")
        store = object_store_bytes()
        # No log monitor: the driver does not take the workers' output (log_to_driver=False), and on a small host
        # the Python process that would tail every worker's log files takes CPU from the start and the work.
        self.args = [executable, "start", "--block", "--temp-dir", str(self.temp_dir), "--node-name", name,
                     "--object-store-memory", str(store), "--disable-usage-stats", "--include-log-monitor", "false",
                     *args]
        # No draining on SIGTERM (Ray's default waits up to 30 s for a GCS that, at the end of a job, is gone):
        # a node is stopped only once the job is over.
        env = child_environment(RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        env.pop("RAY_ADDRESS", None)
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            env=env)

    @classmethod
    def head(cls, name: str, ip: str, port: int, cpus: int, gpus: int) -> "RayNode":
        config = {"health_check_period_ms": HEALTH_CHECK_PERIOD_MS, "health_check_timeout_ms": HEALTH_CHECK_TIMEOUT_MS,
                  "health_check_failure_threshold": HEALTH_CHECK_FAILURES}
        # No autoscaler monitor (--no-monitor, a flag `ray start --help` does not list): the cluster is the job's
        # fixed hosts, and the monitor is one more Python process starting beside the head's GCS.
        return cls(["--head", "--port", str(port), "--node-ip-address", ip, "--num-cpus", str(cpus), "--num-gpus",
                    str(gpus), "--include-dashboard", "false", "--no-monitor", "--system-config", json.dumps(config)],
                   name)

    @classmethod
    def worker(cls, name: str, ip: str, head: str, cpus: int, gpus: int) -> "RayNode":
        return cls(["--address", head, "--node-ip-address", ip, "--num-cpus", str(cpus), "--num-gpus", str(gpus)],
                   name)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_started(self, timeout: float, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """True once the node runs; False if ``ray start`` exited first, or ``timeout`` passed or ``cancelled()``
        (then it is stopped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cancelled():
            if STARTED_MARK in self.output():
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.2)
        self.stop()
        return False

    def failure(self) -> str:
        lines = [line for line in self.output().splitlines() if line.strip()]
        return " | ".join(lines[-3:])[-600:] or f"exit status {self.process.poll()}"

    def stop(self) -> None:
        """SIGTERM to ``ray start --block`` (it stops the node's processes), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class RayCluster:
    """On the head: the Ray head node, the driver's connection, and which node is which host."""

    def __init__(self, node: RayNode, hosts: list[str]) -> None:
        self.node = node
        self.hosts = hosts
        self.node_ids: dict[str, str] = {}

    @classmethod
    def start(cls, current: str, hosts: list[str], timeout: float) -> "RayCluster":
        ip, port = resolve(current, timeout), ray_port_from_env()
        cpus, gpus = node_cpus_from_env(), gpu_count()
        node = RayNode.head(current, ip, port, cpus, gpus)
        if not node.wait_started(START_ATTEMPT_S):
            node.stop()
            raise HostsError(f"the Ray head did not start on {ip}:{port} ({RAY_PORT.name}): {node.failure()}")
        log.info("Ray head started on %s:%d (%d CPU(s), %d GPU(s)); waiting for %d other host(s) to join", ip, port,
                 cpus, gpus, len(hosts) - 1)
        cluster = cls(node, hosts)
        try:
            import ray
            ray.init(address=f"{ip}:{port}", log_to_driver=False, logging_level=logging.ERROR)
            cluster.wait_for_hosts(timeout)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def wait_for_hosts(self, timeout: float) -> None:
        import ray
        started = time.monotonic()
        next_log = started + PROGRESS_LOG_S
        while True:
            self.node_ids = {n["NodeName"]: n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            missing = [h for h in self.hosts if h not in self.node_ids]
            if not missing:
                break
            now = time.monotonic()
            if now - started >= timeout:
                raise HostsError(f"host(s) {', '.join(missing)} did not join the Ray cluster within {timeout:g} s: "
                                 "check their logs (each must reach this host on the MULTIMODAL_RAY_PORT and "
                                 "MULTIMODAL_HOSTS_PORT ports)")
            if now >= next_log:
                log.info("waiting for host(s) %s to join the Ray cluster (%.0f s left)", ", ".join(missing),
                         timeout - (now - started))
                next_log = now + PROGRESS_LOG_S
            time.sleep(0.5)
        resources = {n["NodeName"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")}
        log.info("all %d hosts joined the Ray cluster in %.1f s: %s", len(self.hosts), time.monotonic() - started,
                 ", ".join(f"{h} ({resources.get(h, 0):g} CPU)" for h in self.hosts))

    def data(self, readers: dict[str, Any], *, replicated: bool, images: Callable[[], Any] | None = None
             ) -> ClusterData:
        """Every host reads its own copy of the channels (``readers`` and ``images`` resolve the data directory
        where they run)."""
        return ClusterData(tuple(NodeData(self.node_ids[h], h, readers["train"], readers.get("validation"), images)
                                 for h in self.hosts), replicated=replicated)

    def close(self) -> None:
        try:
            import ray
            ray.shutdown()
        finally:
            self.node.stop()


def join(current: str, head: str, timeout: float, cancelled: Callable[[], bool] = lambda: False) -> RayNode | None:
    """On an extra host: a Ray worker node in the head's cluster, retrying until ``timeout`` (the head's Ray may
    start a little after its status service); None once ``cancelled()`` (the head finished meanwhile)."""
    ip, head_ip = resolve(current, timeout), resolve(head, timeout)
    address = f"{head_ip}:{ray_port_from_env()}"
    deadline = time.monotonic() + timeout
    cpus, gpus = node_cpus_from_env(), gpu_count()
    while True:
        if cancelled():
            return None
        node = RayNode.worker(current, ip, address, cpus, gpus)
        if node.wait_started(max(min(START_ATTEMPT_S, deadline - time.monotonic()), 1.0), cancelled):
            log.info("host %s joined the Ray cluster of %s at %s (%d CPU(s), %d GPU(s))", current, head, address,
                     cpus, gpus)
            return node
        problem = node.failure()
        node.stop()
        if cancelled():
            return None
        if time.monotonic() >= deadline:
            raise HostsError(f"could not join the Ray cluster of {head} at {address} within {timeout:g} s: {problem}")
        log.info("joining the Ray cluster of %s failed (%s); retrying", head, problem)
        time.sleep(2.0)
