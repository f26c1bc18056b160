"""pidfd_open(2), pidfd_send_signal(2), process_mrelease(2), and kill(2) as fallback.

A pidfd pins the identity of a process: a signal sent through it reaches that
process or fails (ESRCH), never a stranger that got its pid number later, so
"open, then re-check membership, then signal" never signals a stranger.
process_mrelease reaps a dying process's memory at once instead of waiting
for its exit path (needs a pending SIGKILL).

Where pidfds are refused (a seccomp profile without them: EPERM/ENOSYS; no
file descriptors left: EMFILE/ENFILE), open_process() falls back to PlainPid,
which signals the pid number with kill(2); its callers re-check membership
just before, so the window in which the number could change hands is the few
microseconds between that check and the signal.
"""

from __future__ import annotations

import errno
import os
import select

import trio

from memguard.errors import KernelError
from memguard.kernel.fdholder import FdHolder
from memguard.kernel.native import ffi, lib, os_error

HAVE_PROCESS_MRELEASE = bool(lib.MEMGUARD_HAVE_PROCESS_MRELEASE)
_MRELEASE_NOT_POSSIBLE = frozenset(
    {errno.ESRCH, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EACCES}
)
_PIDFD_REFUSED = frozenset(
    {errno.EPERM, errno.ENOSYS, errno.EACCES, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
)
EXIT_POLL_S = 0.01  # PlainPid cannot be waited on: it looks this often


class PidFd(FdHolder):
    """A pidfd owned by this object. Use PidFd.open(pid)."""

    def __init__(self, fd: int, pid: int) -> None:
        super().__init__(fd)
        self.pid = pid

    @classmethod
    def open(cls, pid: int) -> PidFd | None:
        """A pidfd for pid, or None when no such process exists."""
        fd = lib.memguard_pidfd_open(pid, lib.PIDFD_NONBLOCK)
        if fd == -1:
            if ffi.errno == errno.ESRCH:
                return None
            raise os_error(f"pidfd_open {pid}")
        return cls(int(fd), pid)

    def send_signal(self, signum: int) -> bool:
        """True when delivered; False when the process has already exited.

        If pidfd_send_signal itself is refused (seccomp), kill(2) the pid while
        the pidfd shows the process alive: a live process keeps its number."""
        if lib.memguard_pidfd_send_signal(self.fileno(), signum, 0) == -1:
            code = ffi.errno
            if code == errno.ESRCH:
                return False
            if code in (errno.EPERM, errno.ENOSYS, errno.EACCES) and not self.has_exited():
                return _kill(self.pid, signum)
            raise os_error(f"pidfd_send_signal {self.pid}")
        return True

    def mrelease(self) -> bool:
        """Reap the (killed) process's memory now; False when not possible.

        It is an optimisation: ESRCH (already reaped), EINVAL (not dying yet),
        ENOSYS and EPERM/EACCES (a seccomp profile without it) are normal
        outcomes - the victim's exit path frees the memory anyway.
        """
        if not HAVE_PROCESS_MRELEASE:
            return False
        if lib.memguard_process_mrelease(self.fileno(), 0) == -1:
            if ffi.errno in _MRELEASE_NOT_POSSIBLE:
                return False
            raise os_error(f"process_mrelease {self.pid}")
        return True

    def has_exited(self) -> bool:
        """A pidfd polls readable once the process has exited."""
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def wait_exit(self) -> None:
        """Park until the process exits (the pidfd becomes readable)."""
        await trio.lowlevel.wait_readable(self.fileno())


def _kill(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _is_gone(pid: int) -> bool:
    """No such process, or a zombie (exited, not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :][:1] in (b"Z", b"X")


class PlainPid:
    """A process addressed by its pid number (kill(2)): PidFd's fallback."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def send_signal(self, signum: int) -> bool:
        return _kill(self.pid, signum)

    def mrelease(self) -> bool:
        return False  # process_mrelease needs a pidfd

    async def wait_exit(self) -> None:
        while not _is_gone(self.pid):  # noqa: ASYNC110 - nothing to wait on without a pidfd
            await trio.sleep(EXIT_POLL_S)

    def close(self) -> None:
        pass

    def __enter__(self) -> PlainPid:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


Process = PidFd | PlainPid


def open_process(pid: int) -> Process | None:
    """A pidfd for pid, PlainPid when pidfds are refused, None when pid is gone."""
    try:
        return PidFd.open(pid)
    except KernelError as error:
        if error.errno not in _PIDFD_REFUSED:
            raise
    return None if _is_gone(pid) else PlainPid(pid)
