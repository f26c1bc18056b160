"""inotify(7) for cgroupfs and fake trees.

Kernel facts (measured on this host, cgroup v1): mkdir/rmdir of a child cgroup
gives IN_CREATE / IN_DELETE with IN_ISDIR on the parent's watch; a user-space
write such as a new memory.limit_in_bytes gives IN_MODIFY and IN_CLOSE_WRITE;
kernel-side changes (usage, under_oom) give nothing; a removed cgroup directory
gets no IN_DELETE_SELF, so callers drop the watch when the parent reports the
deletion. Watching the same inode twice returns the same wd (masks replace).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import trio

from memguard.errors import WatchError
from memguard.kernel.fdholder import FdHolder
from memguard.kernel.native import check, ffi, lib, os_error

# One read returns whole events only; this fits at least 64 maximal events.
READ_BUFFER_BYTES = 64 * (ffi.sizeof("struct inotify_event") + lib.NAME_MAX + 1)

IN_CREATE: int = lib.IN_CREATE
IN_DELETE: int = lib.IN_DELETE
IN_MODIFY: int = lib.IN_MODIFY
IN_CLOSE_WRITE: int = lib.IN_CLOSE_WRITE
IN_MOVED_FROM: int = lib.IN_MOVED_FROM
IN_MOVED_TO: int = lib.IN_MOVED_TO
IN_ISDIR: int = lib.IN_ISDIR
IN_IGNORED: int = lib.IN_IGNORED
IN_Q_OVERFLOW: int = lib.IN_Q_OVERFLOW
IN_ONLYDIR: int = lib.IN_ONLYDIR


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    wd: int
    mask: int
    cookie: int
    name: str


def parse_events(buffer: bytes) -> list[InotifyEvent]:
    """Decode a read(2) buffer of struct inotify_event records."""
    events: list[InotifyEvent] = []
    header_bytes = ffi.sizeof("struct inotify_event")
    raw = ffi.from_buffer(buffer)
    offset = 0
    while offset + header_bytes <= len(buffer):
        record = ffi.cast("struct inotify_event *", raw + offset)
        name_bytes = int(record.len)
        name = ffi.string(record.name, name_bytes).decode("utf-8", "surrogateescape")
        events.append(InotifyEvent(int(record.wd), int(record.mask), int(record.cookie), name))
        offset += header_bytes + name_bytes
    return events


class Inotify(FdHolder):
    """A non-blocking inotify instance owned by this object."""

    def __init__(self) -> None:
        super().__init__(check(lib.inotify_init1(lib.IN_CLOEXEC | lib.IN_NONBLOCK), "inotify"))

    def add_watch(self, path: str, mask: int) -> int | None:
        """The watch descriptor, or None when path does not exist (any more).

        WatchError for a reason that concerns this path only: the watch limit
        (ENOSPC), a path longer than PATH_MAX (ENAMETOOLONG), no access, a loop.
        """
        wd = lib.inotify_add_watch(self.fileno(), os.fsencode(path), mask)
        if wd == -1:
            code = ffi.errno
            if code in (errno.ENOENT, errno.ENOTDIR):
                return None
            if code == errno.EBADF:
                raise os_error(f"inotify_add_watch {path}")
            raise WatchError(f"inotify_add_watch {path}", code, os.strerror(code))
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        """Remove a watch; one the kernel already dropped (EINVAL) is fine."""
        if lib.inotify_rm_watch(self.fileno(), wd) == -1 and ffi.errno != errno.EINVAL:
            raise os_error("inotify_rm_watch")

    def read_nowait(self) -> list[InotifyEvent]:
        try:
            return parse_events(os.read(self.fileno(), READ_BUFFER_BYTES))
        except BlockingIOError:
            return []

    async def read(self) -> list[InotifyEvent]:
        """Park until at least one event is queued, then return all queued."""
        while True:
            await trio.lowlevel.wait_readable(self.fileno())
            events = self.read_nowait()
            if events:
                return events
