"""CPUs from a cgroup quota: fake /proc and /sys trees as a container under cgroup v1 or v2 shows them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from artlora import cpus

CORES = cpus.affinity()


def fake_v2(root: Path, limits: dict[str, str], own: str = "/kubepods/pod1/container1") -> Path:
    """A cgroup v2 tree; `limits` maps group paths to their cpu.max."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(f"0::{own}\n")
    (root / "proc/self/mountinfo").write_text(
        "22 1 0:21 / / rw,relatime - overlay overlay rw\n"
        "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    for group, value in limits.items():
        directory = root / "sys/fs/cgroup" / group.strip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.max").write_text(value + "\n")
    return root


def fake_v1(root: Path, quota_us: int, period_us: int = 100000, own: str = "/docker/abc", mount_root: str = "/"):
    """A cgroup v1 tree with cpu and cpuacct in one hierarchy (as Docker and Kubernetes mount it), and a memory
    hierarchy beside it; the quota on the process's own group."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(f"5:memory:{own}\n4:cpu,cpuacct:{own}\n0::/\n")
    (root / "proc/self/mountinfo").write_text(
        "25 22 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        f"28 25 0:25 {mount_root} /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
        f"29 25 0:26 {mount_root} /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
    )
    directory = root / "sys/fs/cgroup/cpu,cpuacct" / own[len(mount_root) :].strip("/")
    directory.mkdir(parents=True)
    (directory / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (directory / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return root


@pytest.mark.parametrize(
    "limits, expected",
    [
        ({"/kubepods/pod1/container1": "100000 100000"}, 1),
        ({"/kubepods/pod1/container1": "150000 100000"}, 2),  # 1.5 CPUs: rounded up
        ({"/kubepods/pod1/container1": "50000 100000"}, 1),  # half a CPU still runs one thread
        ({"/kubepods/pod1/container1": "max 100000"}, None),
        # A limit above the process's own group binds it too (a pod's limit over its container's).
        ({"/kubepods/pod1": "100000 100000", "/kubepods/pod1/container1": "max 100000"}, 1),
        ({"/kubepods/pod1": "800000 100000", "/kubepods/pod1/container1": "200000 100000"}, 2),
        ({}, None),  # no cpu controller in the group: no cpu.max file
    ],
)
def test_a_v2_quota_is_read_from_this_process_group_and_those_above_it(tmp_path, limits, expected):
    root = fake_v2(tmp_path, limits)
    assert cpus.quota(root) == expected
    assert cpus.usable(root) == (CORES if expected is None else min(expected, CORES))


def test_a_v2_group_seen_from_its_own_namespace(tmp_path):
    """With a cgroup namespace (Kubernetes' default on v2) the process's group is the mount's root."""
    root = fake_v2(tmp_path, {"/": "100000 100000"}, own="/")
    assert cpus.quota(root) == 1


@pytest.mark.parametrize("quota_us, expected", [(100000, 1), (250000, 3), (20000, 1), (-1, None)])
def test_a_v1_quota(tmp_path, quota_us, expected):
    root = fake_v1(tmp_path, quota_us)
    assert cpus.quota(root) == expected
    assert cpus.usable(root) == (CORES if expected is None else min(expected, CORES))


def test_a_v1_mount_of_the_container_own_group_under_its_host_path(tmp_path):
    """Docker without a cgroup namespace: /proc/self/cgroup names the host's path, and the mount shows that
    group at its root."""
    root = fake_v1(tmp_path, 100000, own="/docker/abc", mount_root="/docker/abc")
    assert cpus.quota(root) == 1


def test_no_cgroup_files_at_all(tmp_path):
    assert cpus.quota(tmp_path) is None
    assert cpus.usable(tmp_path) == CORES


def test_apply_sets_threads_for_torch_and_subprocesses_and_a_user_value_wins(tmp_path):
    """In fresh processes under a simulated quota of 1 CPU (torch alone would take a thread per core): apply()
    before torch is imported, after it, and with the user's own OMP_NUM_THREADS."""
    root = fake_v2(tmp_path, {"/kubepods/pod1/container1": "100000 100000"})
    probe = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from artlora import cpus\n"
        "cpus.ROOT = Path(sys.argv[2])\n"
        "if sys.argv[1] == 'after':\n"
        "    import torch\n"
        "count = cpus.apply()\n"
        "import torch\n"
        "variables = [os.environ[name] for name in cpus.THREAD_VARIABLES]\n"
        "print(json.dumps([count, torch.get_num_threads(), *variables, cpus.for_processes(2)]))\n"
    )
    environment = {key: value for key, value in os.environ.items() if key not in cpus.THREAD_VARIABLES}

    def run(when: str, **extra: str) -> list:
        command = [sys.executable, "-c", probe, when, str(root)]
        done = subprocess.run(command, env={**environment, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    ours = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert run("before") == [1, 1, "1", "1", ours]
    assert run("after") == [1, 1, "1", "1", ours]
    # torch takes no more threads than there are cores
    assert run("before", OMP_NUM_THREADS="2") == [1, min(2, CORES), "2", "2", {}]
    assert run("after", OMP_NUM_THREADS="2") == [1, min(2, CORES), "2", "2", {}]
