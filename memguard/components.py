"""Error boundaries: every service beside the guards fails alone and comes back.

A component (the HTTP endpoint, discovery, the inotify hub, the pod cache,
memory QoS, the v2 poller, the report bus) runs under `supervise`. An
exception ends only that component: it is logged (with its traceback the
first time the component fails with that error type, one line after that),
counted in `ComponentStatus.failures` (memguard_component_failures_total),
and the component is started again after a backoff (1 s doubling to 30 s;
back to 1 s once it ran STABLE_S without failing). While it waits,
`ComponentStatus.down` says why, for /readyz and the metrics.

Only FatalError (guarding has become impossible everywhere) passes through
and stops the agent. Cancellation passes through as always.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from memguard.errors import FatalError

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_S = 60.0  # a component that ran this long starts its backoff from the beginning
MAX_LOGGED_CAUSES = 256  # (component, error type) pairs whose traceback was logged

Service = Callable[..., Awaitable[Any]]


def innermost(error: BaseException) -> BaseException:
    """The single cause inside nursery exception groups (the group itself if several)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def describe(error: BaseException) -> str:
    """'Type: message' of the innermost single cause (nursery groups unwrapped)."""
    error = innermost(error)
    text = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass
class ComponentStatus:
    """Failures, outages and degraded states of the agent's components (read-only
    for everyone but the components themselves)."""

    failures: Counter[str] = field(default_factory=Counter)
    down: dict[str, str] = field(default_factory=dict)  # component -> why, while restarting
    degraded: dict[str, str] = field(default_factory=dict)  # component -> what does not work
    _tracebacks: set[tuple[str, str]] = field(default_factory=set)

    def register(self, component: str) -> None:
        """Known from the start, so its failure counter exports 0."""
        self.failures.setdefault(component, 0)

    def failed(self, component: str, error: BaseException, action: str) -> None:
        """Count and log one failure; action says what happens next."""
        self.failures[component] += 1
        cause = describe(error)
        key = (component, type(innermost(error)).__name__)
        first = key not in self._tracebacks and len(self._tracebacks) < MAX_LOGGED_CAUSES
        if first:
            self._tracebacks.add(key)
        log.error(
            "%s failed (%s); %s",
            component,
            cause,
            action,
            exc_info=error if first else None,
        )

    def degrade(self, component: str, reason: str) -> None:
        if self.degraded.get(component) != reason:
            self.degraded[component] = reason

    def recover(self, component: str) -> None:
        self.degraded.pop(component, None)


def fatal_in(error: BaseException) -> FatalError | None:
    if isinstance(error, FatalError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = fatal_in(inner)
            if found is not None:
                return found
    return None


async def supervise(
    component: str,
    service: Service,
    status: ComponentStatus,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `await nursery.start(service)` again and again until it returns.

    task_status.started() is called once: when the first run has started, or
    when it failed before starting (the agent does not wait on a broken part).
    """
    status.register(component)
    attempt = 0
    started = False
    while True:
        began_s = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(service)
                status.down.pop(component, None)
                if not started:
                    started = True
                    task_status.started()
            return
        except Exception as error:
            fatal = fatal_in(error)
            if fatal is not None:
                raise fatal from None
            if trio.current_time() - began_s >= STABLE_S:
                attempt = 0
            delay_s = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
            attempt += 1
            status.down[component] = describe(error)
            status.failed(component, error, f"restarting in {delay_s:.0f}s")
        if not started:
            started = True
            task_status.started()
        await trio.sleep(delay_s)


class Changes:
    """The observation API: a version that moves whenever its owner's state changes.

    Owners (the guard supervisor, the report bus, memory QoS) call notify();
    anyone who wants to see a state come about - `memguard status`, the tests -
    checks it and, if it is not there yet, awaits the next change:

        while not condition():
            await changes.wait_after(seen)  # seen: the version the check used
    """

    def __init__(self) -> None:
        self.version = 0
        self._moved = trio.Event()

    def notify(self) -> None:
        self.version += 1
        self._moved.set()
        self._moved = trio.Event()

    async def wait_after(self, version: int) -> None:
        """Park until the version is past `version` (at once if it already is)."""
        while self.version <= version:
            await self._moved.wait()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Park until condition() holds (checked now and after every change)."""
        while True:
            seen = self.version
            if condition():
                return
            await self.wait_after(seen)
