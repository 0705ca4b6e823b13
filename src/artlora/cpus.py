"""How many CPUs this process may really use, and thread counts set from it once per process.

A container's CPU limit is a cgroup quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), not
a smaller set of cores: the process still sees every core of the node, and torch starts a thread per core. Those
threads then share the quota and wait on each other at every parallel region (two demo-size trainings under
1-CPU quotas on 2 cores did at most 0.55x the work of one alone with 2 threads each, 1.36x with one each:
bench/concurrent_training.md). So the usable count is the quota rounded up, or the cores this process may run on
(its affinity: a cpuset, `taskset`), whichever is smaller.

`apply()` sets it for the process: the variables OpenMP and MKL read (for torch imported later and for
subprocesses), and torch's thread counts when torch is already imported. A user's own OMP_NUM_THREADS or
MKL_NUM_THREADS wins. This module does not import torch: the CLI calls `apply()` before it knows whether the
command needs torch at all.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# What OpenMP (torch's intra-op threads, read when torch first sets up its threads) and MKL read.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# Where /proc and /sys are read from: a fake tree in tests.
ROOT = Path("/")

_applied: int | None = None  # the count apply() set, once per process
_filled: set[str] = set()  # the THREAD_VARIABLES apply() set (the rest, if set, are the user's)


@dataclass(frozen=True)
class _Mount:
    root: str  # the cgroup path the mount shows at its mount point
    point: Path
    fstype: str
    options: frozenset[str]  # super options: a v1 hierarchy's controllers


def affinity() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def quota(root: Path | None = None) -> int | None:
    """The CPUs this process's cgroup quota allows, rounded up; None when no quota is set (or no cgroup is
    mounted). The tightest of the process's own group and every group above it within the mount counts, as the
    kernel enforces each. `root` is where /proc and /sys are found (default: ROOT)."""
    root = ROOT if root is None else root
    groups = _own_groups(root / "proc/self/cgroup")
    limits = []
    for mount in _mounts(root / "proc/self/mountinfo"):
        if mount.fstype == "cgroup2" and "" in groups:
            path, read = groups[""], _v2_limit
        elif mount.fstype == "cgroup" and "cpu" in mount.options and "cpu" in groups:
            path, read = groups["cpu"], _v1_limit
        else:
            continue
        # Without a cgroup namespace, /proc/self/cgroup shows the host's path while the mount shows the
        # container's own group at its root: the part under the mount's root is where this process's group is.
        relative = path[len(mount.root) :] if path.startswith(mount.root) else path
        directory = root / str(mount.point).lstrip("/")
        top = directory
        directory = directory / relative.strip("/")
        while True:
            limit = read(directory)
            if limit is not None:
                limits.append(limit)
            if directory == top or top not in directory.parents:
                break
            directory = directory.parent
    return min(limits) if limits else None


def usable(root: Path | None = None) -> int:
    """CPUs this process may really use: the cgroup quota rounded up, or its affinity, whichever is smaller."""
    cores = affinity()
    allowed = quota(root)
    return max(1, min(cores, allowed)) if allowed is not None else cores


def apply() -> int:
    """Set this process's thread counts from `usable()`, once; that count. Where unset, OMP_NUM_THREADS and
    MKL_NUM_THREADS (read by torch when it sets up its threads, and by subprocesses); torch's intra-op and inter-op
    threads directly when torch is already imported (it has read the variables then). A user's own value of either
    variable is the thread count instead, for both: torch takes MKL_NUM_THREADS over OMP_NUM_THREADS."""
    global _applied
    if _applied is not None:
        return _applied
    count, mine = usable(), _users_threads()
    for name in THREAD_VARIABLES:
        if not os.environ.get(name, "").strip():
            os.environ[name] = mine or str(count)
            _filled.add(name)
    torch = sys.modules.get("torch")
    if torch is not None:
        if mine is None:
            torch.set_num_threads(count)
        # Only possible before any inter-op work started; torch makes that pool on first use, with a thread per
        # core of the node, and artlora's code does not use it, so a refusal costs nothing.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(count)
    _applied = count
    log.debug("using %d CPUs (affinity %d, cgroup quota %s)", count, affinity(), quota())
    return count


def for_processes(count: int) -> dict[str, str]:
    """The thread variables for `count` processes that share this process's CPUs (DDP ranks on one node): the
    CPUs split between them; none where the user set the thread count (theirs passes on unchanged)."""
    if _users_threads() is not None:
        return {}
    share = str(max(1, (_applied or usable()) // count))
    return dict.fromkeys(THREAD_VARIABLES, share)


def _users_threads() -> str | None:
    """The thread count the user set (OMP_NUM_THREADS or MKL_NUM_THREADS, not set by apply()), if any."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value and name not in _filled:
            return value
    return None


def _own_groups(path: Path) -> dict[str, str]:
    """This process's cgroup path per hierarchy: "" for the v2 one, "cpu" for the v1 one with the cpu
    controller."""
    groups = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            _, controllers, group = line.split(":", 2)
            if not controllers:
                groups[""] = group
            elif "cpu" in controllers.split(","):
                groups["cpu"] = group
    return groups


def _mounts(path: Path) -> list[_Mount]:
    """The cgroup mounts in mountinfo: `id parent dev root point options [tags] - fstype source super_options`."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            fields, _, tail = line.partition(" - ")
            head, rest = fields.split(), tail.split()
            if len(head) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
                continue
            options = frozenset(rest[2].split(","))
            mounts.append(_Mount(_unescape(head[3]), Path(_unescape(head[4])), rest[0], options))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _v2_limit(directory: Path) -> int | None:
    """`cpu.max` is "<quota> <period>" in microseconds, or "max <period>" for none."""
    try:
        quota_us, period_us = (directory / "cpu.max").read_text().split()[:2]
        return _cpus(int(quota_us), int(period_us)) if quota_us != "max" else None
    except (OSError, ValueError):
        return None


def _v1_limit(directory: Path) -> int | None:
    """`cpu.cfs_quota_us` is -1 for none."""
    try:
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return _cpus(quota_us, period_us) if quota_us > 0 else None


def _cpus(quota_us: int, period_us: int) -> int | None:
    return max(1, math.ceil(quota_us / period_us)) if period_us > 0 else None
