"""An owned file descriptor that is closed the trio way.

trio's _unix_pipes pattern: tell trio the fd is closing (so a task parked in
wait_readable gets ClosedResourceError instead of waiting on a recycled fd
number), then close it. Closing twice is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from types import TracebackType
from typing import Self

import trio


class FdHolder:
    """Owns one fd; subclasses add the interface-specific calls."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise trio.ClosedResourceError(f"{type(self).__name__} is closed")
        return self._fd

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        # Outside trio (sync callers) RuntimeError: nobody can be waiting then.
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(fd)
        os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A leaked holder is a bug; still, never leak the fd itself.
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
