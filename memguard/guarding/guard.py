"""One guard task per container cgroup: wake on the kernel, decide, act, report.

The loop: read a snapshot (None: the cgroup is gone, the guard ends); report
new kernel OOM kills; (re-)arm the threshold when the limit changed and read
again; ask the policy core what to do; do it; sleep until the kernel, a limit
change or the (re)check timeout wakes the guard.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from memguard.backends.base import Backend, Notifier
from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.wake import NOTIFICATIONS, Wake
from memguard.guarding.actions import Flusher, FlushOutcome, Killer, KillOutcome
from memguard.policy import decide as policy
from memguard.policy.cacheflush import CacheStep, after_cache_flush, decide_cache_flush
from memguard.policy.decide import Decision, GuardState, Step
from memguard.policy.margin import threshold_bytes
from memguard.policy.model import GuardSettings, MemorySnapshot, Policy
from memguard.policy.paths import ContainerRef
from memguard.reports.report import Report, ReportKind
from memguard.units import format_size

log = logging.getLogger(__name__)

CONTAINER_KILL_BOUND_S = 2.0
NOT_READY_RETRY_S = 0.5
UNWATCHED_RECHECK_S = 1.0  # no inotify watch on the cgroup (watch limit): re-read this often
RECHECK_JITTER = 0.1  # +-10 %, so 1,000 guards do not re-check in lockstep


@dataclass(frozen=True)
class GuardContext:
    """What every guard shares; built once by the agent."""

    backend: Backend
    hub: InotifyHub
    settings: GuardSettings
    flusher: Flusher
    killer: Killer
    publish: Callable[[Report], None]


class GuardEvents(Protocol):
    """What a guard tells its supervisor."""

    def limit_known(self, guard: Guard, limit_bytes: int | None) -> None:
        """The guard is about to (re-)arm for this limit (new container or new limit)."""
        ...

    def armed_changed(self, guard: Guard) -> None: ...


class _Gone(Exception):
    """The cgroup vanished mid-step: the guard ends quietly."""


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
        self._settings = context.settings
        self._state = GuardState()
        self._armed: int | None = None
        self._is_armed = False
        self._woke_by: frozenset[Wake] = frozenset({Wake.TIMEOUT})
        self._unlimited_noted = False

    @property
    def armed(self) -> bool:
        """The kernel (or the fake tree) notifies this guard: the first arm is done."""
        return self._is_armed

    @property
    def armed_threshold_bytes(self) -> int | None:
        """The threshold being watched; None before arming or for unlimited cgroups."""
        return self._armed

    async def run(self) -> None:
        """Guard until the cgroup directory is gone.

        A directory whose memory files cannot be read yet (cgroup v2 before the
        memory controller is enabled for it, a fake tree being built) is not
        gone: the guard looks again, backing off up to the recheck interval.
        """
        for attempt in itertools.count():
            notifier_cm = self._ctx.backend.notifier(self.cgroup_dir, self._ctx.hub)
            with notifier_cm as notifier, contextlib.suppress(_Gone):
                await self._loop(notifier)
            if not self._ctx.backend.exists(self.cgroup_dir):
                break
            delay_s = min(NOT_READY_RETRY_S * 2**attempt, self._settings.recheck_interval_s)
            log.debug(
                "%s exists but its memory files are not readable: retry in %.1fs",
                self.cgroup_dir,
                delay_s,
            )
            await trio.sleep(delay_s)
        log.debug("guard ended: %s is gone", self.cgroup_dir)

    def _snapshot(self) -> MemorySnapshot:
        snapshot = self._ctx.backend.snapshot(self.cgroup_dir)
        if snapshot is None:
            raise _Gone
        return snapshot

    async def _loop(self, notifier: Notifier) -> None:
        while True:
            snapshot = self._snapshot()
            self._report_kernel_oom(snapshot)
            threshold = threshold_bytes(snapshot.limit_bytes, self._settings)
            if threshold != self._armed or not self._is_armed:
                # Before arming: memory QoS may own memory.high, which the v2 tripwire leaves alone.
                self._events.limit_known(self, snapshot.limit_bytes)
                if not await notifier.arm(threshold):
                    raise _Gone
                log.info(
                    "guarding %s: limit %s, threshold %s",
                    self.cgroup_dir,
                    format_size(snapshot.limit_bytes),
                    format_size(threshold),
                )
                self._armed, self._is_armed = threshold, True
                self._events.armed_changed(self)
                continue  # usage may have crossed before the registration: read again
            retry_at_s = await self._step(snapshot, threshold, notifier)
            now_s = trio.current_time()
            if retry_at_s is None:
                jitter = random.uniform(1 - RECHECK_JITTER, 1 + RECHECK_JITTER)
                retry_at_s = now_s + self._settings.recheck_interval_s * jitter
            if not notifier.limit_watched:
                retry_at_s = min(retry_at_s, now_s + UNWATCHED_RECHECK_S)
            reasons = await notifier.wait(retry_at_s - now_s)
            self._woke_by = reasons

    def _report_kernel_oom(self, snapshot: MemorySnapshot) -> None:
        fresh, self._state = policy.new_oom_kills(self._state, snapshot)
        if fresh:
            self._publish(
                ReportKind.KERNEL_OOM,
                snapshot,
                "kernel OOM killer acted",
                reason="the kernel's OOM killer killed in this cgroup",
                oom_kills=fresh,
            )

    async def _step(
        self, snapshot: MemorySnapshot, threshold: int | None, notifier: Notifier
    ) -> float | None:
        """Carry out one decision; the time to look again (None: recheck interval)."""
        now_s = trio.current_time()
        decision = policy.decide(snapshot, threshold, self._state, self._settings, now_s)
        flushed: FlushOutcome | None = None
        before = snapshot
        if decision.step is Step.FLUSH:
            assert threshold is not None  # FLUSH is only decided over a threshold
            request_bytes = policy.flush_request_bytes(snapshot, threshold)
            flushed = await self._ctx.flusher.flush(self.cgroup_dir, request_bytes)
            self._state = policy.after_flush(self._state, now_s)
            snapshot = self._snapshot()
            now_s = trio.current_time()
            decision = policy.decide(snapshot, threshold, self._state, self._settings, now_s)
            if decision.step is Step.IDLE:
                self._report_flush(before, snapshot, flushed)
                return self._next_look_s()
        if decision.step is Step.SKIP:
            self._report_skip(decision, before, snapshot, now_s)
        elif decision.step is Step.ACT:
            await self._act(before, snapshot, flushed, notifier, decision.reason)
            return self._state.cooldown_until_s
        elif decision.step is Step.IDLE:
            await self._flush_cache_if_above(snapshot, now_s)
            return self._next_look_s()
        return decision.retry_at_s

    def _next_look_s(self) -> float | None:
        """With the cache flusher on, look again every --flush-interval."""
        settings = self._settings
        if settings.cache_flush_above is None:
            return None
        interval_s = min(settings.cache_flush_interval_s, settings.recheck_interval_s)
        return trio.current_time() + interval_s

    async def _flush_cache_if_above(self, snapshot: MemorySnapshot, now_s: float) -> None:
        limit = self._settings.cache_flush_above
        decision = decide_cache_flush(snapshot, limit, self._state, self._settings, now_s)
        if decision.step is CacheStep.UNLIMITED and not self._unlimited_noted:
            self._unlimited_noted = True
            log.info(
                "%s has no memory limit: --flush-cache-above %s does not apply to it",
                self.cgroup_dir,
                limit.describe() if limit else "",
            )
        if decision.step is not CacheStep.FLUSH:
            return
        flushed = await self._ctx.flusher.flush(self.cgroup_dir, decision.request_bytes)
        self._state = after_cache_flush(self._state, now_s)
        after = self._snapshot()
        self._publish(
            ReportKind.FLUSH,
            snapshot,
            "flushed page cache",
            after=after,
            reason=f"page cache {format_size(snapshot.reclaimable_cache_bytes)} was over "
            f"--flush-cache-above {format_size(decision.above_bytes)}",
            duration_s=flushed.duration_s,
        )

    def _report_flush(
        self, before: MemorySnapshot, after: MemorySnapshot, flushed: FlushOutcome
    ) -> None:
        self._publish(
            ReportKind.FLUSH,
            before,
            "flushed page cache",
            after=after,
            reason="usage back under the threshold",
            duration_s=flushed.duration_s,
        )

    def _report_skip(
        self, decision: Decision, before: MemorySnapshot, after: MemorySnapshot, now_s: float
    ) -> None:
        if not policy.should_report_skip(self._state, self._settings, now_s):
            return
        self._state = policy.after_skip_report(self._state, now_s)
        self._publish(
            ReportKind.SKIP, before, "left to the kernel", after=after, reason=decision.reason
        )

    async def _act(
        self,
        before: MemorySnapshot,
        current: MemorySnapshot,
        flushed: FlushOutcome | None,
        notifier: Notifier,
        reason: str,
    ) -> None:
        started = time.perf_counter()
        woke_at = notifier.kernel_woke_at if self._woke_by & NOTIFICATIONS else None
        kind, outcome = await self._run_policy()
        self._state = policy.after_action(self._state, self._settings, trio.current_time())
        if outcome.gone:
            raise _Gone
        latency_s = None
        if woke_at is not None and outcome.first_signal_at is not None:
            latency_s = outcome.first_signal_at - woke_at
        wall_time_s = time.time()
        if outcome.first_signal_at is not None:  # when the kill happened, not now
            wall_time_s -= time.perf_counter() - outcome.first_signal_at
        after = self._ctx.backend.snapshot(self.cgroup_dir) or current
        self._publish(
            kind,
            before,
            _action_words(kind, outcome, self._settings.dry_run),
            after=after,
            victims=outcome.victims,
            survivors=outcome.survivors,
            duration_s=time.perf_counter() - started + (flushed.duration_s if flushed else 0.0),
            latency_s=latency_s,
            reason=reason,
            wall_time_s=wall_time_s,
        )
        # Re-arm after every action: a fresh registration, whatever happened.
        if not await notifier.arm(self._armed):
            raise _Gone

    async def _run_policy(self) -> tuple[ReportKind, KillOutcome]:
        policy_name = self._settings.policy
        killer = self._ctx.killer
        if policy_name is Policy.NOOP:
            return ReportKind.NOOP, KillOutcome()
        if policy_name is Policy.PROCESS:
            outcome = await killer.kill_process(self.cgroup_dir)
            kind = ReportKind.KILL_PROCESS
        else:
            deadline_s = trio.current_time() + CONTAINER_KILL_BOUND_S
            outcome = await killer.kill_container(self.cgroup_dir, deadline_s)
            kind = ReportKind.KILL_CONTAINER
        if not outcome.victims and not outcome.gone:
            kind = ReportKind.NO_VICTIM
        return kind, outcome

    def _publish(
        self,
        kind: ReportKind,
        before: MemorySnapshot,
        action: str,
        *,
        after: MemorySnapshot | None = None,
        **details: object,
    ) -> None:
        details.setdefault("wall_time_s", time.time())
        report = Report(
            kind=kind,
            cgroup=self.cgroup_dir,
            ref=self.ref,
            usage_bytes=before.usage_bytes,
            limit_bytes=before.limit_bytes,
            threshold_bytes=self._armed,
            policy=self._settings.policy.value,
            action=action,
            dry_run=self._settings.dry_run,
            woke_by=",".join(sorted(self._woke_by)),
            cache_before_bytes=before.cache_bytes,
            cache_after_bytes=None if after is None else after.cache_bytes,
            usage_after_bytes=None if after is None else after.usage_bytes,
            **details,  # type: ignore[arg-type]
        )
        self._ctx.publish(report)


def _action_words(kind: ReportKind, outcome: KillOutcome, dry_run: bool) -> str:
    if kind is ReportKind.NOOP:
        return "over threshold, reported only (policy noop)"
    if kind is ReportKind.NO_VICTIM:
        return "over threshold, no process memguard may kill"
    target = "process" if kind is ReportKind.KILL_PROCESS else "container"
    if dry_run:
        return f"would kill {target} (dry run)"
    return f"killed {target}"
