"""Fault matrix, discovery: directories that cannot be watched or listed - a path
longer than PATH_MAX, the inotify watch limit, no access, directories replaced
between events - degrade only themselves. The agent keeps guarding (containers
there too, found by faster rescans), says why once, and a restart on the same
tree works."""

from __future__ import annotations

import os
import pathlib
import signal
from collections.abc import Callable, Iterator

import pytest

from memguard.fake import drive
from memguard.policy.model import MIB, Policy
from testing.agentproc import FakeContainer, agent_process, metric, wait_exit, wait_until
from testing.agents import make_config, running_agent, until
from testing.cgroups import CgroupTree
from testing.waits import within

LONG_NAME = "a" * 250
LEVELS = 18  # 18 x 251 characters: past PATH_MAX (4096)
KERNEL_ARGS = ["--kubernetes", "off"]


def uid(index: int) -> str:
    return f"{index:08x}-1111-4111-8111-{index:012x}"


def make_deep(top: str) -> None:
    """LEVELS nested directories named LONG_NAME below top (mkdir relative to an fd)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(LEVELS):
            os.mkdir(LONG_NAME, dir_fd=fd)
            child = os.open(LONG_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def remove_deep(top: str) -> None:
    """Remove what make_deep made (deepest first, relative to fds)."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        while LONG_NAME in os.listdir(fds[-1]):
            fds.append(os.open(LONG_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        for parent in reversed(fds[:-1]):
            os.rmdir(LONG_NAME, dir_fd=parent)
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def deep_paths() -> Iterator[list[str]]:
    """Tops under which make_deep was called; removed after the test."""
    tops: list[str] = []
    yield tops
    for top in tops:
        remove_deep(top)


@pytest.mark.kernel
async def test_paths_longer_than_path_max_degrade_only_themselves(
    cgroups: CgroupTree, deep_paths: list[str], tmp_path: pathlib.Path
) -> None:
    target = cgroups.container(limit_bytes=128 * MIB)
    pod_dir = os.path.dirname(target)
    kubepods = os.path.join(cgroups.parent, "kubepods")
    for top in (pod_dir, kubepods):
        make_deep(top)
        deep_paths.append(top)
    args = ["--parent", cgroups.parent, *KERNEL_ARGS]
    for run in range(2):  # the second run: a restart on the same tree works
        with agent_process(args, stderr=tmp_path / f"agent{run}.log") as agent:
            await agent.wait_ready()
            text = await agent.metrics()
            assert metric(text, "memguard_guarded_cgroups") == 1
            degraded = 'cause="ENAMETOOLONG"'
            assert metric(text, "memguard_discovery_degraded_directories", degraded) == 1
            hog = cgroups.hog(target, target_mib=256, rate_mib_s=100)
            hog.go()
            with within(f"memguard (run {run}) killing the hog", 30):
                assert await hog.exited() == -signal.SIGKILL
            assert cgroups.oom_kills(target) == 0
            assert agent.stop() == 0
    log = (tmp_path / "agent0.log").read_text()
    assert log.count("ENAMETOOLONG") == 1  # one warning for the subtree
    assert "Traceback" not in log


def unshare(*options: str, watch_limit: int | None = None) -> list[str]:
    script = 'exec "$0" "$@"'
    if watch_limit is not None:
        script = f"echo {watch_limit} > /proc/sys/user/max_inotify_watches && {script}"
    return ["unshare", *options, "sh", "-c", script]


async def test_the_inotify_watch_limit_degrades_to_rescans(
    empty_fake_root: str,
    tmp_path: pathlib.Path,
    make_fake_container: Callable[[str, str, int], FakeContainer],
) -> None:
    root = empty_fake_root
    for index in range(30):
        make_fake_container(root, f"kubepods/pod{uid(index)}/{'b' * 64}", 256 * MIB)
    args = ["--parent", root, *KERNEL_ARGS, "--policy", Policy.CONTAINER.value]
    prefix = unshare("-U", "-r", watch_limit=22)
    for run in range(2):
        with agent_process(args, stderr=tmp_path / f"agent{run}.log", prefix=prefix) as agent:
            await agent.wait_ready()
            late = make_fake_container(root, f"kubepods/pod{uid(100 + run)}/{'c' * 64}", 256 * MIB)

            async def guarded(expected: int = 31 + run) -> bool:
                return metric(await agent.metrics(), "memguard_guarded_cgroups") == expected

            await wait_until(
                guarded, 30, "a container under an unwatchable directory was not found"
            )
            drive.step(root, late.path, drive.Kind.ANON, 250 * MIB)
            await wait_exit(late.pid, 30, "memguard did not protect the container found by rescan")
            text = await agent.metrics()
            assert metric(text, "memguard_discovery_degraded_directories", 'cause="ENOSPC"') > 0
            assert agent.stop() == 0
    assert "inotify watch limit" in (tmp_path / "agent0.log").read_text()


async def test_a_subtree_without_access_degrades_only_itself(
    empty_fake_root: str,
    tmp_path: pathlib.Path,
    make_fake_container: Callable[[str, str, int], FakeContainer],
) -> None:
    root = empty_fake_root
    guarded = make_fake_container(root, f"kubepods/pod{uid(1)}/{'d' * 64}", 256 * MIB)
    hidden = make_fake_container(root, f"kubepods/burstable/pod{uid(2)}/{'e' * 64}", 256 * MIB)
    burstable = os.path.dirname(os.path.dirname(hidden.path))
    os.chown(burstable, 12345, 12345)  # another user's, 0700: EACCES in the namespace
    os.chmod(burstable, 0o700)
    args = ["--parent", root, *KERNEL_ARGS]
    with agent_process(args, stderr=tmp_path / "agent.log", prefix=unshare("-U")) as agent:
        await agent.wait_ready()
        text = await agent.metrics()
        assert metric(text, "memguard_discovery_degraded_directories", 'cause="EACCES"') == 1
        assert metric(text, "memguard_guarded_cgroups") == 1
        drive.step(root, guarded.path, drive.Kind.ANON, 250 * MIB)
        await wait_exit(guarded.pid, 30, "memguard did not protect the accessible container")
        assert agent.stop() == 0
    assert "permission denied" in (tmp_path / "agent.log").read_text()


async def test_directories_replaced_between_events(
    empty_fake_root: str, make_fake_container: Callable[[str, str, int], FakeContainer]
) -> None:
    root = empty_fake_root
    first = make_fake_container(root, f"kubepods/pod{uid(1)}/{'f' * 64}", 256 * MIB)
    config = make_config(root, policy=Policy.CONTAINER)
    async with running_agent(config) as (agent, _):
        supervisor = agent.supervisor
        await until(
            supervisor.changes, lambda: first.path in supervisor.guarded, "first.path in s.guarded"
        )
        # The container's directory goes and a new one takes its place at once.
        os.rename(first.path, first.path + ".old")
        again = make_fake_container(root, f"kubepods/pod{uid(1)}/{'f' * 64}", 256 * MIB)
        # A pod directory is renamed, and a directory becomes a file.
        moved = make_fake_container(root, f"kubepods/pod{uid(2)}/{'9' * 64}", 256 * MIB)
        os.rename(os.path.dirname(moved.path), os.path.join(root, "kubepods", f"pod{uid(3)}"))
        renamed = os.path.join(root, "kubepods", f"pod{uid(3)}", "9" * 64)
        odd = os.path.join(root, "kubepods", f"pod{uid(4)}")
        os.mkdir(odd)
        os.rmdir(odd)
        os.close(os.open(odd, os.O_CREAT | os.O_WRONLY, 0o644))  # a file where a pod was
        await until(
            supervisor.changes,
            lambda: {again.path, renamed}.issubset(supervisor.guarded),
            "{again.path, renamed}.issubset(s.guarded)",
            timeout_s=10,
        )
        assert first.path + ".old" not in supervisor.guarded
        drive.step(root, again.path, drive.Kind.ANON, 250 * MIB)
        await wait_exit(again.pid, 30, "memguard did not protect the re-created container")
        assert supervisor.failures == 0
        assert agent.status.failures["discovery"] == 0
