"""PSI triggers on a cgroup's memory.pressure (cgroup v2).

Writing "some <stall_us> <window_us>" to an fd of memory.pressure (opened
read-write) arms a trigger that lives as long as the fd; it fires (POLLPRI)
when tasks of the cgroup stalled on memory for stall_us within window_us.
trio cannot wait for POLLPRI, so the fd sits in a private epoll with EPOLLPRI:
the epoll fd polls readable when the trigger fires, and that readability IS
the event - the inner epoll_wait afterwards returns nothing (measured in the
test VM). Root may use windows from 500 ms to 10 s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select

import trio

from memguard.errors import KernelError, Unsupported
from memguard.kernel.cgroupfs import GONE_ERRNOS
from memguard.kernel.fdholder import FdHolder
from memguard.kernel.names import PRESSURE_FILE

# PSI compiled out or disabled (psi=0): the file is missing or refuses triggers.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP})


class PsiTrigger(FdHolder):
    """Owns the private epoll fd (fileno) and the memory.pressure trigger fd."""

    def __init__(self, epoll: select.epoll, pressure_fd: int) -> None:
        super().__init__(epoll.fileno())
        self._epoll = epoll
        self._pressure_fd = pressure_fd

    @classmethod
    def open(cls, cgroup_dir: str, spec: str) -> PsiTrigger | None:
        """A trigger armed with spec ("some 50000 500000"), or None when the cgroup is gone."""
        path = os.path.join(cgroup_dir, PRESSURE_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            if error.errno in GONE_ERRNOS:
                return None
            raise KernelError(f"open {path}", error.errno or 0, str(error)) from error
        try:
            os.write(fd, spec.encode() + b"\0")
            epoll = select.epoll()
            epoll.register(fd, select.EPOLLPRI)
        except OSError as error:
            os.close(fd)
            if error.errno in GONE_ERRNOS:
                return None
            if error.errno in _UNSUPPORTED:
                raise Unsupported(f"PSI trigger on {path}", error.errno, str(error)) from error
            raise KernelError(f"PSI trigger on {path}", error.errno or 0, str(error)) from error
        return cls(epoll, fd)

    def drain(self) -> None:
        """Clear the epoll's ready list after a wake-up."""
        self._epoll.poll(0)

    def close(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # outside trio nobody can be waiting
            trio.lowlevel.notify_closing(self._fd)
        self._fd = -1
        self._epoll.close()  # closes the fd FdHolder held
        os.close(self._pressure_fd)  # disarms the trigger


def parse_full_avg10(text: str) -> float | None:
    """The `full avg10` share (percent of the last 10 s in which every task of the
    cgroup stalled on memory) from memory.pressure; None when the line is missing
    or malformed. Format: "full avg10=13.37 avg60=2.41 avg300=0.50 total=2098080"."""
    for line in text.splitlines():
        kind, _, fields = line.partition(" ")
        if kind != "full":
            continue
        for field in fields.split():
            name, _, value = field.partition("=")
            if name == "avg10":
                try:
                    share = float(value)
                except ValueError:
                    return None
                return share if 0.0 <= share <= 100.0 else None
    return None


def read_full_avg10(cgroup_dir: str) -> float | None:
    """A cgroup's memory.pressure `full avg10`; None when the cgroup is gone or has
    no PSI (cgroup v1, psi=0, cgroup.pressure 0: EOPNOTSUPP on read)."""
    path = os.path.join(cgroup_dir, PRESSURE_FILE)
    try:
        with open(path, "rb") as file:
            text = file.read(4096).decode("ascii", "replace")
    except OSError as error:
        if error.errno in GONE_ERRNOS or error.errno in _UNSUPPORTED:
            return None
        raise KernelError(f"read {path}", error.errno or 0, str(error)) from error
    return parse_full_avg10(text)
