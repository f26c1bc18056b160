"""Bounded waits for the Kubernetes tier: every wait says what did not happen."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

WAIT_S = 10.0


@contextmanager
def within(what: str, seconds: float = WAIT_S) -> Iterator[None]:
    """Fail the test with "<what>: not within <seconds>s" if the block takes longer."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise AssertionError(f"{what}: not within {seconds:g}s") from None
