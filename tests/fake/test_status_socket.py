"""--status-socket never takes what is not its own and makes nothing it then
refuses: a live socket of another program is refused (exit 2, one line) and
left as it was; /dev/null, a directory, a missing directory, a lock path that
is not a file: refused before anything is created; `auto` skips a candidate
another program serves, with one log line."""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from memguard.cli import statuspath, statussocket
from memguard.cli.statussocket import open_status_socket
from testing.waits import within

MEMGUARD = [sys.executable, "-m", "memguard.cli"]


async def run_agent(parent: str, setting: str, cwd: pathlib.Path | None = None) -> str:
    """`memguard run --status-socket SETTING`, expected to refuse: its stderr."""
    command = [*MEMGUARD, "run", "--parent", parent, "--kubernetes", "off"]
    with within(f"memguard run --status-socket {setting!r} exiting", 60):
        result = await trio.run_process(
            [*command, "--status-socket", setting],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
        )
    error = result.stderr.decode()
    assert result.returncode == 2, error
    assert "Traceback" not in error
    assert len(error.splitlines()) == 1, error  # the refusal alone: before any log line
    return error.strip()


@contextmanager
def listening(path: pathlib.Path, kind: int = socket.SOCK_STREAM) -> Iterator[socket.socket]:
    """Another program's live socket at path (held by the test)."""
    with socket.socket(socket.AF_UNIX, kind) as sock:
        sock.bind(str(path))
        if kind == socket.SOCK_STREAM:
            sock.listen(4)
        yield sock


def answers(path: pathlib.Path) -> bool:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def contents(directory: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["stream", "dgram"])
async def test_a_live_socket_of_another_program_is_refused_and_left_alone(
    empty_fake_root: str, tmp_path: pathlib.Path, kind: int
) -> None:
    place = tmp_path / "place"
    place.mkdir()
    path = place / "other.sock"
    with listening(path, kind):
        before = os.lstat(path)
        error = await run_agent(empty_fake_root, str(path))
        assert error == f"memguard run: error: --status-socket {path}: in use by another program"
        after = os.lstat(path)
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)  # not replaced
        if kind == socket.SOCK_STREAM:
            assert answers(path)  # still the other program's
        assert contents(place) == ["other.sock"]  # no other.sock.lock either


async def test_a_stale_socket_is_replaced(empty_fake_root: str, tmp_path: pathlib.Path) -> None:
    """Bound, never listening (what a killed program leaves): refuses connections."""
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    assert not answers(path)
    claim, listeners = await statussocket._claim_and_listen(str(path), explicit=True)
    try:
        assert answers(path)  # ours now
    finally:
        for listener in listeners:
            await listener.aclose()
        claim.remove_socket()
        claim.let_go()
    assert not path.exists()


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("place", "exists and is not a socket"),  # a directory
        ("place/file", "exists and is not a socket"),
        ("place/link.sock", "exists and is not a socket"),  # a symlink, even to a socket
        ("place/missing/dir/x.sock", "no directory {place}/missing/dir"),
        ("place/file/x.sock", "{place}/file is not a directory"),
        ("place/locked.sock", "{place}/locked.sock.lock exists and is not a regular file"),
        ("place/new\nline/x.sock", "no directory {place}/new\\x0aline"),
    ],
)
async def test_paths_that_cannot_be_the_socket_are_refused_with_nothing_made(
    empty_fake_root: str, tmp_path: pathlib.Path, subject: str, why: str
) -> None:
    place = tmp_path / "place"
    place.mkdir()
    (place / "file").write_text("x")
    (place / "locked.sock.lock").mkdir()
    with listening(place / "real.sock"):
        (place / "link.sock").symlink_to(place / "real.sock")
        before = contents(place)
        error = await run_agent(empty_fake_root, str(tmp_path / subject))
        shown = str(tmp_path / subject).replace("\n", "\\x0a")
        assert error == f"memguard run: error: --status-socket {shown}: " + why.format(place=place)
        assert contents(place) == before


async def test_dev_null_is_refused_and_no_lock_is_made_beside_it(empty_fake_root: str) -> None:
    lock = trio.Path("/dev/null.lock")
    assert not await lock.exists()
    error = await run_agent(empty_fake_root, "/dev/null")
    assert error.endswith("--status-socket /dev/null: exists and is not a socket")
    assert not await lock.exists()
    assert not await lock.is_symlink()


async def no_page() -> tuple[int, str, bytes]:
    return 200, "application/json", b"{}"


async def test_auto_skips_a_candidate_another_program_serves(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    taken, free = tmp_path / "run" / "memguard", tmp_path / "xdg" / "memguard"
    taken.mkdir(parents=True)
    (tmp_path / "xdg").mkdir()
    candidates = [str(taken / "status.sock"), str(free / "status.sock")]
    monkeypatch.setattr(statussocket, "socket_candidates", lambda environ: candidates)
    caplog.set_level(logging.INFO, logger="memguard.cli.statussocket")
    with listening(taken / "status.sock"):
        endpoint = await open_status_socket("auto", no_page, {})
        assert endpoint is not None
        assert endpoint.path == candidates[1]  # in the directory auto made
        async with trio.open_nursery() as nursery:
            await nursery.start(endpoint.run)
            assert answers(free / "status.sock")
            nursery.cancel_scope.cancel()
        assert not (free / "status.sock").exists()  # removed when it stops
        endpoint.claim.let_go()
        assert contents(taken) == ["status.sock"]  # nothing of ours beside it
        assert answers(taken / "status.sock")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"status on unix socket {candidates[1]} (memguard status) "
        f"(not {candidates[0]}: in use by another program)"
    ]


def test_letting_go_removes_only_a_lock_file_this_agent_made(tmp_path: pathlib.Path) -> None:
    made = statussocket._claim(str(tmp_path / "made.sock"))
    assert made.created_lock
    made.let_go()
    assert not (tmp_path / "made.sock.lock").exists()

    (tmp_path / "kept.sock.lock").write_text("")  # an earlier agent's
    kept = statussocket._claim(str(tmp_path / "kept.sock"))
    assert not kept.created_lock
    kept.let_go()
    assert (tmp_path / "kept.sock.lock").exists()


def test_a_held_lock_is_another_agents(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s.sock")
    first = statussocket._claim(path)
    try:
        with pytest.raises(statuspath.Unusable, match=f"another memguard serves {path}"):
            statussocket._claim(path)
        assert statuspath.held_by_another_agent(path)
    finally:
        first.let_go()
    assert not statuspath.held_by_another_agent(path)
