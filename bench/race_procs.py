"""The bench's own processes: started, tracked, killed by pid, reaped - orphans too.

The bench makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER): a
workload process whose parent died first (a fork bomb's children, the idle
children after their parent was killed) is re-parented to the bench instead of
pid 1 and reaped here after every trial (pid 1 on this host reaps orphans only
now and then). Only processes the bench started, or found in its own cgroups,
are ever signalled, always by pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import IO

import trio

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
STOP_WAIT_S = 10.0  # memguard delivers its queued reports on SIGTERM (5 s at most)

Process = subprocess.Popen[bytes]


def become_subreaper() -> None:
    """Orphaned descendants of the bench come to the bench to be reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(code)}")


class Processes:
    """Every process the bench started and has not yet stopped, by pid."""

    def __init__(self) -> None:
        self._tracked: dict[int, Process] = {}

    def start(
        self,
        argv: Sequence[str],
        *,
        stdin: int = subprocess.DEVNULL,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> Process:
        """argv as a child of the bench (stdout and stderr inherited unless given)."""
        process = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr)
        self._tracked[process.pid] = process
        return process

    def stop(self, process: Process, signum: int = signal.SIGKILL) -> int:
        """Signal it by pid (if still running), wait for it, close its pipes; its returncode."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            try:
                process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(RuntimeError):  # outside trio: nobody waits on it
                    trio.lowlevel.notify_closing(pipe.fileno())
                pipe.close()
        self._tracked.pop(process.pid, None)
        return process.returncode

    def reap_orphans(self) -> int:
        """Reap every exited child that is not one of ours; how many were reaped.

        A tracked child that has exited is reaped through its Popen (its status kept)."""
        reaped = 0
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return reaped  # no children at all
            if info is None:
                return reaped  # children, none exited
            tracked = self._tracked.get(info.si_pid)
            if tracked is not None and tracked.poll() is not None:
                continue  # reaped by its Popen, which keeps its status
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, 0)
            reaped += 1

    def stop_all(self) -> None:
        for process in list(self._tracked.values()):
            self.stop(process)
        self.reap_orphans()


class LineReader:
    """Lines from a child's stdout pipe, awaited in trio with a bound."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = b""

    async def line(self, timeout_s: float) -> str | None:
        """The next line (without its newline); None at EOF or after timeout_s."""
        with trio.move_on_after(timeout_s):
            while b"\n" not in self._buffer:
                await trio.lowlevel.wait_readable(self._fd)
                chunk = os.read(self._fd, 4096)
                if not chunk:
                    return None
                self._buffer += chunk
            line, _, self._buffer = self._buffer.partition(b"\n")
            return line.decode(errors="replace")
        return None
