"""Starts one guard task per container cgroup and cancels it when the cgroup goes.

Guards run in the supervisor's own nursery (run()), each inside its own cancel
scope. Listeners (memory QoS) hear of each container's lifecycle: seen with its
limit before its guard arms (again when the limit changes), gone when its guard
ends; a listener that raises fails alone. `changes` moves whenever a guard
starts, arms, fails or ends (the observation API: memguard.components.Changes). A guard
that fails (an unexpected kernel error, a bug) is logged, counted (component
"guard") and restarted after a backoff: one bad cgroup never takes the agent
down.

File descriptors are budgeted (FdBudget): each guard holds a few (v1: one
eventfd; v2: memory.current, memory.pressure and an epoll), and guards are
started only while their fds fit under RLIMIT_NOFILE with a reserve left for
the short-lived ones every guard needs to read, flush and kill. Containers
beyond the budget wait, in the order they were found (reported: the agent is
not ready, the log says so once, the metrics count them), and are guarded as
soon as a guard ends or the limit is raised. A guard that still runs out of
fds (EMFILE/ENFILE) waits and retries without a traceback per guard.
"""

from __future__ import annotations

import errno
import logging
import resource
from collections.abc import Sequence
from typing import Protocol

import trio

from memguard.components import RESTART_BACKOFF_S, Changes, ComponentStatus, innermost
from memguard.guarding.guard import Guard, GuardContext
from memguard.policy.paths import ContainerRef

log = logging.getLogger(__name__)

COMPONENT = "guard"
FDS_COMPONENT = "file-descriptors"
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})


def out_of_fds(error: BaseException) -> bool:
    return getattr(innermost(error), "errno", None) in _OUT_OF_FDS


class ContainerListener(Protocol):
    """Told of each guarded container's lifecycle (memory QoS is one)."""

    component: str  # its name in logs and memguard_component_failures_total

    def container_seen(self, cgroup_dir: str, ref: ContainerRef, limit_bytes: int | None) -> None:
        """Its guard is about to arm: the container is new or its limit changed."""
        ...

    def container_gone(self, cgroup_dir: str) -> None: ...


class FdBudget:
    """How many guards fit under RLIMIT_NOFILE (read anew each time: an
    operator may raise it with prlimit while the agent runs)."""

    def __init__(self, fds_per_guard: int, reserved_fds: int) -> None:
        self.fds_per_guard = fds_per_guard
        self.reserved_fds = reserved_fds

    def slots(self) -> int | None:
        """Guards that fit; None when guards hold no fds or there is no limit."""
        if self.fds_per_guard <= 0:
            return None
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return None
        return max(0, (soft - self.reserved_fds) // self.fds_per_guard)


class GuardSupervisor:
    def __init__(
        self,
        context: GuardContext,
        status: ComponentStatus | None = None,
        budget: FdBudget | None = None,
        listeners: Sequence[ContainerListener] = (),
    ) -> None:
        self._nursery: trio.Nursery | None = None
        self._context = context
        self._status = status or ComponentStatus()
        self._status.register(COMPONENT)
        self._budget = budget or FdBudget(0, 0)
        self._listeners = tuple(listeners)
        for listener in self._listeners:
            self._status.register(listener.component)
        self._scopes: dict[str, trio.CancelScope] = {}
        self.waiting: dict[str, ContainerRef] = {}  # found, not guarded: no fds left
        self.guards: dict[str, Guard] = {}  # the running guard of each cgroup
        self.changes = Changes()
        self.failures = 0
        self._running = 0
        # Guard tasks launched and not finished: a stopped guard holds its fds
        # until its task ends, so the budget counts these, not the scopes.
        self._holding = 0

    async def act_gracefully(self, cgroup_dir: str, reason: str) -> bool:
        """The graceful path on cgroup_dir's guard (the swap trigger's act): False
        when no guard of it can take it now."""
        guard = self.guards.get(cgroup_dir)
        return guard is not None and guard.request_graceful(reason)

    @property
    def guarded(self) -> frozenset[str]:
        return frozenset(self._scopes)

    @property
    def armed(self) -> int:
        """Guards whose notification is armed."""
        return sum(1 for guard in list(self.guards.values()) if guard.armed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the guards run in, until cancelled (their scopes with it)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- what guards tell (memguard.guarding.guard.GuardEvents) -------------------------

    def limit_known(self, guard: Guard, limit_bytes: int | None) -> None:
        for listener in self._listeners:
            try:
                listener.container_seen(guard.cgroup_dir, guard.ref, limit_bytes)
            except Exception as error:
                self._status.failed(
                    listener.component, error, f"{guard.cgroup_dir} guarded without it"
                )

    def armed_changed(self, guard: Guard) -> None:
        self._notify()

    def _tell_gone(self, cgroup_dir: str) -> None:
        for listener in self._listeners:
            try:
                listener.container_gone(cgroup_dir)
            except Exception as error:
                self._status.failed(listener.component, error, "went on without it")

    def start(self, cgroup_dir: str, ref: ContainerRef) -> None:
        """Guard cgroup_dir unless it is guarded already (or must wait for fds)."""
        if cgroup_dir in self._scopes:
            return
        slots = self._budget.slots()
        if slots is not None and self._holding >= slots:
            if cgroup_dir not in self.waiting:
                self.waiting[cgroup_dir] = ref
                self._note_waiting(slots)
            return
        self.waiting.pop(cgroup_dir, None)
        self._launch(cgroup_dir, ref)

    def _launch(self, cgroup_dir: str, ref: ContainerRef) -> None:
        if self._nursery is None:
            raise RuntimeError("GuardSupervisor.start() before run()")
        scope = trio.CancelScope()
        self._scopes[cgroup_dir] = scope
        self._holding += 1
        self._nursery.start_soon(self._run, cgroup_dir, ref, scope, name=f"guard {cgroup_dir}")
        self._notify()

    def _note_waiting(self, slots: int) -> None:
        if FDS_COMPONENT not in self._status.degraded:
            log.warning(
                "out of file descriptors: guarding %d containers, the others wait "
                "(RLIMIT_NOFILE allows %d guards here; raise it)",
                len(self._scopes),
                slots,
            )
        self._status.degrade(
            FDS_COMPONENT, f"{len(self.waiting)} containers wait for file descriptors"
        )

    def _admit_waiting(self) -> None:
        slots = self._budget.slots()
        while self.waiting and (slots is None or self._holding < slots):
            cgroup_dir = next(iter(self.waiting))
            self._launch(cgroup_dir, self.waiting.pop(cgroup_dir))
        if self.waiting:
            self._status.degrade(
                FDS_COMPONENT, f"{len(self.waiting)} containers wait for file descriptors"
            )
        elif self._status.degraded.pop(FDS_COMPONENT, None) is not None:
            log.info("file descriptors suffice again: every container found is guarded")

    def stop(self, cgroup_dir: str) -> None:
        self.waiting.pop(cgroup_dir, None)
        scope = self._scopes.pop(cgroup_dir, None)
        self.guards.pop(cgroup_dir, None)
        if scope is not None:
            scope.cancel()
            self._notify()

    @property
    def running(self) -> int:
        """Guard tasks alive right now (a stopped guard may still be finishing)."""
        return self._running

    def _notify(self) -> None:
        self.changes.notify()

    def _failed(self, cgroup_dir: str, error: Exception, backoff_s: float) -> None:
        self.failures += 1
        if out_of_fds(error):
            self._status.failures[COMPONENT] += 1
            if self._status.degraded.get(FDS_COMPONENT) is None:
                log.warning("out of file descriptors (%s): guards retry", error)
            self._status.degrade(FDS_COMPONENT, "guards ran out of file descriptors")
            return
        self._status.failed(
            COMPONENT, error, f"restarting the guard of {cgroup_dir} in {backoff_s:.0f}s"
        )

    async def _run(self, cgroup_dir: str, ref: ContainerRef, scope: trio.CancelScope) -> None:
        self._running += 1
        self._notify()
        try:
            with scope:
                attempt = 0
                while True:
                    guard = Guard(cgroup_dir, ref, self._context, events=self)
                    self.guards[cgroup_dir] = guard
                    try:
                        await guard.run()
                        return
                    except Exception as error:
                        backoff_s = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
                        self._failed(cgroup_dir, error, backoff_s)
                        self._notify()
                        attempt += 1
                        await trio.sleep(backoff_s)
        finally:
            self._running -= 1
            self._holding -= 1
            if self._scopes.get(cgroup_dir) is scope:
                del self._scopes[cgroup_dir]
                self.guards.pop(cgroup_dir, None)
                self._tell_gone(cgroup_dir)
            self._admit_waiting()
            self._notify()
