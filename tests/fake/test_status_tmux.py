"""`memguard status` in a real terminal: tmux runs it in a pane beside an agent on
a fake tree; a container's usage is driven up and the pane's screen
(`tmux capture-pane -p`) shows its row and its bar moving. The tmux server is
private (`tmux -L <unique name>`) and only it is killed. With
MEMGUARD_STATUS_CAPTURE=FILE the last screen is written there too."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from memguard.cli.statusview import label
from memguard.fake import drive, model, tree
from memguard.policy.model import MIB
from testing.agentproc import agent_process, wait_until
from testing.waits import within

TMUX = "/usr/bin/tmux"  # Debian's tmux (CI installs it as it installs the VM tools)
COLUMNS, ROWS = 150, 30


@contextmanager
def tmux_server() -> Iterator[list[str]]:
    """The command prefix of a private tmux server, killed (it alone) on exit."""
    if not os.access(TMUX, os.X_OK):
        pytest.fail(f"the real-terminal test needs tmux at {TMUX} (apt-get install tmux)")
    name = f"memguard-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    prefix = [TMUX, "-L", name, "-f", "/dev/null"]
    try:
        yield prefix
    finally:
        subprocess.run([*prefix, "kill-server"], capture_output=True, timeout=30)
        # The killed server leaves its socket file behind: remove it (ours, by name).
        socket_dir = os.environ.get("TMUX_TMPDIR", "/tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(socket_dir, f"tmux-{os.getuid()}", name))


async def screen(prefix: list[str]) -> str:
    """What the status pane shows now (its visible lines, as text)."""
    with within("tmux capture-pane answering", 30):
        result = await trio.run_process(
            [*prefix, "capture-pane", "-p", "-t", "status"], capture_stdout=True
        )
    return result.stdout.decode()


def row_of(text: str, name: str) -> str | None:
    return next((line for line in text.splitlines() if line.startswith(name)), None)


def filled(row: str | None) -> int:
    """Cells of the bar that show memory (█ in use, ▒ page cache)."""
    return 0 if row is None else row.count("█") + row.count("▒")


async def test_status_in_a_terminal_follows_a_container(
    fake_tree: tuple[str, list[tree.FakeContainer]], tmp_path: pathlib.Path
) -> None:
    root, containers = fake_tree
    target = next(c for c in containers if c.name == "web")
    entry = {"cgroup": target.path}
    name = label(entry, root)
    sock = tmp_path / "status.sock"
    args = ["--parent", root, "--policy", "noop", "--kubernetes", "off"]
    with (
        agent_process(
            [*args, "--status-socket", str(sock)], stderr=tmp_path / "agent.log"
        ) as agent,
        tmux_server() as tmux,
    ):
        await agent.wait_ready()
        viewer = [sys.executable, "-m", "memguard.cli", "status", "--socket", str(sock)]
        command = shlex.join([*viewer, "--interval", "200ms"])
        # The pane's size, not pytest's (rich reads COLUMNS and LINES first).
        terminal_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        with within("tmux starting the status pane", 30):
            await trio.run_process(
                [*tmux, "new-session", "-d", "-s", "status", "-x", str(COLUMNS), "-y", str(ROWS),
                 "-c", os.getcwd(), "-e", "TERM=xterm-256color", command],
                env=terminal_env,
            )  # fmt: skip
        before: list[str] = []

        async def row_shown() -> bool:
            before[:] = [await screen(tmux)]
            return row_of(before[0], name) is not None

        try:
            await wait_until(row_shown, 30, f"the row of {name} on the status screen")
        except AssertionError as error:
            raise AssertionError(f"{error}; the screen:\n{''.join(before)}") from None
        start = filled(row_of(before[0], name))
        assert start <= 1, before[0]  # 8 MiB of 256 MiB
        # Over the threshold in one step: a guard reads on the crossing (and keeps
        # re-reading while over). Under it a v1 guard reads only on its levels, so
        # two steps could leave the row at the first one's reading (by design: the
        # view shows what the guards last read).
        drive.step(root, target.path, drive.Kind.ANON, 244 * MIB)
        memory = model.read(target.path)
        assert memory is not None
        shown = f"{memory.usage_bytes / MIB:.1f}Mi"  # 252.0Mi, the threshold 250.9Mi
        after: list[str] = []

        async def bar_moved() -> bool:
            after[:] = [await screen(tmux)]
            row = row_of(after[0], name)
            return row is not None and shown in row and filled(row) > start

        try:
            await wait_until(bar_moved, 30, f"the bar of {name} moving to {shown}")
        except AssertionError as error:
            raise AssertionError(f"{error}; the screen:\n{''.join(after)}") from None
        row = row_of(after[0], name)
        assert row is not None
        # 252 of 256 MiB: 20 cells, the last one the threshold's mark
        assert filled(row) == round(20 * memory.usage_bytes / target.limit_bytes) - 1  # type: ignore[operator]
        assert "│" in row
        assert "0%" in row  # no page cache
        assert "noop" in row  # the last action: the noop policy's report at the crossing
        assert "from " + str(sock) in after[0]
        capture = os.environ.get("MEMGUARD_STATUS_CAPTURE")
        if capture:
            await trio.Path(capture).write_text(after[0])
        assert agent.stop() == 0
