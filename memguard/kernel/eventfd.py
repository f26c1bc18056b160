"""eventfd(2): the kernel's counter-based wake-up, used by cgroup v1 notifications.

Kernel facts: a read returns the 8-byte counter and resets it to 0; with
EFD_NONBLOCK a read of a zero counter fails with EAGAIN. cgroup v1 threshold
and OOM events each add 1; several events before a read coalesce into one read.
"""

from __future__ import annotations

import os
import sys

from memguard.kernel.fdholder import FdHolder
from memguard.kernel.native import check, lib

COUNTER_BYTES = 8


class EventFd(FdHolder):
    """A non-blocking, close-on-exec eventfd owned by this object."""

    def __init__(self) -> None:
        fd = check(lib.eventfd(0, lib.EFD_CLOEXEC | lib.EFD_NONBLOCK), "eventfd")
        super().__init__(fd)

    def read_nowait(self) -> int:
        """The counter (reset to 0 by reading); 0 when nothing is pending."""
        try:
            data = os.read(self.fileno(), COUNTER_BYTES)
        except BlockingIOError:
            return 0
        return int.from_bytes(data, sys.byteorder)
