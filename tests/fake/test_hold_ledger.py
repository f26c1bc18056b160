"""--hold-at-limit's ledger (memguard.backends.hold) on a directory of fake cgroups.

A fake memory hierarchy is a directory whose cgroups hold a memory.oom_control
file; oom_kill_disable is written through memguard's kernel boundary
(cgroup_v1.set_oom_kill_disable, replaced here by one that rewrites the fake
file). What is checked: one agent at a time owns a ledger (a flock'ed lock
file), and a ledger's entries that memguard did not write are left where they
are, with one warning each, and never followed or waited for.
"""

from __future__ import annotations

import logging
import os
import pathlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trio

from memguard.backends import hold
from memguard.backends.hold import LOCK_FILE, HoldLedger, record_name
from memguard.errors import ConfigError
from memguard.kernel import cgroup_v1
from testing.waits import within


@dataclass
class Hierarchy:
    """A fake v1 memory hierarchy: cgroups with oom_kill_disable and under_oom."""

    root: pathlib.Path

    def cgroup(self, name: str, disable: int = 0, under_oom: int = 0) -> str:
        path = self.root / name
        path.mkdir()
        self.write(str(path), disable, under_oom)
        return str(path)

    @staticmethod
    def write(cgroup: str, disable: int, under_oom: int) -> None:
        control = f"oom_kill_disable {disable}\nunder_oom {under_oom}\noom_kill 0\n"
        pathlib.Path(cgroup, "memory.oom_control").write_text(control)

    @staticmethod
    def disable(cgroup: str) -> int:
        control = cgroup_v1.read_oom_control(cgroup)
        assert control is not None
        return control["oom_kill_disable"]


@pytest.fixture
def memory(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Hierarchy:
    hierarchy = Hierarchy(tmp_path / "memory")
    hierarchy.root.mkdir()

    def set_oom_kill_disable(cgroup: str, disable: bool) -> bool:
        control = cgroup_v1.read_oom_control(cgroup)
        if control is None:
            return False
        Hierarchy.write(cgroup, int(disable), control["under_oom"])
        return True

    monkeypatch.setattr(cgroup_v1, "set_oom_kill_disable", set_oom_kill_disable)
    return hierarchy


@pytest.fixture
def ledgers(memory: Hierarchy, tmp_path: pathlib.Path) -> Iterator[list[HoldLedger]]:
    """Ledgers a test opens (as agents would), closed after it."""
    opened: list[HoldLedger] = []
    yield opened
    for ledger in opened:
        ledger.close()


def new_ledger(ledgers: list[HoldLedger], directory: pathlib.Path, memory: Hierarchy) -> HoldLedger:
    ledger = HoldLedger(str(directory), str(memory.root))
    ledgers.append(ledger)
    return ledger


def record(directory: pathlib.Path, cgroup: str) -> pathlib.Path:
    """A record as a previous run left it."""
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / record_name(cgroup)
    path.write_text(cgroup)
    return path


def records(directory: pathlib.Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".held"))


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and name in r.getMessage()
    ]


# One agent at a time


def test_a_holding_agent_refuses_a_ledger_another_agent_holds(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    directory = tmp_path / "held"
    c1 = memory.cgroup("c1")
    first = new_ledger(ledgers, directory, memory)
    first.open(holding=True)
    assert first.locked
    assert first.taken(c1)
    memory.write(c1, 1, 0)  # what the guard does next
    assert (directory / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    second = new_ledger(ledgers, directory, memory)
    with pytest.raises(ConfigError) as refused:
        second.open(holding=True)
    message = str(refused.value)
    assert str(directory) in message
    assert f"pid {os.getpid()}" in message  # /proc/locks names the holder
    assert "\n" not in message
    assert not second.locked
    assert memory.disable(c1) == 1
    assert records(directory) == [record_name(c1)]


def test_an_agent_not_holding_leaves_a_locked_ledger_alone(
    memory: Hierarchy,
    tmp_path: pathlib.Path,
    ledgers: list[HoldLedger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tmp_path / "held"
    c1 = memory.cgroup("c1")
    first = new_ledger(ledgers, directory, memory)
    first.open(holding=True)
    assert first.taken(c1)
    memory.write(c1, 1, 0)
    caplog.set_level(logging.INFO, logger=hold.__name__)
    second = new_ledger(ledgers, directory, memory)
    second.open(holding=False)
    lines = [r.getMessage() for r in caplog.records if r.name == hold.__name__]
    assert lines == [f"left --hold-ledger {directory} to the memguard using it (pid {os.getpid()})"]
    assert memory.disable(c1) == 1
    assert records(directory) == [record_name(c1)]
    assert first.locked
    # the owner releases its hold as before
    first.release(c1)
    assert memory.disable(c1) == 0
    assert records(directory) == []


def test_a_dead_agents_records_are_released_or_taken_over(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    """The lock is free (its agent is gone), its records are there: as before."""
    directory = tmp_path / "held"
    idle = memory.cgroup("idle", disable=1)
    parked = memory.cgroup("parked", disable=1, under_oom=1)
    gone = str(memory.root / "gone")
    for cgroup in (idle, parked, gone):
        record(directory, cgroup)
    (directory / LOCK_FILE).write_text("12345\n")  # the dead agent's, unlocked
    ledger = new_ledger(ledgers, directory, memory)
    ledger.open(holding=True)
    assert ledger.locked
    assert memory.disable(idle) == 0
    assert memory.disable(parked) == 1
    assert ledger.inherited(parked)
    assert not ledger.inherited(idle)
    assert records(directory) == [record_name(parked)]


def test_an_agent_not_holding_releases_leftovers_and_lets_go_of_the_ledger(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    directory = tmp_path / "held"
    parked = memory.cgroup("parked", disable=1, under_oom=1)
    record(directory, parked)
    releasing = new_ledger(ledgers, directory, memory)
    releasing.open(holding=False)
    assert not releasing.locked
    assert memory.disable(parked) == 0
    assert records(directory) == []
    holding = new_ledger(ledgers, directory, memory)
    holding.open(holding=True)  # the ledger is free again
    assert holding.locked


def test_no_ledger_and_not_holding_makes_nothing(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    new_ledger(ledgers, tmp_path / "held", memory).open(holding=False)
    assert not (tmp_path / "held").exists()


def test_a_closed_ledger_is_free_for_the_next_agent(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    directory = tmp_path / "held"
    first = new_ledger(ledgers, directory, memory)
    first.open(holding=True)
    first.close()
    assert not first.locked
    second = new_ledger(ledgers, directory, memory)
    second.open(holding=True)
    assert second.locked


# The directory's contents are not trusted


async def test_entries_memguard_did_not_write_are_left_alone_with_one_warning_each(
    memory: Hierarchy,
    tmp_path: pathlib.Path,
    ledgers: list[HoldLedger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A FIFO is never opened (open() would wait for a writer), a symlink never
    followed, garbage never deleted: the directory may not be memguard's alone."""
    directory = tmp_path / "held"
    directory.mkdir(mode=0o700)
    c1 = memory.cgroup("c1", disable=1)
    target = tmp_path / "target"
    target.write_text(c1)  # a link to a path a record would hold
    os.mkfifo(directory / "fifo.held")
    os.symlink(target, directory / "link.held")
    os.symlink(target, directory / record_name(c1))  # a link under a record's name
    (directory / "garbage.held").write_bytes(b"\x00garbage\n")
    (directory / record_name("/etc")).write_text("/etc")  # not under the hierarchy
    (directory / record_name("x")).write_text("/not/its/name")  # name != hash
    (directory / "big.held").write_bytes(b"/" * (hold.MAX_RECORD_BYTES + 1))
    (directory / "dir.held").mkdir()
    foreign = sorted(os.listdir(directory))
    ledger = new_ledger(ledgers, directory, memory)
    for holding in (True, False):
        caplog.clear()
        with within("the ledger settled (a FIFO in it must not block)", 10):
            await trio.to_thread.run_sync(ledger.open, holding, abandon_on_cancel=True)
        ledger.close()
        for name in foreign:
            assert len(warnings_about(caplog, name)) == 1, (name, caplog.text)
        assert sorted(n for n in os.listdir(directory) if n != LOCK_FILE) == foreign
        assert stat.S_ISFIFO(os.lstat(directory / "fifo.held").st_mode)
        assert stat.S_ISLNK(os.lstat(directory / "link.held").st_mode)
        assert target.read_text() == c1
        assert memory.disable(c1) == 1  # a link under its record's name is not its record


def test_many_foreign_entries_are_warned_about_up_to_a_bound(
    memory: Hierarchy,
    tmp_path: pathlib.Path,
    ledgers: list[HoldLedger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tmp_path / "held"
    directory.mkdir(mode=0o700)
    for index in range(hold.MAX_FOREIGN_WARNINGS + 5):
        (directory / f"{index}.held").write_text("garbage")
    new_ledger(ledgers, directory, memory).open(holding=True)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == hold.MAX_FOREIGN_WARNINGS + 1
    assert "5 more entries left alone" in warned[-1].getMessage()
    assert len(records(directory)) == hold.MAX_FOREIGN_WARNINGS + 5


def test_a_ledger_that_is_a_symlink_is_refused_holding_and_left_alone_not(
    memory: Hierarchy,
    tmp_path: pathlib.Path,
    ledgers: list[HoldLedger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    parked = memory.cgroup("parked", disable=1)
    record(elsewhere, parked)
    link = tmp_path / "held"
    link.symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link"):
        new_ledger(ledgers, link, memory).open(holding=True)
    new_ledger(ledgers, link, memory).open(holding=False)
    assert len(warnings_about(caplog, "symbolic link")) == 1
    assert memory.disable(parked) == 1
    assert records(elsewhere) == [record_name(parked)]
    assert not (elsewhere / LOCK_FILE).exists()


def test_a_ledger_that_is_a_file_is_refused(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    (tmp_path / "held").write_text("")
    with pytest.raises(ConfigError, match="a regular file, not a directory"):
        new_ledger(ledgers, tmp_path / "held", memory).open(holding=True)


def test_a_ledger_others_may_write_is_refused(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    """Records steer oom_kill_disable: a directory others can write is not trusted."""
    directory = tmp_path / "held"
    directory.mkdir()
    os.chmod(directory, 0o1777)
    with pytest.raises(ConfigError, match="writable by others"):
        new_ledger(ledgers, directory, memory).open(holding=True)
    assert os.listdir(directory) == []


@pytest.mark.parametrize("planted", ["symlink", "fifo"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger], planted: str
) -> None:
    directory = tmp_path / "held"
    directory.mkdir(mode=0o700)
    target = tmp_path / "target"
    if planted == "symlink":
        os.symlink(target, directory / LOCK_FILE)
    else:
        os.mkfifo(directory / LOCK_FILE)
    with pytest.raises(ConfigError, match=LOCK_FILE):
        new_ledger(ledgers, directory, memory).open(holding=True)
    assert not target.exists()


@pytest.mark.parametrize("planted", ["symlink", "hardlink", "fifo"])
def test_a_record_is_never_written_through_what_is_in_its_place(
    memory: Hierarchy,
    tmp_path: pathlib.Path,
    ledgers: list[HoldLedger],
    planted: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tmp_path / "held"
    c1 = memory.cgroup("c1")
    ledger = new_ledger(ledgers, directory, memory)
    ledger.open(holding=True)
    target = tmp_path / "target"
    target.write_text("precious")
    where = directory / record_name(c1)
    if planted == "symlink":
        os.symlink(target, where)
    elif planted == "hardlink":
        os.link(target, where)
    else:
        os.mkfifo(where)
    assert not ledger.taken(c1)
    assert target.read_text() == "precious"
    assert len(warnings_about(caplog, f"not holding {c1}")) == 1


def test_a_record_is_written_and_removed(
    memory: Hierarchy, tmp_path: pathlib.Path, ledgers: list[HoldLedger]
) -> None:
    directory = tmp_path / "held"
    c1 = memory.cgroup("c1")
    ledger = new_ledger(ledgers, directory, memory)
    ledger.open(holding=True)
    assert ledger.taken(c1)
    path = directory / record_name(c1)
    assert path.read_text() == c1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    ledger.release(c1)
    assert records(directory) == []
