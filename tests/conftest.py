"""Fixtures shared by every tier.

The real-kernel fixtures (`cgroups`, `page_cache_dir`) import testing.cgroups
when a test asks for them, so the other tiers never load the real-kernel
helpers. `cgroups` needs root and the memory controller (cgroup v1 here, v2 in
the test VM); CI runs as root on a cgroup v1 host, so a missing prerequisite
fails the test instead of skipping. MEMGUARD_SKIP_KERNEL_TESTS=1 skips
explicitly (a developer machine without root); CI must never set it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from memguard.fake import model, tree
from memguard.fake.tree import kill_and_reap

if TYPE_CHECKING:
    from testing.cgroups import CgroupTree


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A real-kernel test of a cgroup v1 feature is not collected for a v2 run (the
    v2 tier counts its tests and allows no skips), nor one of a cgroup v2 feature
    (swap on zram: the VM only) for a v1 run."""
    v1_run = os.environ.get("MEMGUARD_TEST_CGROUP_VERSION", "1") == "1"
    other = "cgroup_v2_only" if v1_run else "cgroup_v1_only"
    deselected = [item for item in items if item.get_closest_marker(other)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture
def fake_tree(tmp_path: os.PathLike[str]) -> Iterator[tuple[str, list[tree.FakeContainer]]]:
    """The `memguard fake init` tree with its real sleeping processes."""
    root = os.path.join(tmp_path, "tree")
    containers = tree.build(root)
    try:
        yield root, containers
    finally:
        kill_and_reap(pid for c in containers for pid in c.pids)


@pytest.fixture
def fake_v2_tree(tmp_path: os.PathLike[str]) -> Iterator[tuple[str, list[tree.FakeContainer]]]:
    """The init tree imitating cgroup v2."""
    root = os.path.join(tmp_path, "tree")
    containers = tree.build(root, cgroup_version=2)
    try:
        yield root, containers
    finally:
        kill_and_reap(pid for c in containers for pid in c.pids)


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def any_fake_tree(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> Iterator[tuple[str, list[tree.FakeContainer]]]:
    """The init tree imitating cgroup v1, then v2 (both kubelet drivers in each)."""
    root = os.path.join(tmp_path, "tree")
    containers = tree.build(root, cgroup_version=request.param)
    try:
        yield root, containers
    finally:
        kill_and_reap(pid for c in containers for pid in c.pids)


@pytest.fixture
def empty_fake_root(tmp_path: os.PathLike[str]) -> str:
    """A fake tree root (marker only) for tests that make their own cgroups."""
    root = os.path.join(tmp_path, "tree")
    model.make_root(root)
    return root


@pytest.fixture
def cgroups() -> Iterator[CgroupTree]:
    """A private tree of real cgroups, removed (with its processes) after the test."""
    from testing.cgroups import TEST_CGROUP_VERSION, missing_prerequisite, new_tree

    missing = missing_prerequisite(TEST_CGROUP_VERSION)
    if missing is not None:
        if os.environ.get("MEMGUARD_SKIP_KERNEL_TESTS") == "1":
            pytest.skip(f"real-kernel tier skipped on request: {missing}")
        pytest.fail(f"real-kernel tier needs root and the memory controller: {missing}")
    tree = new_tree(TEST_CGROUP_VERSION)
    try:
        yield tree
    finally:
        tree.cleanup()


@pytest.fixture
def page_cache_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A directory on a filesystem with page cache: tmp_path on the host; in the v2
    VM (whose / is 9p and /tmp an overlay) an ext4 on a brd RAM disk."""
    from testing.cgroups import TEST_CGROUP_VERSION

    if TEST_CGROUP_VERSION == 1:
        yield tmp_path
        return
    mount_point = tmp_path / "ram"
    mount_point.mkdir()
    commands = [
        ["modprobe", "brd", "rd_nr=1", "rd_size=524288"],
        ["mkfs.ext4", "-q", "-F", "/dev/ram0"],
        ["mount", "-t", "ext4", "/dev/ram0", str(mount_point)],
    ]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, timeout=60)
