"""One private asyncio loop in a daemon thread, awaited from trio.

kubernetes-asyncio lives on this loop; memguard's guards live on trio. `run`
submits a coroutine with run_coroutine_threadsafe and parks the trio task (no
worker thread held) until the future is done; trio cancellation cancels the
asyncio task. An API call that stalls stalls only the task awaiting it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

T = TypeVar("T")
START_TIMEOUT_S = 10.0


class AsyncioBridge:
    def __init__(self, name: str = "memguard-asyncio") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self._name}: the loop is not running")
        return self._loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=START_TIMEOUT_S):
            raise RuntimeError(f"{self._name}: the loop did not start")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel what is left on the loop, close it and join the thread."""
        if self._thread is None:
            return
        loop, thread = self.loop, self._thread
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"{self._name}: the loop thread did not stop")
        self._thread = self._loop = None

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
            loop.run_until_complete(_drain(loop))
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except BaseException:
            coro.close()  # never awaited: close it here, not with a warning at GC
            raise

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run coro on the loop and block this (non-trio) thread for its result."""
        future = self.submit(coro)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def call_sync(self, fn: Callable[[], T], timeout_s: float = 10.0) -> T:
        """Run a plain callable on the loop thread (to touch loop-owned state)."""

        async def on_loop() -> T:
            return fn()

        return self.call(on_loop(), timeout_s)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await coro (on the loop) from trio; trio cancellation cancels it there."""
        future = self.submit(coro)
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: concurrent.futures.Future[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()


async def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and await whatever is still running, then release the loop's resources."""
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
