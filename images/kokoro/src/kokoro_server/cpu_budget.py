"""How many cores the server may use, and how it splits them between engine workers.

os.cpu_count() is the host's: a container limited with `--cpus 2` (or a Kubernetes CPU
limit) on a 64-core host still sees 64, and onnxruntime with 64 threads under a 2-core
quota spends its time throttled. The budget is the smallest of the process's CPU
affinity (cpusets, `--cpuset-cpus`, taskset) and its cgroup's CPU quota, read at every
level from its own cgroup up (a parent's limit binds too), rounded up as Go's runtime
does for GOMAXPROCS: a 1.5-core quota gets 2 threads.

On the CPU, one worker per 4 cores: one pass's intra-op parallelism saturates well before
a big host's core count, and concurrent requests then gain more from another worker than
from more threads on one pass. Two cores: one worker of two threads (the lowest first
audio); 16 cores: 4 workers of 4 threads. The 4 is a starting point, measured only on
two cores so far (docs/benchmarks/kokoro-cpu-first-audio.md); KOKORO_WORKERS and
KOKORO_ONNX_THREADS set both outright.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CORES_PER_WORKER = 4


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _v2_quota(root: Path, relative: str) -> float | None:
    """The tightest cpu.max from the process's cgroup up to the root (v2)."""
    best = None
    path = root / relative.lstrip("/")
    while True:
        try:
            quota, period = (path / "cpu.max").read_text().split()[:2]
            if quota != "max":
                cores = int(quota) / int(period)
                best = cores if best is None else min(best, cores)
        except (OSError, ValueError):
            pass
        if path == root or root not in path.parents:
            return best
        path = path.parent


def _v1_quota(root: Path, relative: str) -> float | None:
    """cpu.cfs_quota_us / cpu.cfs_period_us of the process's cpu cgroup (v1)."""
    for controller in ("cpu,cpuacct", "cpu"):
        base = root / controller
        for path in (base / relative.lstrip("/"), base):
            try:
                quota = int((path / "cpu.cfs_quota_us").read_text())
                period = int((path / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            return quota / period if quota > 0 and period > 0 else None
    return None


def cgroup_cores(root: Path = Path("/sys/fs/cgroup"),
                 self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota in cores this process's cgroup allows, or None when unlimited."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    v2 = v1 = None
    for line in lines:
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    if v2 is not None and (root / "cgroup.controllers").exists():
        return _v2_quota(root, v2)
    if v1 is not None:
        return _v1_quota(root, v1)
    return None


def usable_cores(root: Path = Path("/sys/fs/cgroup"),
                 self_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    cores = _affinity()
    quota = cgroup_cores(root, self_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def cpu_workers(cores: int) -> int:
    """Engine workers for the CPU when KOKORO_WORKERS is 0 (auto)."""
    return max(1, cores // CORES_PER_WORKER)


def threads_per_worker(cores: int, workers: int, requested: int = 0) -> int:
    """Intra-op threads per worker: `requested` in all (KOKORO_ONNX_THREADS) or the
    budget, split between the workers."""
    return max(1, (requested or cores) // max(1, workers))
