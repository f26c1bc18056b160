"""One guard task per container cgroup: the I/O shell around policy.step.

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
the kill path. A flush runs in a worker thread while the guard keeps
listening: usage at the last-chance level acts at once.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import trio

from memguard.backends.base import Backend, Notifier
from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.wake import NOTIFICATIONS, Wake
from memguard.guarding.actions import Flusher
from memguard.guarding.killer import Killer, KillOutcome, Prepared
from memguard.guarding.pods import (
    NoOverrides,
    NoPodActions,
    OverridesSource,
    PodActions,
    PodOutcome,
    PodResult,
)
from memguard.kernel.pidfd import Process
from memguard.policy import effects as fx
from memguard.policy.effective import effective_settings
from memguard.policy.model import GracefulVia, GuardSettings, MemorySnapshot, Policy
from memguard.policy.overrides import ContainerOverrides
from memguard.policy.paths import ContainerRef
from memguard.policy.rates import light_snapshot, samples_of
from memguard.policy.state import NOT_ARMED, GuardState
from memguard.policy.step import step
from memguard.policy.table import last_chance_reason
from memguard.reports.report import Report, ReportKind, Victim
from memguard.units import format_size

log = logging.getLogger(__name__)

CONTAINER_KILL_BOUND_S = 2.0
PREPARED_MAX_AGE_S = 0.5  # warned: victims older than this are prepared again
SCAN_MAX_AGE_S = 30.0  # calm: the members and the protected ones, this often
LIGHT_WAKES = frozenset({Wake.KERNEL, Wake.POLL, Wake.EVENTS, Wake.PSI})
NOT_READY_RETRY_S = 0.5
UNWATCHED_RECHECK_S = 1.0  # no inotify watch on the cgroup (watch limit): re-read this often
RECHECK_JITTER = 0.1  # +-10 %, so 1,000 guards do not re-check in lockstep
POD_ANSWER_WAIT_S = 5.0  # PodActions' own bound on one request
# After a graceful SIGTERM (or eviction) the guard also re-reads this often: the
# kernel tells of crossings, not of a cgroup emptying with its page cache charged.
WATCH_POLL_S = 0.02
POD_RETRY_S = 1.0  # an eviction refused (429: a PodDisruptionBudget) is asked again


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


class _Gone(Exception):
    """The cgroup vanished mid-step: the guard ends quietly."""


class _Ignored(Exception):
    """The pod says memguard.io/ignore: the guard lets go until the pod changes."""


@dataclass
class _PodCall:
    """An eviction or delete under way (a task of the graceful try): its last answer."""

    result: PodResult | None = None
    tries: int = 0
    final: bool = False  # no more tries (anything but a refusal)
    answered: trio.Event = field(default_factory=trio.Event)  # the first answer came


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
        self._settings = context.settings  # this container's (its pod's overrides applied)
        self._overrides: ContainerOverrides | None = None
        self._pod_changed = trio.Event()
        self.ignored = False  # memguard.io/ignore: not guarded (said once)
        self._pressure_reason: str | None = None  # request_graceful's, until the loop takes it
        self._state = GuardState()
        self._woke_by: frozenset[Wake] = frozenset({Wake.TIMEOUT})
        self._kill: KillOutcome | None = None  # the last action's outcome, for its report
        self._latency_s: float | None = None
        self._registered = False  # the notifier is armed (the kernel will tell)
        self._registered_threshold: int | None = None
        self._prepared: Prepared | None = None  # victims ready for the kill (killer.py)
        self._preparing = False
        self._background: trio.Nursery | None = None
        self._notifier: Notifier | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._read_at: float | None = None  # perf_counter() of the last reading of usage
        # For `memguard status` (memguard.guarding.view): the last full reading and the
        # last report; kept as they come, never read for them.
        self.last_snapshot: MemorySnapshot | None = None
        self.last_snapshot_at_s: float | None = None  # trio time of last_snapshot's reading
        self.last_report: Report | None = None

    @property
    def armed(self) -> bool:
        """The kernel (or the fake tree) notifies this guard: the first arm is done
        (an ignored container has nothing to arm)."""
        return self._registered or self.ignored

    def _read_overrides(self) -> bool:
        """This container's settings from its pod's overrides; True when they changed."""
        overrides = self._ctx.overrides.overrides(self.ref)
        if overrides == self._overrides:
            return False
        self._overrides = overrides
        self._settings = effective_settings(self._ctx.settings, overrides)
        return True

    def _on_pod_change(self, pod_uid: str | None) -> None:
        """The pod side says a pod changed (any thread): wake this guard if it is ours."""
        if pod_uid is not None and pod_uid != self.ref.pod_uid:
            return
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._pod_changed_now)

    def request_graceful(self, reason: str) -> bool:
        """An outside trigger (the swap trigger) asks for the graceful path; on the
        trio thread. False when this guard cannot take it now (not armed, ignored)."""
        if self._notifier is None or not self.armed or self.ignored:
            return False
        self._pressure_reason = reason
        self._notifier.bell.ring(Wake.PRESSURE)
        return True

    def _pod_changed_now(self) -> None:
        self._pod_changed.set()
        if self._notifier is not None:
            self._notifier.bell.ring(Wake.POD)

    async def _while_ignored(self) -> None:
        """memguard.io/ignore: nothing armed, until the pod changes or the cgroup goes."""
        if not self.ignored:
            self.ignored = True
            log.info("not guarding %s: its pod says memguard.io/ignore", self.cgroup_dir)
            self._events.armed_changed(self)
        while self._overrides is not None and self._overrides.ignore:
            self._pod_changed = trio.Event()
            with trio.move_on_after(self._settings.recheck_interval_s):
                await self._pod_changed.wait()
            if not self._ctx.backend.exists(self.cgroup_dir):
                return
            self._read_overrides()
        self.ignored = False
        self._events.armed_changed(self)

    @property
    def prepared_victims(self) -> int:
        """Victims with an open pidfd, ready for the kill (0: not in the danger zone)."""
        return len(self._prepared.victims) if self._prepared is not None else 0

    @property
    def state(self) -> GuardState:
        """What the guard remembers now (fill rate, latest usage sample, ...)."""
        return self._state

    @property
    def armed_threshold_bytes(self) -> int | None:
        """The threshold being watched; None before arming or for unlimited cgroups."""
        return self._registered_threshold

    async def run(self) -> None:
        """Guard until the cgroup directory is gone.

        A directory whose memory files cannot be read yet (cgroup v2 before the
        memory controller is enabled for it, a fake tree being built) is not
        gone: the guard looks again, backing off up to the recheck interval.
        """
        self._token = trio.lowlevel.current_trio_token()
        self._ctx.overrides.subscribe(self._on_pod_change)
        try:
            await self._guard()
        finally:
            self._ctx.overrides.unsubscribe(self._on_pod_change)
        log.debug("guard ended: %s is gone", self.cgroup_dir)

    async def _guard(self) -> None:
        for attempt in itertools.count():
            self._read_overrides()
            if self._overrides is not None and self._overrides.ignore:
                await self._while_ignored()
                if not self._ctx.backend.exists(self.cgroup_dir):
                    break
                continue
            self._state = GuardState()  # a new notifier: armed afresh
            self._registered = False
            notifier_cm = self._ctx.backend.notifier(self.cgroup_dir, self._ctx.hub)
            ignored = False
            try:
                async with trio.open_nursery() as background:
                    self._background = background
                    with notifier_cm as notifier, contextlib.suppress(_Gone):
                        self._notifier = notifier
                        try:
                            await self._loop(notifier)
                        except _Ignored:
                            ignored = True
                    background.cancel_scope.cancel()
            finally:
                self._notifier = None
                self._background = None
                self._drop_prepared()
            if ignored:
                self._registered = False
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

    def _snapshot(self) -> MemorySnapshot:
        self._read_at = time.perf_counter()
        snapshot = self._ctx.backend.snapshot(self.cgroup_dir)
        if snapshot is None:
            raise _Gone
        self.last_snapshot, self.last_snapshot_at_s = snapshot, trio.current_time()
        return snapshot

    async def _loop(self, notifier: Notifier) -> None:
        event: fx.Event = fx.Woke()
        snapshot = self._snapshot()
        light = False  # usage read alone (the kill path); the rest as last read
        vanished = False  # gone right after an action: only its report is left to make
        while True:
            outcome = step(self._state, snapshot, event, self._settings, trio.current_time())
            if light and not any(isinstance(e, fx.Act) for e in outcome.effects):
                # not a kill: decide on all of it (the reading's rate sample stays)
                self._state = samples_of(self._state, outcome.state)
                event, snapshot, light = fx.Woke(), self._snapshot(), False
                continue
            self._state = outcome.state
            next_event: fx.Event | None = None
            look_at_s: float | None = None
            for effect in outcome.effects:
                if isinstance(effect, fx.Publish):
                    self._publish(effect)
                elif vanished:
                    continue
                elif isinstance(effect, fx.LookAgain):
                    look_at_s = effect.at_s
                else:
                    next_event = await self._carry_out(effect, snapshot, notifier)
            if vanished:
                raise _Gone
            if next_event is None:
                self._refresh_prepared()
                await self._sleep(notifier, look_at_s)
                next_event = fx.Woke()
                if Wake.PRESSURE in self._woke_by and self._pressure_reason is not None:
                    next_event = fx.Pressure(self._pressure_reason)
                    self._pressure_reason = None
                if Wake.POD in self._woke_by and self._read_overrides():
                    if self._overrides is not None and self._overrides.ignore:
                        raise _Ignored
                    # new levels, policy or protection: armed afresh (levels recomputed)
                    self._state = replace(self._state, armed_threshold=NOT_ARMED)
                outside = {Wake.LIMIT, Wake.POD, Wake.PRESSURE}
                if self._woke_by & LIGHT_WAKES and not self._woke_by & outside:
                    usage = notifier.usage_bytes()
                    if usage is None:
                        raise _Gone
                    snapshot = light_snapshot(snapshot, usage)
                    event, light = fx.Woke(light=True), True
                    continue
            event, light = next_event, False
            self._read_at = time.perf_counter()
            fresh = self._ctx.backend.snapshot(self.cgroup_dir)
            if fresh is None and not isinstance(event, fx.Acted | fx.Terminated):
                raise _Gone
            vanished = fresh is None
            snapshot = fresh or snapshot
            self.last_snapshot = snapshot
            if fresh is not None:
                self.last_snapshot_at_s = trio.current_time()

    async def _sleep(self, notifier: Notifier, look_at_s: float | None) -> None:
        now_s = trio.current_time()
        if look_at_s is None:
            jitter = random.uniform(1 - RECHECK_JITTER, 1 + RECHECK_JITTER)
            look_at_s = now_s + self._settings.recheck_interval_s * jitter
        if not notifier.limit_watched:
            look_at_s = min(look_at_s, now_s + UNWATCHED_RECHECK_S)
        self._woke_by = await notifier.wait(look_at_s - now_s)

    async def _carry_out(
        self, effect: fx.Effect, snapshot: MemorySnapshot, notifier: Notifier
    ) -> fx.Event | None:
        """Do what an effect says; the event its outcome makes (None: none)."""
        if isinstance(effect, fx.Arm):
            await self._arm(effect, snapshot, notifier)
            return fx.Armed()
        if isinstance(effect, fx.Flush):
            return await self._flush_listening(effect, notifier)
        if isinstance(effect, fx.Prepare):
            self._start_preparing(with_pidfds=True)
            return None
        if isinstance(effect, fx.Unprepare):
            if self._prepared is not None:
                self._prepared.close()
            return None
        if isinstance(effect, fx.CacheFlush):
            flushed = await self._ctx.flusher.flush(self.cgroup_dir, effect.request_bytes)
            return fx.CacheFlushed(flushed.duration_s)
        if isinstance(effect, fx.Act):
            return await self._act(effect, notifier)
        if isinstance(effect, fx.Terminate):
            return await self._terminate(effect, notifier)
        if isinstance(effect, fx.NoteUnlimited):
            limit = self._settings.cache_flush_above
            log.info(
                "%s has no memory limit: --flush-cache-above %s does not apply to it",
                self.cgroup_dir,
                limit.describe() if limit else "",
            )
        return None

    async def _arm(self, effect: fx.Arm, snapshot: MemorySnapshot, notifier: Notifier) -> None:
        if not effect.after_action:
            # Before arming: memory QoS may own memory.high, which the v2 tripwire leaves alone.
            self._events.limit_known(self, snapshot.limit_bytes)
        armed = await notifier.arm(
            effect.threshold_bytes,
            effect.warning_bytes,
            effect.last_chance_bytes,
            effect.soft_bytes,
        )
        if not armed:
            raise _Gone
        self._registered, self._registered_threshold = True, effect.threshold_bytes
        if self._prepared is None:
            self._start_preparing(with_pidfds=False)
        if not effect.after_action:
            log.info(
                "guarding %s: limit %s, threshold %s",
                self.cgroup_dir,
                format_size(snapshot.limit_bytes),
                format_size(effect.threshold_bytes),
            )
            self._events.armed_changed(self)

    async def _flush_listening(self, effect: fx.Flush, notifier: Notifier) -> fx.Event:
        """Flush in a worker thread; usage at the last-chance level meanwhile ends
        the wait (the flush goes on in its thread) and the guard acts at once."""
        last_chance = effect.last_chance_bytes
        outcome: list[fx.Event] = []
        async with trio.open_nursery() as nursery:

            async def flush() -> None:
                flushed = await self._ctx.flusher.flush(self.cgroup_dir, effect.request_bytes)
                outcome.append(fx.Flushed(flushed.duration_s))
                nursery.cancel_scope.cancel()

            async def listen() -> None:
                while last_chance is not None:
                    self._woke_by = await notifier.wait(math.inf)
                    usage = notifier.usage_bytes()
                    if usage is None or usage < last_chance:
                        continue
                    snapshot = self._ctx.backend.snapshot(self.cgroup_dir)
                    now_s = trio.current_time()
                    if snapshot is not None and last_chance_reason(
                        self._state, snapshot, self._settings, now_s
                    ):
                        outcome.append(fx.LastChance(snapshot.usage_bytes))
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(flush)
            nursery.start_soon(listen)
        return outcome[0] if outcome else fx.Flushed(0.0)

    async def _act(self, effect: fx.Act, notifier: Notifier) -> fx.Event:
        started = time.perf_counter()
        # From the kernel's notification, or else from the read that found usage over.
        woke_at = notifier.kernel_woke_at if self._woke_by & NOTIFICATIONS else self._read_at
        prepared, self._prepared = self._prepared, None
        try:
            # A kill under way is finished and reported even when memguard is being
            # stopped (SIGTERM mid-kill): it is bounded (CONTAINER_KILL_BOUND_S).
            with trio.CancelScope(shield=True):
                outcome = await self._run_policy(effect.policy, prepared)
        finally:
            if prepared is not None:
                prepared.close()
        if outcome.gone:
            raise _Gone
        self._kill = outcome
        self._latency_s = None
        if woke_at is not None and outcome.first_signal_at is not None:
            self._latency_s = outcome.first_signal_at - woke_at
        return fx.Acted(len(outcome.victims), outcome.gone, time.perf_counter() - started)

    async def _run_policy(self, policy: Policy, prepared: Prepared | None) -> KillOutcome:
        killer = self._ctx.killer
        if policy is Policy.NOOP:
            return KillOutcome()
        if policy is Policy.PROCESS:
            return await killer.kill_process(self.cgroup_dir, prepared)
        deadline_s = trio.current_time() + CONTAINER_KILL_BOUND_S
        return await killer.kill_container(self.cgroup_dir, prepared, deadline_s)

    # -- the graceful try: SIGTERM (or evict, delete), then watch --------------------------

    async def _terminate(self, effect: fx.Terminate, notifier: Notifier) -> fx.Event:
        """Ask the container to stop, then watch until it exits, usage reaches the
        escalation level, or the grace period is over (policy.effects.Terminate)."""
        started = time.perf_counter()
        woke_at = notifier.kernel_woke_at if self._woke_by & NOTIFICATIONS else self._read_at
        deadline_s = trio.current_time() + effect.grace_s
        via = effect.via
        processes: list[Process] = []

        def ended(ending: fx.Ending, detail: str) -> fx.Terminated:
            duration_s = time.perf_counter() - started
            return fx.Terminated(
                ending, via, detail, duration_s, effect.escalate_bytes, effect.grace_s
            )

        try:
            async with trio.open_nursery() as nursery:
                pod: _PodCall | None = None
                if via is GracefulVia.PROCESS:
                    found = await self._sigterm(woke_at, processes)
                    if found is None:
                        return ended(fx.Ending.NO_TARGET, "")
                    detail = found
                    if self._settings.dry_run:
                        return ended(fx.Ending.DRY_RUN, detail)
                elif self._settings.dry_run:
                    return ended(fx.Ending.DRY_RUN, f"grace period {effect.grace_s:g}s")
                else:
                    pod = _PodCall()
                    nursery.start_soon(self._ask_pod, via, effect.grace_s, pod)
                    detail = ""
                # Watch for the escalation level only: on v2 this lifts the soft
                # level's memory.high tripwire (a process that ignores SIGTERM runs
                # on to the hard threshold, which wakes the guard). Re-armed after.
                if not await notifier.arm(effect.escalate_bytes):
                    return ended(fx.Ending.EXITED, detail)
                ending = None
                while ending is None:
                    ending = await self._watch_once(notifier, effect, deadline_s, pod)
                    if ending is fx.Ending.FAILED and pod is not None and effect.fall_back:
                        # the API refused to help: SIGTERM the main process instead
                        detail = f"{_pod_words(via, pod)}; SIGTERM instead"
                        via, pod, ending = GracefulVia.PROCESS, None, None
                        found = await self._sigterm(woke_at, processes)
                        if found is None:
                            return ended(fx.Ending.NO_TARGET, detail)
                        detail = f"{detail}: {found}"
                if pod is not None:
                    # the container went before the API server's answer came back
                    # (it acts before it answers): wait for it, for the report
                    with trio.move_on_after(POD_ANSWER_WAIT_S):
                        await pod.answered.wait()
                    detail = _pod_words(via, pod)
                nursery.cancel_scope.cancel()
                return ended(ending, detail)
        finally:
            for process in processes:
                process.close()

    async def _sigterm(self, woke_at: float | None, processes: list[Process]) -> str | None:
        """SIGTERM the main process(es) (a dry run: find them); the words for the
        report, None when there is none memguard may signal."""
        killer, prepared = self._ctx.killer, self._prepared
        if self._ctx.backend.flush_blocks and prepared is None:
            targets = await trio.to_thread.run_sync(
                killer.main_processes, self.cgroup_dir, None, abandon_on_cancel=True
            )
        else:
            targets = killer.main_processes(self.cgroup_dir, prepared)
        if not targets:
            return None
        names = ", ".join(f"{info.pid}/{info.comm}" for info in targets[:4])
        if self._settings.dry_run:
            victims = tuple(Victim(i.pid, i.comm, i.oom_score, i.rss_bytes, False) for i in targets)
            self._kill = KillOutcome(victims)
            return f"would SIGTERM {names}"
        signalled, first_at = killer.terminate(self.cgroup_dir, targets)
        processes += [process for _, process in signalled]
        self._kill = KillOutcome(
            tuple(Victim(i.pid, i.comm, i.oom_score, i.rss_bytes, True) for i, _ in signalled),
            first_signal_at=first_at,
        )
        self._latency_s = None
        if woke_at is not None and first_at is not None:
            self._latency_s = first_at - woke_at
        return f"SIGTERM to {names}"

    async def _ask_pod(self, via: GracefulVia, grace_s: float, pod: _PodCall) -> None:
        """Evict (or delete) the pod; a refusal (429) is asked again until the try ends."""
        pod_actions = self._ctx.pod_actions
        call = pod_actions.evict if via is GracefulVia.EVICT else pod_actions.delete
        while True:
            pod.result = await call(self.ref, grace_s)
            pod.tries += 1
            pod.answered.set()
            if pod.result.outcome is not PodOutcome.REFUSED:
                pod.final = True
                if self._notifier is not None:
                    self._notifier.bell.ring(Wake.POD)
                return
            await trio.sleep(POD_RETRY_S)

    async def _watch_once(
        self,
        notifier: Notifier,
        effect: fx.Terminate,
        deadline_s: float,
        pod: _PodCall | None,
    ) -> fx.Ending | None:
        """One look during a graceful try: how it ended, or None (still waiting)."""
        pids = self._ctx.backend.pids(self.cgroup_dir)
        usage = notifier.usage_bytes()
        if not pids or usage is None:
            return fx.Ending.EXITED
        if effect.escalate_bytes is not None and usage >= effect.escalate_bytes:
            return fx.Ending.LEVEL_REACHED
        if pod is not None and pod.final and pod.result is not None:
            if pod.result.outcome is PodOutcome.GONE:
                return fx.Ending.POD_GONE
            if pod.result.outcome is PodOutcome.FAILED:
                return fx.Ending.FAILED
        now_s = trio.current_time()
        if now_s >= deadline_s:
            return fx.Ending.GRACE_OVER
        self._woke_by = await notifier.wait(min(deadline_s - now_s, WATCH_POLL_S))
        return None

    # -- preparing the victims (in the background, never on the kill path) --------------

    def _start_preparing(self, with_pidfds: bool) -> None:
        if self._preparing or self._background is None:
            return
        killer = self._ctx.killer
        if with_pidfds:
            work = functools.partial(killer.prepare, self.cgroup_dir)
        else:
            work = functools.partial(killer.scan, self.cgroup_dir)
        if not self._ctx.backend.flush_blocks:  # a fake tree: quick reads, done at once
            self._prepared_now(work())
            return
        self._preparing = True
        self._background.start_soon(self._prepare, work)

    async def _prepare(self, work: Callable[[], Prepared | None]) -> None:
        """Real cgroupfs and /proc reads, pidfd opens: in a worker thread."""
        try:
            fresh = await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        finally:
            self._preparing = False
        self._prepared_now(fresh)

    def _prepared_now(self, fresh: Prepared | None) -> None:
        self._drop_prepared()
        self._prepared = fresh
        self._events.armed_changed(self)  # observable: prepared_victims changed

    def _refresh_prepared(self) -> None:
        """Warned victims older than PREPARED_MAX_AGE_S, or a stale scan, are renewed."""
        prepared = self._prepared
        age_s = math.inf if prepared is None else time.perf_counter() - prepared.at_s
        if self._state.warned and age_s > PREPARED_MAX_AGE_S:
            self._start_preparing(with_pidfds=True)
        elif self._registered and age_s > SCAN_MAX_AGE_S:
            self._start_preparing(with_pidfds=False)

    def _drop_prepared(self) -> None:
        if self._prepared is not None:
            self._prepared.close()
            self._prepared = None

    def _publish(self, effect: fx.Publish) -> None:
        before, after = effect.before, effect.after
        details: dict[str, object] = {"wall_time_s": time.time()}
        kill = self._kill if effect.kind in KILL_KINDS else None
        if kill is not None:
            details.update(victims=kill.victims, survivors=kill.survivors, extra=kill.details())
            details["latency_s"] = self._latency_s
            if kill.first_signal_at is not None:  # when the kill happened, not now
                details["wall_time_s"] = time.time() - (time.perf_counter() - kill.first_signal_at)
            self._kill = None
        report = Report(
            kind=effect.kind,
            cgroup=self.cgroup_dir,
            ref=self.ref,
            usage_bytes=before.usage_bytes,
            limit_bytes=before.limit_bytes,
            threshold_bytes=self.armed_threshold_bytes,
            policy=self._settings.policy.value,
            action=effect.action,
            reason=effect.reason,
            dry_run=self._settings.dry_run,
            woke_by=",".join(sorted(self._woke_by)),
            cache_before_bytes=before.cache_bytes,
            cache_after_bytes=None if after is None else after.cache_bytes,
            usage_after_bytes=None if after is None else after.usage_bytes,
            duration_s=effect.duration_s,
            oom_kills=effect.oom_kills,
            **details,  # type: ignore[arg-type]
        )
        self.last_report = report
        self._ctx.publish(report)


KILL_KINDS = frozenset(
    {
        ReportKind.KILL_PROCESS,
        ReportKind.KILL_CONTAINER,
        ReportKind.NO_VICTIM,
        ReportKind.NOOP,
        ReportKind.TERMINATE,
        ReportKind.EVICT,
        ReportKind.DELETE,
    }
)


def _pod_words(via: GracefulVia, pod: _PodCall) -> str:
    """What the API server said to the eviction (or delete), for the report."""
    result = pod.result
    if result is None:
        return f"{via.value}: no answer yet"
    tries = f" ({pod.tries} tries)" if pod.tries > 1 else ""
    said = f": {result.detail}" if result.detail else ""
    return f"{via.value} {result.outcome.value}{tries}{said}"
