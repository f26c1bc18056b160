"""The kill path's signalling primitives and their fallbacks.

Without a pidfd (refused, or a pid read a moment ago) kill(2) is used: the pid
was a member microseconds before; under the freezer it cannot be reused at all.
A prepared victim without a pidfd (pidfd_open refused: memguard.kernel.pidfd)
is signalled only if it is in cgroup.procs read at the kill (once per kill, when
the first such victim is signalled): a prepared pid that left the cgroup may
name another process by now. Refusals are decided once, said once (WARNING).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal

from memguard.backends.base import Backend
from memguard.kernel.pidfd import PIDFD_OPEN, PIDFD_SEND_SIGNAL, PROCESS_MRELEASE, Process

# The kill path's warnings keep the logger name they have always had.
log = logging.getLogger("memguard.guarding.killer")


def send(process: Process) -> bool:
    """SIGKILL, then reap its memory at once (process_mrelease) where possible."""
    if not process.send_signal(signal.SIGKILL):
        return False
    release(process)
    return True


def release(process: Process) -> None:
    """process_mrelease: a killed process's memory is freed now, not at its exit.
    It takes time (~25 us per MiB): a container's victims are all signalled first."""
    with contextlib.suppress(Exception):
        process.mrelease()


def kill_pid(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


# What memguard does instead when a pidfd syscall is refused (logged once).
INSTEAD = {
    PIDFD_OPEN: "kills go by pid with kill(2), each only if the pid is still in the "
    "cgroup's cgroup.procs read at the kill (a pid that left may name another process "
    "by now); process_mrelease is not used (it needs a pidfd)",
    PIDFD_SEND_SIGNAL: "kills go by pid with kill(2), each only while the process's "
    "pidfd shows it alive (so the pid still names it)",
    PROCESS_MRELEASE: "a killed process's memory is freed by its own exit, not reaped at once",
}


def say_refused(syscall: str, code: int) -> None:
    log.warning(
        "kill path: %s is refused (%s: a seccomp profile without it, as older container "
        "runtimes' defaults are, or an older kernel): %s",
        syscall,
        errno.errorcode.get(code, str(code)),
        INSTEAD[syscall],
    )


def say_no_realtime(error: OSError) -> None:
    log.warning(
        "kill path: SCHED_FIFO is refused (%s: needs CAP_SYS_NICE or RLIMIT_RTPRIO, and RT "
        "runtime in memguard's CPU cgroup where RT group scheduling is on): a container "
        "kill's signals compete for the CPU with the members already dying, so a big "
        "container takes longer to signal",
        errno.errorcode.get(error.errno or 0, str(error.errno)),
    )


class Members:
    """A cgroup's members, read once, when a victim without a pidfd is about to be
    signalled (at the kill, not at the preparation)."""

    def __init__(self, backend: Backend, cgroup_dir: str) -> None:
        self._backend = backend
        self._cgroup_dir = cgroup_dir
        self._pids: frozenset[int] | None = None

    def contain(self, pid: int) -> bool:
        if self._pids is None:
            self._pids = frozenset(self._backend.pids(self._cgroup_dir) or ())
        return pid in self._pids
