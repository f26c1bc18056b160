"""pidfd_open(2), pidfd_send_signal(2), process_mrelease(2), and kill(2) as fallback.

A pidfd pins the identity of a process: a signal sent through it reaches that
process or fails (ESRCH), never a stranger that got its pid number later, so
"open, then re-check membership, then signal" never signals a stranger.
process_mrelease reaps a dying process's memory at once instead of waiting
for its exit path (needs a pending SIGKILL).

Rules of this module:
- A refusal - EPERM or ENOSYS (a seccomp profile without the syscall: an older
  container runtime's RuntimeDefault; ENOSYS also a kernel without it), EACCES
  (an LSM) - is decided once, by PidfdSupport, and remembered: a running
  process never loses a seccomp filter and its kernel never grows a syscall.
  The refused syscall is not tried again, and on_refused hears of it once.
- The normal path pays nothing for the fallbacks: a refusal is looked at only
  after a syscall failed, or when a process is opened (before any kill).
- pidfd_open refused: PlainPid, kill(2) by number, but only after its caller's
  membership check (`still_member`: the cgroup's cgroup.procs, read at the
  kill) - a pid no longer in the cgroup is not signalled, it may be a stranger's.
- pidfd_send_signal refused: PidFdViaKill, kill(2) while the pidfd shows the
  process alive: a live process (or its zombie) keeps its number.
- process_mrelease refused: skipped; the victim's exit path frees its memory.
- No file descriptors (EMFILE, ENFILE, ENOMEM) is not a refusal: that one
  process is a PlainPid, the next open tries a pidfd again.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from collections.abc import Callable

import trio

from memguard.kernel.fdholder import FdHolder
from memguard.kernel.native import ffi, lib, os_error

PIDFD_OPEN = "pidfd_open"
PIDFD_SEND_SIGNAL = "pidfd_send_signal"
PROCESS_MRELEASE = "process_mrelease"
SYSCALLS = (PIDFD_OPEN, PIDFD_SEND_SIGNAL, PROCESS_MRELEASE)

_REFUSED = frozenset({errno.EPERM, errno.ENOSYS, errno.EACCES})
_NO_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# process_mrelease is an optimisation: already reaped (ESRCH), not dying yet (EINVAL)
_MRELEASE_NOT_POSSIBLE = frozenset({errno.ESRCH, errno.EINVAL}) | _REFUSED
EXIT_POLL_S = 0.01  # PlainPid cannot be waited on: it looks this often


class PidfdSupport:
    """Which pidfd syscalls this process may use; opens processes accordingly.

    `refused` maps a refused syscall to its errno. probe() tries all three on
    memguard itself (signal 0; process_mrelease of a live process is EINVAL), so
    a refusal is known, and said, at start rather than at the first kill."""

    def __init__(self, on_refused: Callable[[str, int], None] | None = None) -> None:
        self.refused: dict[str, int] = {}
        self._on_refused = on_refused
        self._lock = threading.Lock()  # victims are prepared in worker threads

    def probe(self) -> None:
        fd = lib.memguard_pidfd_open(os.getpid(), 0)
        if fd == -1:
            self.note(PIDFD_OPEN, ffi.errno)
            return
        try:
            if lib.memguard_pidfd_send_signal(fd, 0, 0) == -1:
                self.note(PIDFD_SEND_SIGNAL, ffi.errno)
            if lib.memguard_process_mrelease(fd, 0) == -1:
                self.note(PROCESS_MRELEASE, ffi.errno)
        finally:
            os.close(fd)

    def refusals(self) -> dict[str, bool]:
        """Every pidfd syscall: refused or not (so far)."""
        return {syscall: syscall in self.refused for syscall in SYSCALLS}

    def note(self, syscall: str, code: int) -> bool:
        """Whether errno `code` from syscall is a refusal; the first one is kept and told."""
        if code not in _REFUSED:
            return False
        with self._lock:
            first = syscall not in self.refused
            if first:
                self.refused[syscall] = code
        if first and self._on_refused is not None:
            self._on_refused(syscall, code)
        return True

    def signal_refused(self, code: int) -> bool:
        """pidfd_send_signal failed with code: refused for every target, or only this
        one? EPERM is also "no permission to signal it" (another user's process
        without CAP_KILL): signal 0 to memguard itself tells the two apart."""
        if code in (errno.EPERM, errno.EACCES):
            fd = lib.memguard_pidfd_open(os.getpid(), 0)
            if fd == -1:
                return False  # cannot tell (no fds?): this target's error, not remembered
            try:
                if lib.memguard_pidfd_send_signal(fd, 0, 0) == 0:
                    return False
            finally:
                os.close(fd)
        return self.note(PIDFD_SEND_SIGNAL, code)

    def open(
        self, pid: int, still_member: Callable[[int], bool] | None = None
    ) -> PidFd | PlainPid | None:
        """A pidfd for pid; PlainPid (signalled only while still_member(pid), when
        given) where pidfds are refused or fds run out; None when pid is gone."""
        if PIDFD_OPEN not in self.refused:
            fd = lib.memguard_pidfd_open(pid, lib.PIDFD_NONBLOCK)
            if fd != -1:
                kind = PidFdViaKill if PIDFD_SEND_SIGNAL in self.refused else PidFd
                return kind(int(fd), pid, self)
            code = ffi.errno
            if code == errno.ESRCH:
                return None
            if code not in _NO_FDS and not self.note(PIDFD_OPEN, code):
                raise os_error(f"pidfd_open {pid}")
        return None if _is_gone(pid) else PlainPid(pid, still_member)


class PidFd(FdHolder):
    """A pidfd owned by this object. Use PidfdSupport.open(pid), or PidFd.open(pid)
    where a refusal is an error (tests waiting for a process)."""

    def __init__(self, fd: int, pid: int, support: PidfdSupport | None = None) -> None:
        super().__init__(fd)
        self.pid = pid
        self._support = support

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
            code = ffi.errno
            if code == errno.ESRCH:
                return False
            if self._support is not None and self._support.signal_refused(code):
                return self._kill_while_alive(signum)
            raise os_error(f"pidfd_send_signal {self.pid}")
        return True

    def _kill_while_alive(self, signum: int) -> bool:
        """kill(2) while the pidfd shows the process alive: it still owns its number."""
        return False if self.has_exited() else _kill(self.pid, signum)

    def mrelease(self) -> bool:
        """Reap the (killed) process's memory now; False when not possible.

        It is an optimisation: ESRCH (already reaped), EINVAL (not dying yet) and
        a refusal are normal outcomes - the victim's exit path frees the memory.
        """
        support = self._support
        if support is not None and PROCESS_MRELEASE in support.refused:
            return False
        if lib.memguard_process_mrelease(self.fileno(), 0) == -1:
            code = ffi.errno
            if support is not None:
                support.note(PROCESS_MRELEASE, code)
            if code in _MRELEASE_NOT_POSSIBLE:
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


class PidFdViaKill(PidFd):
    """A pidfd whose signals go by kill(2): pidfd_send_signal is refused. The
    pidfd still pins the process (kill(2) only while it is alive) and waits."""

    def send_signal(self, signum: int) -> bool:
        return self._kill_while_alive(signum)


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
    """A process addressed by its pid number (kill(2)): PidFd's fallback.

    still_member(pid) is asked just before each signal: False (the pid left the
    cgroup - it exited, and the number may name another process now) means the
    signal is not sent. Without it the caller must have checked just before."""

    def __init__(self, pid: int, still_member: Callable[[int], bool] | None = None) -> None:
        self.pid = pid
        self._still_member = still_member

    def send_signal(self, signum: int) -> bool:
        if self._still_member is not None and not self._still_member(self.pid):
            return False
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
