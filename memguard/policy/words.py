"""The words of a kill's report: its kind and what was done (policy.acting)."""

from __future__ import annotations

from memguard.policy.kinds import ReportKind
from memguard.policy.model import Policy


def kill_kind(policy: Policy, victims: int) -> ReportKind:
    if policy is Policy.NOOP:
        return ReportKind.NOOP
    if victims == 0:
        return ReportKind.NO_VICTIM
    return ReportKind.KILL_PROCESS if policy is Policy.PROCESS else ReportKind.KILL_CONTAINER


def action_words(kind: ReportKind, dry_run: bool) -> str:
    if kind is ReportKind.NOOP:
        return "over threshold, reported only (policy noop)"
    if kind is ReportKind.NO_VICTIM:
        return "over threshold, no process memguard may kill"
    target = "process" if kind is ReportKind.KILL_PROCESS else "container"
    return f"would kill {target} (dry run)" if dry_run else f"killed {target}"
