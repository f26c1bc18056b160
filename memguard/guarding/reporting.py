"""A guard's reports: what it notes for them, and the Report a Publish effect makes.

The notes are shared by the guard's loop and its actions (memguard.guarding.loop,
.acting, .graceful): what woke the guard, when usage was last read, and the last
action's outcome, which the next report of a kill kind takes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from memguard.backends.base import Notifier
from memguard.backends.wake import NOTIFICATIONS, Wake
from memguard.guarding.killer import KillOutcome
from memguard.policy import effects as fx
from memguard.policy.model import GuardSettings
from memguard.policy.paths import ContainerRef
from memguard.reports.report import Report, ReportKind

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


@dataclass
class ReportNotes:
    """What the guard notes as it goes, for its next decision and its next report."""

    woke_by: frozenset[Wake] = frozenset({Wake.TIMEOUT})
    read_at: float | None = None  # perf_counter() of the last reading of usage
    kill: KillOutcome | None = None  # the last action's outcome, for its report
    latency_s: float | None = None

    def woke_at(self, notifier: Notifier) -> float | None:
        """From the kernel's notification, or else from the read that found usage over."""
        return notifier.kernel_woke_at if self.woke_by & NOTIFICATIONS else self.read_at

    def acted(self, kill: KillOutcome, woke_at: float | None) -> None:
        """An action's outcome, its latency from woke_at to its first signal."""
        self.kill = kill
        self.latency_s = None
        if woke_at is not None and kill.first_signal_at is not None:
            self.latency_s = kill.first_signal_at - woke_at


def build_report(
    effect: fx.Publish,
    notes: ReportNotes,
    cgroup_dir: str,
    ref: ContainerRef,
    threshold_bytes: int | None,
    settings: GuardSettings,
) -> Report:
    """The report a Publish effect asks for (a kill kind takes the last action's outcome)."""
    before, after = effect.before, effect.after
    details = _details(effect.kind, notes)
    return Report(
        kind=effect.kind,
        cgroup=cgroup_dir,
        ref=ref,
        usage_bytes=before.usage_bytes,
        limit_bytes=before.limit_bytes,
        threshold_bytes=threshold_bytes,
        policy=settings.policy.value,
        action=effect.action,
        reason=effect.reason,
        dry_run=settings.dry_run,
        woke_by=",".join(sorted(notes.woke_by)),
        cache_before_bytes=before.cache_bytes,
        cache_after_bytes=None if after is None else after.cache_bytes,
        usage_after_bytes=None if after is None else after.usage_bytes,
        duration_s=effect.duration_s,
        oom_kills=effect.oom_kills,
        **details,  # type: ignore[arg-type]
    )


def _details(kind: ReportKind, notes: ReportNotes) -> dict[str, object]:
    """When it happened and, for a kill kind, the last action's outcome (taken)."""
    details: dict[str, object] = {"wall_time_s": time.time()}
    kill = notes.kill if kind in KILL_KINDS else None
    if kill is not None:
        details.update(victims=kill.victims, survivors=kill.survivors, extra=kill.details())
        details["latency_s"] = notes.latency_s
        if kill.first_signal_at is not None:  # when the kill happened, not now
            details["wall_time_s"] = time.time() - (time.perf_counter() - kill.first_signal_at)
        notes.kill = None
    return details
