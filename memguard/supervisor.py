"""Starts one guard task per container cgroup and cancels it when the cgroup goes.

Guards run in the agent's nursery, each inside its own cancel scope. A guard
that fails (an unexpected kernel error, a bug) is logged with its traceback
and restarted after a backoff: one bad cgroup never takes the agent down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from memguard.guard import Guard, GuardContext
from memguard.paths import ContainerRef

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class GuardSupervisor:
    def __init__(self, nursery: trio.Nursery, context: GuardContext) -> None:
        self._nursery = nursery
        self._context = context
        self._scopes: dict[str, trio.CancelScope] = {}
        self.guards: dict[str, Guard] = {}  # the running guard of each cgroup
        self._changed = trio.Event()
        self.failures = 0
        self._running = 0

    @property
    def guarded(self) -> frozenset[str]:
        return frozenset(self._scopes)

    def start(self, cgroup_dir: str, ref: ContainerRef) -> None:
        """Guard cgroup_dir unless it is guarded already."""
        if cgroup_dir in self._scopes:
            return
        scope = trio.CancelScope()
        self._scopes[cgroup_dir] = scope
        self._nursery.start_soon(self._run, cgroup_dir, ref, scope, name=f"guard {cgroup_dir}")
        self._notify()

    def stop(self, cgroup_dir: str) -> None:
        scope = self._scopes.pop(cgroup_dir, None)
        self.guards.pop(cgroup_dir, None)
        if scope is not None:
            scope.cancel()
            self._notify()

    def stop_all(self) -> None:
        for cgroup_dir in list(self._scopes):
            self.stop(cgroup_dir)

    @property
    def running(self) -> int:
        """Guard tasks alive right now (a stopped guard may still be finishing)."""
        return self._running

    async def wait_for(self, predicate: Callable[[GuardSupervisor], bool]) -> None:
        """Park until predicate(self) holds (tests, benchmarks, readiness)."""
        while not predicate(self):
            await self._changed.wait()

    async def wait_until(self, count: int) -> None:
        """Park until exactly count cgroups are guarded by exactly count live tasks."""
        await self.wait_for(lambda s: len(s.guarded) == count and s.running == count)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _run(self, cgroup_dir: str, ref: ContainerRef, scope: trio.CancelScope) -> None:
        self._running += 1
        self._notify()
        try:
            with scope:
                attempt = 0
                while True:
                    guard = Guard(cgroup_dir, ref, self._context, on_change=self._notify)
                    self.guards[cgroup_dir] = guard
                    try:
                        await guard.run()
                        return
                    except Exception:
                        self.failures += 1
                        self._notify()
                        backoff_s = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
                        log.exception(
                            "guard for %s failed; restarting in %.0fs", cgroup_dir, backoff_s
                        )
                        attempt += 1
                        await trio.sleep(backoff_s)
        finally:
            self._running -= 1
            if self._scopes.get(cgroup_dir) is scope:
                del self._scopes[cgroup_dir]
                self.guards.pop(cgroup_dir, None)
                if self._context.memory_qos is not None:
                    self._context.memory_qos.container_gone(cgroup_dir)
            self._notify()
