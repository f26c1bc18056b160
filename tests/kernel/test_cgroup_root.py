"""--cgroup-root on the real kernel: the layout of this machine's /sys/fs/cgroup (cgroup v1
hybrid on the host, v2 in the test VM), and a DaemonSet-like root - the test's own cgroup
tree bind-mounted where a host's memory hierarchy would be - guarded end to end.

Nothing is created under the real /sys/fs/cgroup but the test's private tree
(testing.cgroups): the kubelet's kubepods there is only looked for, never made.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from memguard.cli.compose import select_backend
from memguard.cli.config import build_run_config, read_layout, resolve_parent
from memguard.cli.options import RUN_OPTIONS, resolve
from memguard.errors import ConfigError
from memguard.kernel.fstype import FsKind, fs_kind
from memguard.kernel.mounts import HostMode, read_host
from memguard.policy.model import MIB
from memguard.reports.report import ReportKind
from testing.agents import reported, running_agent, wait_armed
from testing.cgroups import TEST_CGROUP_VERSION, V1_FREEZER_ROOT, CgroupTree, Started

pytestmark = pytest.mark.kernel
REAL_ROOT = "/sys/fs/cgroup"


def test_the_real_cgroup_root_resolves_to_this_machines_memory_hierarchy(
    cgroups: CgroupTree,  # root and the memory controller, or the tier fails
) -> None:
    layout = read_layout(REAL_ROOT)
    mountinfo_mode, mounts = read_host()
    assert layout.version == str(TEST_CGROUP_VERSION)
    assert layout.mode is mountinfo_mode  # what /proc/self/mountinfo says of this host
    assert not layout.fake
    if TEST_CGROUP_VERSION == 1:
        assert layout.memory_root == f"{REAL_ROOT}/memory" == mounts.v1_memory
        assert fs_kind(layout.memory_root) is FsKind.CGROUP_V1
        assert layout.freezer_root == mounts.v1_freezer == V1_FREEZER_ROOT
        unified = fs_kind(f"{REAL_ROOT}/unified") is FsKind.CGROUP_V2
        assert layout.mode is (HostMode.HYBRID if unified else HostMode.V1)
    else:
        assert layout.memory_root == REAL_ROOT == mounts.v2
        assert fs_kind(REAL_ROOT) is FsKind.CGROUP_V2
        assert (layout.mode, layout.freezer_root) == (HostMode.V2, None)
    parent, others = resolve_parent("auto", "auto", layout)
    candidates = layout.kubepods_candidates()
    assert {parent, *others} == set(candidates)
    assert os.path.dirname(parent) == layout.memory_root
    usual = "kubepods" if TEST_CGROUP_VERSION == 1 else "kubepods.slice"
    assert candidates[0] == os.path.join(layout.memory_root, usual)
    other_version = "2" if TEST_CGROUP_VERSION == 1 else "1"
    with pytest.raises(ConfigError, match=f"--cgroup-version {other_version}, but"):
        resolve_parent("auto", other_version, layout)


def test_memguard_run_defaults_look_under_the_real_cgroup_root(cgroups: CgroupTree) -> None:
    config = build_run_config(resolve(RUN_OPTIONS, {}, {}))  # --parent auto, --cgroup-root
    assert config.layout is not None
    assert config.layout.root == REAL_ROOT
    assert config.agent.parent in config.layout.kubepods_candidates()
    assert config.agent.parent_alternatives
    with pytest.raises(ConfigError, match=r"is itself one cgroup v1 hierarchy|does not exist"):
        read_layout(f"{REAL_ROOT}/memory")  # v1: a hierarchy, not the root; v2: nothing


@contextmanager
def bind_mounted(source: str, target: pathlib.Path) -> Iterator[str]:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", source, str(target)], check=True, timeout=30)
    try:
        yield str(target)
    finally:
        subprocess.run(["umount", str(target)], check=True, timeout=30)


async def test_a_bind_mounted_cgroup_root_is_guarded_as_in_the_daemonset(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    """The DaemonSet's view of a node: its cgroup filesystems mounted under a directory
    that is not itself cgroupfs (/host/sys/fs/cgroup); here the test's own tree, with a
    kubepods in it, stands in for the node's memory hierarchy (v1: at memory/, with the
    freezer mirror at freezer/; v2: the root itself)."""
    cgroup = cgroups.container(limit_bytes=128 * MIB)
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=100)
    relative = cgroup.removeprefix(cgroups.parent + "/")
    host = tmp_path / "host-sys-fs-cgroup"
    host.mkdir()
    if TEST_CGROUP_VERSION == 1:
        freezer_tree = os.path.dirname(cgroups.freezer_mirror(cgroup))
        for _ in range(relative.count("/")):
            freezer_tree = os.path.dirname(freezer_tree)  # the test tree's freezer mirror
        memory, freezer = host / "memory", host / "freezer"
        with bind_mounted(cgroups.parent, memory), bind_mounted(freezer_tree, freezer):
            await guard_through(str(host), str(memory), str(freezer), relative, cgroups, hog)
    else:
        with bind_mounted(cgroups.parent, host):
            await guard_through(str(host), str(host), None, relative, cgroups, hog)


async def guard_through(
    root: str,
    memory_root: str,
    freezer_root: str | None,
    relative: str,
    cgroups: CgroupTree,
    hog: Started,
) -> None:
    config = build_run_config(resolve(RUN_OPTIONS, {"cgroup_root": root, "policy": "process"}, {}))
    assert config.layout is not None
    assert (config.layout.memory_root, config.layout.freezer_root) == (memory_root, freezer_root)
    assert config.layout.version == str(TEST_CGROUP_VERSION)
    assert config.agent.parent == os.path.join(memory_root, "kubepods")  # the one there
    seen_as = os.path.join(memory_root, relative)  # the container, through the mount
    if freezer_root is not None:
        backend = select_backend(config.agent.parent, layout=config.layout)
        assert backend.freezer_for(seen_as) == os.path.join(freezer_root, relative)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, seen_as)
        assert agent.current_status().not_ready_reasons() == []
        hog.go()
        report = await reported(collect, seen_as, ReportKind.KILL_PROCESS)
        assert await hog.exited() < 0  # killed by a signal
    assert [victim.pid for victim in report.victims] == [hog.pid]
    assert cgroups.oom_kills(os.path.join(cgroups.parent, relative)) == 0
