"""pidfd_open(2), pidfd_send_signal(2), process_mrelease(2).

A pidfd pins the identity of a process: once opened, the pid number cannot be
reused while the fd is open, so "open, then re-check membership, then signal"
never signals a stranger. process_mrelease reaps a dying process's memory at
once instead of waiting for its exit path (needs a pending SIGKILL).
"""

from __future__ import annotations

import errno
import select

import trio

from memguard.kernel.fdholder import FdHolder
from memguard.kernel.native import ffi, lib, os_error

HAVE_PROCESS_MRELEASE = bool(lib.MEMGUARD_HAVE_PROCESS_MRELEASE)
_MRELEASE_NOT_POSSIBLE = frozenset(
    {errno.ESRCH, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EACCES}
)


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
        """True when delivered; False when the process has already exited."""
        if lib.memguard_pidfd_send_signal(self.fileno(), signum, 0) == -1:
            if ffi.errno == errno.ESRCH:
                return False
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
