"""One guard task per container cgroup: the guard's life around its loop.

A guard lives until its cgroup directory is gone: each time round it reads its
pod's overrides (memguard.guarding.podwatch), lets go while the pod says
memguard.io/ignore, else opens a notifier and runs its loop on it
(memguard.guarding.loop: the I/O shell around policy.step) with a background
nursery for preparing victims (memguard.guarding.preparer). A cgroup whose
memory files cannot be read yet is looked at again, backing off.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from memguard.backends.base import Backend, Notifier
from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.wake import Wake
from memguard.guarding.flusher import Flusher
from memguard.guarding.killer import Killer
from memguard.guarding.loop import Gone, Ignored, StepLoop
from memguard.guarding.pods import NoOverrides, NoPodActions, OverridesSource, PodActions
from memguard.guarding.podwatch import PodWatch
from memguard.guarding.preparer import Preparer
from memguard.policy.model import GuardSettings, MemorySnapshot
from memguard.policy.paths import ContainerRef
from memguard.policy.state import GuardState
from memguard.reports.report import Report

log = logging.getLogger(__name__)

NOT_READY_RETRY_S = 0.5


@dataclass(frozen=True)
class GuardContext:
    """What every guard shares; built once by the agent."""

    backend: Backend
    hub: InotifyHub
    settings: GuardSettings
    flusher: Flusher
    killer: Killer
    publish: Callable[[Report], None]
    # The pods' side (issue 13): per-container overrides and protection, and the
    # API server's eviction/delete; memguard.kube provides the real ones.
    overrides: OverridesSource = field(default_factory=NoOverrides)
    pod_actions: PodActions = field(default_factory=NoPodActions)


class GuardEvents(Protocol):
    """What a guard tells its supervisor."""

    def limit_known(self, guard: Guard, limit_bytes: int | None) -> None:
        """The guard is about to (re-)arm for this limit (new container or new limit)."""
        ...

    def armed_changed(self, guard: Guard) -> None: ...


class Guard:
    def __init__(
        self,
        cgroup_dir: str,
        ref: ContainerRef,
        context: GuardContext,
        events: GuardEvents,
    ) -> None:
        self.cgroup_dir = cgroup_dir
        self._events = events
        self.ref = ref
        self._ctx = context
        self._pod = PodWatch(ref, context.settings, context.overrides, self._pod_changed)
        self.ignored = False  # memguard.io/ignore: not guarded (said once)
        self._notifier: Notifier | None = None
        self._preparer = Preparer(cgroup_dir, context.killer, context.backend, self._armed_changed)
        self._steps = StepLoop(
            cgroup_dir,
            ref,
            context,
            self._pod,
            self._preparer,
            functools.partial(events.limit_known, self),
            self._armed_changed,
        )

    @property
    def armed(self) -> bool:
        """The kernel (or the fake tree) notifies this guard: the first arm is done
        (an ignored container has nothing to arm)."""
        return self._steps.registered or self.ignored

    @property
    def prepared_victims(self) -> int:
        """Victims with an open pidfd, ready for the kill (0: not in the danger zone)."""
        return self._preparer.count

    @property
    def state(self) -> GuardState:
        """What the guard remembers now (fill rate, latest usage sample, ...)."""
        return self._steps.state

    @property
    def armed_threshold_bytes(self) -> int | None:
        """The threshold being watched; None before arming or for unlimited cgroups."""
        return self._steps.registered_threshold

    # For `memguard status` (memguard.guarding.view): the last full reading and the
    # last report; kept as they come, never read for them.
    @property
    def last_snapshot(self) -> MemorySnapshot | None:
        return self._steps.last_snapshot

    @property
    def last_snapshot_at_s(self) -> float | None:
        """Trio time of last_snapshot's reading."""
        return self._steps.last_snapshot_at_s

    @property
    def last_report(self) -> Report | None:
        return self._steps.last_report

    @property
    def _settings(self) -> GuardSettings:
        """This container's (its pod's overrides applied)."""
        return self._pod.settings

    def request_graceful(self, reason: str) -> bool:
        """An outside trigger (the swap trigger) asks for the graceful path; on the
        trio thread. False when this guard cannot take it now (not armed, ignored)."""
        if self._notifier is None or not self.armed or self.ignored:
            return False
        self._steps.pressure_reason = reason
        self._notifier.bell.ring(Wake.PRESSURE)
        return True

    def _armed_changed(self) -> None:
        self._events.armed_changed(self)

    def _pod_changed(self) -> None:
        """Its pod changed (on the trio thread): the loop reads the overrides again."""
        if self._notifier is not None:
            self._notifier.bell.ring(Wake.POD)

    async def _while_ignored(self) -> None:
        """memguard.io/ignore: nothing armed, until the pod changes or the cgroup goes."""
        if not self.ignored:
            self.ignored = True
            log.info("not guarding %s: its pod says memguard.io/ignore", self.cgroup_dir)
            self._armed_changed()
        while self._pod.ignore:
            await self._pod.changed_within(self._settings.recheck_interval_s)
            if not self._ctx.backend.exists(self.cgroup_dir):
                return
            self._pod.read()
        self.ignored = False
        self._armed_changed()

    async def run(self) -> None:
        """Guard until the cgroup directory is gone.

        A directory whose memory files cannot be read yet (cgroup v2 before the
        memory controller is enabled for it, a fake tree being built) is not
        gone: the guard looks again, backing off up to the recheck interval.
        """
        self._pod.subscribe()
        try:
            await self._guard()
        finally:
            self._pod.unsubscribe()
        log.debug("guard ended: %s is gone", self.cgroup_dir)

    async def _guard(self) -> None:
        for attempt in itertools.count():
            self._pod.read()
            if self._pod.ignore:
                await self._while_ignored()
                if not self._ctx.backend.exists(self.cgroup_dir):
                    break
                continue
            if await self._guard_notified():
                self._steps.registered = False
                continue
            if not self._ctx.backend.exists(self.cgroup_dir):
                break
            delay_s = min(NOT_READY_RETRY_S * 2**attempt, self._settings.recheck_interval_s)
            log.debug(
                "%s exists but its memory files are not readable: retry in %.1fs",
                self.cgroup_dir,
                delay_s,
            )
            await trio.sleep(delay_s)

    async def _guard_notified(self) -> bool:
        """The loop on a new notifier, until the cgroup is gone (or unreadable);
        True: the pod says memguard.io/ignore."""
        self._steps.reset()  # a new notifier: armed afresh
        notifier_cm = self._ctx.backend.notifier(self.cgroup_dir, self._ctx.hub)
        ignored = False
        try:
            async with trio.open_nursery() as background:
                self._preparer.background = background
                with notifier_cm as notifier, contextlib.suppress(Gone):
                    self._notifier = notifier
                    try:
                        await self._steps.run(notifier)
                    except Ignored:
                        ignored = True
                background.cancel_scope.cancel()
        finally:
            self._notifier = None
            self._preparer.background = None
            self._preparer.drop()
        return ignored
