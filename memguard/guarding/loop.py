"""A guard's loop: the I/O shell around policy.step.

The loop: read a snapshot (None: the cgroup is gone, the guard ends); ask
policy.step what to do about the event that just happened; carry out its
effects (arm, prepare, flush, act, report, when to look again); an effect with
an outcome is followed by a fresh snapshot and the matching event; otherwise
sleep until the kernel, a limit change or the (re)check timeout wakes the guard.

The kill path reads nothing it can do without: a wake-up from the kernel is
first decided on a light snapshot - usage from one pread, the rest as last
read - and if the step says Act, the prepared victims are signalled before
anything else is read (memguard.guarding.killer); any other decision is made
again on a full snapshot. Victims are prepared in the background (a scan of
the members when armed; pidfds once usage passes the warning level), never on
the kill path (memguard.guarding.preparer). A flush runs in a worker thread
while the guard keeps listening: usage at the last-chance level acts at once
(memguard.guarding.acting).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from memguard.backends.base import Notifier
from memguard.backends.wake import Wake
from memguard.guarding.acting import Acting
from memguard.guarding.graceful import Graceful
from memguard.guarding.podwatch import PodWatch
from memguard.guarding.preparer import Preparer
from memguard.guarding.reporting import ReportNotes, build_report
from memguard.policy import effects as fx
from memguard.policy.model import GuardSettings, MemorySnapshot
from memguard.policy.paths import ContainerRef
from memguard.policy.rates import light_snapshot, samples_of
from memguard.policy.state import NOT_ARMED, GuardState
from memguard.policy.step import step
from memguard.reports.report import Report
from memguard.units import format_size

if TYPE_CHECKING:
    from memguard.guarding.guard import GuardContext

# The guard's records keep the logger name they have always had.
log = logging.getLogger("memguard.guarding.guard")

LIGHT_WAKES = frozenset({Wake.KERNEL, Wake.POLL, Wake.EVENTS, Wake.PSI})
OUTSIDE_WAKES = frozenset({Wake.LIMIT, Wake.POD, Wake.PRESSURE})  # always a full reading
UNWATCHED_RECHECK_S = 1.0  # no inotify watch on the cgroup (watch limit): re-read this often
RECHECK_JITTER = 0.1  # +-10 %, so 1,000 guards do not re-check in lockstep


class Gone(Exception):
    """The cgroup vanished mid-step: the guard ends quietly."""


class Ignored(Exception):
    """The pod says memguard.io/ignore: the guard lets go until the pod changes."""


class StepLoop:
    """One guard's loop, and what it remembers (for its steps, its reports, `memguard status`)."""

    def __init__(
        self,
        cgroup_dir: str,
        ref: ContainerRef,
        context: GuardContext,
        pod: PodWatch,
        preparer: Preparer,
        limit_known: Callable[[int | None], None],
        armed_changed: Callable[[], None],
    ) -> None:
        self._cgroup_dir = cgroup_dir
        self._ref = ref
        self._ctx = context
        self._pod = pod
        self._preparer = preparer
        self._limit_known = limit_known  # about to (re-)arm for this limit
        self._armed_changed = armed_changed
        self.state = GuardState()
        self.registered = False  # the notifier is armed (the kernel will tell)
        self.registered_threshold: int | None = None
        self.pressure_reason: str | None = None  # request_graceful's, until the loop takes it
        self._notes = ReportNotes()
        self._acting = Acting(
            cgroup_dir, context.flusher, context.killer, context.backend, preparer, self._notes
        )
        self._graceful = Graceful(
            cgroup_dir,
            ref,
            context.killer,
            context.backend,
            context.pod_actions,
            preparer,
            self._notes,
        )
        # For `memguard status` (memguard.guarding.view): the last full reading and the
        # last report; kept as they come, never read for them.
        self.last_snapshot: MemorySnapshot | None = None
        self.last_snapshot_at_s: float | None = None  # trio time of last_snapshot's reading
        self.last_report: Report | None = None

    @property
    def _settings(self) -> GuardSettings:
        return self._pod.settings

    def reset(self) -> None:
        """A new notifier: armed afresh."""
        self.state = GuardState()
        self.registered = False

    def _snapshot(self) -> MemorySnapshot:
        self._notes.read_at = time.perf_counter()
        snapshot = self._ctx.backend.snapshot(self._cgroup_dir)
        if snapshot is None:
            raise Gone
        self.last_snapshot, self.last_snapshot_at_s = snapshot, trio.current_time()
        return snapshot

    async def run(self, notifier: Notifier) -> None:
        """Step until the cgroup is gone (Gone) or its pod says ignore (Ignored)."""
        event: fx.Event = fx.Woke()
        snapshot = self._snapshot()
        light = False  # usage read alone (the kill path); the rest as last read
        vanished = False  # gone right after an action: only its report is left to make
        while True:
            outcome = step(self.state, snapshot, event, self._settings, trio.current_time())
            if light and not any(isinstance(e, fx.Act) for e in outcome.effects):
                # not a kill: decide on all of it (the reading's rate sample stays)
                self.state = samples_of(self.state, outcome.state)
                event, snapshot, light = fx.Woke(), self._snapshot(), False
                continue
            self.state = outcome.state
            next_event, look_at_s = await self._carry_out_all(
                outcome.effects, snapshot, notifier, vanished
            )
            if vanished:
                raise Gone
            if next_event is None:
                next_event = await self._idle(notifier, look_at_s)
                if self._notes.woke_by & LIGHT_WAKES and not self._notes.woke_by & OUTSIDE_WAKES:
                    usage = notifier.usage_bytes()
                    if usage is None:
                        raise Gone
                    snapshot = light_snapshot(snapshot, usage, self.state)
                    event, light = fx.Woke(light=True), True
                    continue
            event, light = next_event, False
            snapshot, vanished = self._reread(snapshot, event)

    async def _carry_out_all(
        self,
        effects: Sequence[fx.Effect],
        snapshot: MemorySnapshot,
        notifier: Notifier,
        vanished: bool,
    ) -> tuple[fx.Event | None, float | None]:
        """The step's effects (only its reports when the cgroup vanished); the event
        the last outcome makes (None: none) and when to look again (None: the recheck)."""
        next_event: fx.Event | None = None
        look_at_s: float | None = None
        for effect in effects:
            if isinstance(effect, fx.Publish):
                self._publish(effect)
            elif vanished:
                continue
            elif isinstance(effect, fx.LookAgain):
                look_at_s = effect.at_s
            else:
                next_event = await self._carry_out(effect, snapshot, notifier)
        return next_event, look_at_s

    async def _idle(self, notifier: Notifier, look_at_s: float | None) -> fx.Event:
        """Nothing under way: sleep until woken; the event the wake-up makes."""
        self._preparer.refresh(self.state.warned, self.registered)
        await self._sleep(notifier, look_at_s)
        next_event: fx.Event = fx.Woke()
        woke_by = self._notes.woke_by
        if Wake.PRESSURE in woke_by and self.pressure_reason is not None:
            next_event = fx.Pressure(self.pressure_reason)
            self.pressure_reason = None
        if Wake.POD in woke_by and self._pod.read():
            if self._pod.ignore:
                raise Ignored
            # new levels, policy or protection: armed afresh (levels recomputed)
            self.state = replace(self.state, armed_threshold=NOT_ARMED)
        return next_event

    def _reread(self, snapshot: MemorySnapshot, event: fx.Event) -> tuple[MemorySnapshot, bool]:
        """A full reading after an outcome; True: the cgroup vanished right after an
        action or a graceful try (its report is made on the last reading)."""
        self._notes.read_at = time.perf_counter()
        fresh = self._ctx.backend.snapshot(self._cgroup_dir)
        if fresh is None and not isinstance(event, fx.Acted | fx.Terminated):
            raise Gone
        vanished = fresh is None
        snapshot = fresh or snapshot
        self.last_snapshot = snapshot
        if fresh is not None:
            self.last_snapshot_at_s = trio.current_time()
        return snapshot, vanished

    async def _sleep(self, notifier: Notifier, look_at_s: float | None) -> None:
        now_s = trio.current_time()
        if look_at_s is None:
            jitter = random.uniform(1 - RECHECK_JITTER, 1 + RECHECK_JITTER)
            look_at_s = now_s + self._settings.recheck_interval_s * jitter
        if not notifier.limit_watched:
            look_at_s = min(look_at_s, now_s + UNWATCHED_RECHECK_S)
        self._notes.woke_by = await notifier.wait(look_at_s - now_s)

    async def _carry_out(
        self, effect: fx.Effect, snapshot: MemorySnapshot, notifier: Notifier
    ) -> fx.Event | None:
        """Do what an effect says; the event its outcome makes (None: none)."""
        if isinstance(effect, fx.Arm):
            await self._arm(effect, snapshot, notifier)
            return fx.Armed()
        if isinstance(effect, fx.Flush):
            return await self._acting.flush_listening(effect, notifier, self.state, self._settings)
        if isinstance(effect, fx.Prepare):
            self._preparer.start(with_pidfds=True)
            return None
        if isinstance(effect, fx.Unprepare):
            self._preparer.close()
            return None
        if isinstance(effect, fx.CacheFlush):
            flushed = await self._ctx.flusher.flush(self._cgroup_dir, effect.request_bytes)
            return fx.CacheFlushed(flushed.duration_s)
        if isinstance(effect, fx.Act):
            return await self._act(effect, notifier)
        if isinstance(effect, fx.Terminate):
            return await self._graceful.terminate(effect, notifier, self._settings.dry_run)
        if isinstance(effect, fx.NoteUnlimited):
            limit = self._settings.cache_flush_above
            log.info(
                "%s has no memory limit: --flush-cache-above %s does not apply to it",
                self._cgroup_dir,
                limit.describe() if limit else "",
            )
        return None

    async def _arm(self, effect: fx.Arm, snapshot: MemorySnapshot, notifier: Notifier) -> None:
        if not effect.after_action:
            # Before arming: memory QoS may own memory.high, which the v2 tripwire leaves alone.
            self._limit_known(snapshot.limit_bytes)
        armed = await notifier.arm(
            effect.threshold_bytes,
            effect.warning_bytes,
            effect.last_chance_bytes,
            effect.soft_bytes,
        )
        if not armed:
            raise Gone
        self.registered, self.registered_threshold = True, effect.threshold_bytes
        if self._preparer.prepared is None:
            self._preparer.start(with_pidfds=False)
        if not effect.after_action:
            log.info(
                "guarding %s: limit %s, threshold %s",
                self._cgroup_dir,
                format_size(snapshot.limit_bytes),
                format_size(effect.threshold_bytes),
            )
            self._armed_changed()

    async def _act(self, effect: fx.Act, notifier: Notifier) -> fx.Acted:
        acted = await self._acting.act(effect, notifier)
        if acted is None:
            raise Gone
        return acted

    def _publish(self, effect: fx.Publish) -> None:
        report = build_report(
            effect,
            self._notes,
            self._cgroup_dir,
            self._ref,
            self.registered_threshold,
            self._settings,
        )
        self.last_report = report
        self._ctx.publish(report)
