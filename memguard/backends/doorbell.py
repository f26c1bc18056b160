"""Coalescing wake-ups for one guard task.

A guard sleeps in Doorbell.wait(): until its kernel fd (an eventfd on cgroup
v1) polls readable, until another task rings (inotify saw a new limit), or
until the timeout. Rings that arrive while the guard is busy are kept and
returned by the next wait, so nothing is lost; repeats coalesce.
"""

from __future__ import annotations

import time

import trio

from memguard.backends.wake import Wake


class Doorbell:
    def __init__(self) -> None:
        self._pending: set[Wake] = set()
        self._scope: trio.CancelScope | None = None
        # perf_counter() when the kernel fd woke us: the start of the latency clock.
        self.kernel_woke_at: float | None = None

    def ring(self, reason: Wake) -> None:
        self._pending.add(reason)
        if self._scope is not None:
            self._scope.cancel()

    async def wait(self, fd: int | None, timeout_s: float) -> frozenset[Wake]:
        """The reasons for waking (coalesced); never empty."""
        if not self._pending:
            with trio.move_on_after(max(timeout_s, 0.0)) as scope:
                self._scope = scope
                try:
                    if fd is None:
                        await trio.sleep_forever()
                    await trio.lowlevel.wait_readable(fd)
                    self.kernel_woke_at = time.perf_counter()
                    self._pending.add(Wake.KERNEL)
                finally:
                    self._scope = None
            if not self._pending:
                self._pending.add(Wake.TIMEOUT)
        reasons = frozenset(self._pending)
        self._pending.clear()
        return reasons
