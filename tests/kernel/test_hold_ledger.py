"""--hold-ledger shared or tampered with, on real cgroups (`memguard run` processes).

One agent at a time owns a ledger: a second one refuses to start holding
(exit 2, naming the ledger and the owner's pid) and, not holding, leaves the
owner's records and holds alone; the owner's holds stay set throughout. Entries
memguard did not write (a FIFO, a symlink, garbage) neither hang the start nor
go: each is left in place with one warning.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator

import pytest
import trio

from memguard.backends.hold import LOCK_FILE, record_name
from memguard.kernel import cgroup_v1
from memguard.policy.model import MIB
from testing.agentproc import POLL_S, AgentProcess, agent_process, wait_until
from testing.cgroups import CgroupTree, new_tree
from testing.waits import within

pytestmark = [pytest.mark.kernel, pytest.mark.cgroup_v1_only]  # oom_kill_disable
LIMIT_BYTES = 128 * MIB
START_S = 30.0  # a start-up, a refusal, a stop: each well within this


def run_args(parent: str, ledger: pathlib.Path, holding: bool) -> list[str]:
    args = ["--parent", parent, "--policy", "process", "--hold-ledger", str(ledger)]
    args += ["--kubernetes", "off", "--status-socket", "off"]
    return [*args, "--hold-at-limit"] if holding else args


def disable(cgroup: str) -> int:
    control = cgroup_v1.read_oom_control(cgroup)
    assert control is not None, f"{cgroup} is gone"
    return control["oom_kill_disable"]


def records(ledger: pathlib.Path) -> list[str]:
    return sorted(name for name in os.listdir(ledger) if name != LOCK_FILE)


@contextlib.contextmanager
def restored(*cgroups: str) -> Iterator[None]:
    """oom_kill_disable back to 0 after the test, whatever the agents left."""
    try:
        yield
    finally:
        for cgroup in cgroups:
            cgroup_v1.set_oom_kill_disable(cgroup, False)


@contextlib.contextmanager
def other_tree() -> Iterator[CgroupTree]:
    tree = new_tree(1)
    try:
        yield tree
    finally:
        tree.cleanup()


async def refused(agent: AgentProcess, log: pathlib.Path) -> str:
    """The refusing agent's exit (2) and its error line."""
    await wait_until(lambda: not agent.alive, START_S, "the second agent refusing to start")
    lines = log_lines(log)
    assert agent.process.returncode == 2, lines
    [line] = [line for line in lines if "error:" in line]
    return line


def log_lines(log: pathlib.Path) -> list[str]:
    return log.read_text().splitlines()


async def watch_held(cgroup: str, dropped: list[int], stop: trio.Event) -> None:
    """Read the hold until stop: any value but 1 is a dropped hold."""
    while not stop.is_set():
        value = disable(cgroup)
        if value != 1:
            dropped.append(value)
        with trio.move_on_after(POLL_S):
            await stop.wait()


async def test_a_second_agent_leaves_a_ledger_in_use_and_its_holds_alone(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    """Agent A holds c1. With --hold-at-limit a second agent (on another tree, or on
    A's) refuses to start, naming the ledger and A's pid; without it, it leaves the
    ledger to A. c1's hold stays 1 all along, and A still releases it on SIGTERM."""
    ledger = tmp_path / "held"
    c1 = cgroups.container(limit_bytes=LIMIT_BYTES)
    with other_tree() as other, restored(c1):
        c2 = other.container(limit_bytes=LIMIT_BYTES)
        with agent_process(run_args(cgroups.parent, ledger, True), stderr=tmp_path / "a.log") as a:
            await a.wait_ready()
            await wait_until(lambda: disable(c1) == 1, START_S, "A holding c1")
            in_use = f"--hold-ledger {ledger} is in use by another memguard (pid {a.process.pid})"
            dropped: list[int] = []
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_held, c1, dropped, stop)
                for name, parent in (("b-other", other.parent), ("b-same", cgroups.parent)):
                    log = tmp_path / f"{name}.log"
                    with agent_process(run_args(parent, ledger, True), stderr=log) as b:
                        assert in_use in await refused(b, log)
                log = tmp_path / "c.log"
                with agent_process(run_args(other.parent, ledger, False), stderr=log) as c:
                    await c.wait_ready(START_S)
                    assert c.stop() == 0
                text = "\n".join(log_lines(log))
                assert f"left --hold-ledger {ledger} to the memguard using it" in text
                assert f"(pid {a.process.pid})" in text
                assert "released the hold" not in text
                stop.set()
            assert dropped == []
            assert disable(c1) == 1
            assert disable(c2) == 0
            assert records(ledger) == [record_name(c1)]
            assert a.stop() == 0
    assert disable(c1) == 0
    assert records(ledger) == []


@pytest.mark.parametrize("holding", [True, False], ids=["holding", "releasing"])
async def test_a_fifo_a_symlink_and_garbage_in_the_ledger_neither_hang_nor_go(
    cgroups: CgroupTree, tmp_path: pathlib.Path, holding: bool
) -> None:
    """mkfifo LEDGER/x.held used to hang the start in open(); a symlink was followed,
    garbage deleted. Now each stays where it is, with one warning."""
    ledger = tmp_path / "held"
    ledger.mkdir(mode=0o700)
    c1 = cgroups.container(limit_bytes=LIMIT_BYTES)
    target = tmp_path / "target"
    target.write_text(c1)
    os.mkfifo(ledger / "x.held")
    os.symlink(target, ledger / "y.held")
    (ledger / "z.held").write_bytes(b"garbage, not a record\n")
    planted = sorted(os.listdir(ledger))
    log = tmp_path / "memguard.log"
    with restored(c1), agent_process(run_args(cgroups.parent, ledger, holding), stderr=log) as a:
        with within("memguard's start past a FIFO in its ledger", START_S):
            await a.wait_ready(START_S)
        if holding:
            await wait_until(lambda: disable(c1) == 1, START_S, "c1 held")
        assert a.stop() == 0
    lines = log_lines(log)
    for name in planted:
        warned = [line for line in lines if f"{ledger}/{name}" in line]
        assert len(warned) == 1, (name, lines)
        assert "left" in warned[0], warned[0]
        assert "alone" in warned[0], warned[0]
    assert "a FIFO" in " ".join(line for line in lines if f"{ledger}/x.held" in line)
    assert "a symbolic link" in " ".join(line for line in lines if f"{ledger}/y.held" in line)
    assert records(ledger) == planted
    assert (ledger / "x.held").is_fifo()
    assert (ledger / "y.held").is_symlink()
    assert (ledger / "z.held").read_bytes() == b"garbage, not a record\n"
    assert target.read_text() == c1
    assert disable(c1) == 0
