"""The CPU cores this process may use: its CPU affinity, within a container's CPU quota."""

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP) -> float | None:
    """The CPUs a cgroup's CFS quota allows this process (cgroup v2's `cpu.max`, else v1's
    `cpu.cfs_quota_us` over `cpu.cfs_period_us`, as a container sees its own), or None
    without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # "max 100000": none
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # -1: none
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores() -> int:
    """The cores of the CPU affinity, at most the whole CPUs of a container's quota (1.5 CPUs
    are one core: processes that each count on a core of their own would be throttled on
    the half), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cores = min(cores, math.floor(quota))
    return max(1, cores)
