"""What this process may use of the machine: CPUs and memory, honouring the CPU affinity and cgroup limits
(a container's quota, not the host's size)."""
from __future__ import annotations

import math
import os
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def cpu_count() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _read("/sys/fs/cgroup/cpu.max")  # cgroup v2: "max 100000" or "200000 100000"
    if quota and not quota.startswith("max"):
        limit, period = (int(v) for v in quota.split()[:2])
        cores = min(cores, max(1, math.ceil(limit / period)))
    else:
        limit, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if limit and period and int(limit) > 0:
            cores = min(cores, max(1, math.ceil(int(limit) / int(period))))
    return max(1, cores)


def available_memory() -> int:
    """Bytes available now: MemAvailable, capped by what the cgroup limit leaves."""
    available = None
    meminfo = _read("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    cgroup = _cgroup_memory()
    if cgroup is not None:
        limit, usage = cgroup
        available = min(available, max(limit - usage, 0))
    return available


def memory_limit() -> int:
    """Bytes this process may use at most: the machine's memory (MemTotal), capped by the cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroup = _cgroup_memory()
    return total if cgroup is None else min(total, cgroup[0])


def _cgroup_memory() -> tuple[int, int] | None:
    """(limit, usage) in bytes of this process's cgroup when it has a memory limit (cgroup v2, else v1)."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read(limit_file)
        if limit and limit.isdigit() and int(limit) < 1 << 60:
            return int(limit), int(_read(usage_file) or 0)
    return None


def directory_size(path: Path) -> int:
    """Bytes of the files under ``path`` (a model directory: what loading it reads, a floor of what it takes)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
