"""The tests' asyncio loop thread is memguard's own bridge (one implementation),
its trio side bounded: a coroutine that never finishes fails the test, naming
it, instead of hanging it."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from memguard.kube.bridge import AsyncioBridge
from testing.waits import WAIT_S, bounded

T = TypeVar("T")


class AsyncioThread(AsyncioBridge):
    async def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = WAIT_S) -> T:
        """Await coro on the loop from trio; fail after timeout_s (cancelling it there)."""
        name = getattr(coro, "__qualname__", repr(coro))
        what = f"{name} finished on the {self.loop_name} loop"
        return await bounded(super().run(coro), what, timeout_s)

    @property
    def loop_name(self) -> str:
        return self._name


__all__ = ["AsyncioThread"]
