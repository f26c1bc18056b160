"""Which processes a kill may touch, and which one the process policy picks.

Never a victim: pid 1 of the host, memguard itself (and its own pids), or a
process with oom_score_adj -1000 (the kernel's own "never OOM-kill" mark).
The process policy ranks like the kernel's cgroup OOM killer: highest
oom_score first; ties go to the larger RSS, then to the newer (higher) pid.
"""

from __future__ import annotations

from collections.abc import Iterable

from memguard.policy.model import ProcInfo

OOM_SCORE_ADJ_MIN = -1000
HOST_INIT_PID = 1


def is_protected(proc: ProcInfo, protected_pids: frozenset[int]) -> bool:
    return (
        proc.pid == HOST_INIT_PID
        or proc.pid in protected_pids
        or proc.oom_score_adj <= OOM_SCORE_ADJ_MIN
    )


def eligible(procs: Iterable[ProcInfo], protected_pids: frozenset[int]) -> list[ProcInfo]:
    return [p for p in procs if not is_protected(p, protected_pids)]


def rank_key(proc: ProcInfo) -> tuple[int, int, int]:
    return (proc.oom_score, proc.rss_bytes, proc.pid)


def pick_victim(procs: Iterable[ProcInfo], protected_pids: frozenset[int]) -> ProcInfo | None:
    """The process the process policy kills, or None when none may be killed."""
    candidates = eligible(procs, protected_pids)
    if not candidates:
        return None
    return max(candidates, key=rank_key)


def ranked(procs: Iterable[ProcInfo], protected_pids: frozenset[int]) -> list[ProcInfo]:
    """Eligible processes, the process policy's first choice first."""
    return sorted(eligible(procs, protected_pids), key=rank_key, reverse=True)
