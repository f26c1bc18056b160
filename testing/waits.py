"""Bounded waits: every wait in the tests ends, and says what did not happen.

A lost wake-up must fail its test within a bound, with a message naming what
never came about, not hang until pytest's timeout with none. The bounds are
generous (WAIT_S): they are not timing assertions, only the end of waiting.
Under an autojump clock they are virtual time, so a test whose scenario runs
longer than WAIT_S of virtual time gives its own bound.

    with within("memguard killing the hog"):        # a block
        report = await collect.wait_for_kind(cgroup, ReportKind.KILL_PROCESS)
        await hog.exited()
    report = await bounded(collect.wait_for_kind(cgroup, kind), "the kill report")

Both raise AssertionError("not within 60s: <what>"). Waits on another process
(which has no event to await) poll: testing.agentproc.wait_until. Code on an
asyncio loop (kubernetes-asyncio's side of a test) uses aio_bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import trio

T = TypeVar("T")

WAIT_S = 60.0


def late(what: str, timeout_s: float) -> AssertionError:
    """The failure of a wait for `what` that took longer than timeout_s."""
    return AssertionError(f"not within {timeout_s:g}s: {what}")


@contextmanager
def within(what: str, timeout_s: float = WAIT_S) -> Iterator[None]:
    """Fail with "not within <timeout_s>s: <what>" if the block takes longer.

    Only this scope's own deadline becomes the failure: a Cancelled from an
    outer scope, or an inner wait's own failure, goes through unchanged."""
    with trio.move_on_after(timeout_s) as scope:
        yield
    if scope.cancelled_caught:
        raise late(what, timeout_s)


async def bounded(awaitable: Awaitable[T], what: str, timeout_s: float = WAIT_S) -> T:
    """The result of awaitable, or "not within <timeout_s>s: <what>" after timeout_s."""
    with trio.move_on_after(timeout_s):
        return await awaitable
    raise late(what, timeout_s)


async def aio_bounded(awaitable: Awaitable[T], what: str, timeout_s: float = WAIT_S) -> T:
    """bounded() on an asyncio loop: only this deadline becomes the failure (a
    TimeoutError from inside the awaitable goes through unchanged)."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise late(what, timeout_s) from None
        raise
