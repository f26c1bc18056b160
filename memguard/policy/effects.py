"""What happens to a guard (events) and what it is to do (effects): data only.

policy.step turns an event and a fresh snapshot into effects; the guard
(memguard.guarding.loop) carries the effects out, and each effect with an
outcome (Arm, Flush, CacheFlush, Act) comes back as an event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from memguard.policy.kinds import ReportKind
from memguard.policy.model import GracefulVia, MemorySnapshot, Policy
from memguard.policy.state import GuardState


@dataclass(frozen=True, slots=True)
class Woke:
    """The guard woke (the kernel, a limit write, its own timer) or just started.

    light: only usage was read (the kill path); the rest is as last read."""

    light: bool = False


@dataclass(frozen=True, slots=True)
class Armed:
    """The notification is armed at state.armed_threshold."""


@dataclass(frozen=True, slots=True)
class Flushed:
    """The OOM path's flush returned (or its bound ran out)."""

    duration_s: float


@dataclass(frozen=True, slots=True)
class CacheFlushed:
    """The page-cache flusher's flush returned."""

    duration_s: float


@dataclass(frozen=True, slots=True)
class LastChance:
    """Usage reached the last-chance level while a flush was running."""

    usage_bytes: int


@dataclass(frozen=True, slots=True)
class Acted:
    """The policy ran: what it found."""

    victims: int  # processes signalled (or, dry run, that would be)
    gone: bool  # the cgroup vanished meanwhile
    duration_s: float


class Ending(enum.Enum):
    """How a graceful try (Terminate) ended."""

    EXITED = "exited"  # the container exited (its cgroup empty or gone)
    POD_GONE = "pod gone"  # the API server says the pod is gone already (404)
    DRY_RUN = "dry run"  # nothing was done (--dry-run)
    # escalate to the container kill:
    LEVEL_REACHED = "level reached"  # usage reached the escalation level first
    GRACE_OVER = "grace period over"
    FAILED = "failed"  # the eviction failed (no API server, Kubernetes off, ...)
    NO_TARGET = "no target"  # no process memguard may SIGTERM


ESCALATING = frozenset({Ending.LEVEL_REACHED, Ending.GRACE_OVER, Ending.FAILED, Ending.NO_TARGET})


@dataclass(frozen=True, slots=True)
class Terminated:
    """A graceful try (Terminate) ended: how, and the words for the report."""

    ending: Ending
    via: GracefulVia  # how it was asked (evict failed, SIGTERM instead: process)
    detail: str = ""  # e.g. "eviction refused (429 ...)", "SIGTERM to 1234/python3"
    duration_s: float = 0.0  # from the SIGTERM (or the API call) to the end
    level_bytes: int | None = None  # the escalation level (LEVEL_REACHED)
    grace_s: float = 0.0  # the grace period it had


@dataclass(frozen=True, slots=True)
class Pressure:
    """An outside trigger (the swap trigger: sustained node swap I/O) chose this
    container: the graceful path, whatever --policy says (the container may sit
    at its memory limit while it swaps: only the grace period escalates)."""

    reason: str


Event = Woke | Armed | Flushed | CacheFlushed | LastChance | Acted | Terminated | Pressure


@dataclass(frozen=True, slots=True)
class Arm:
    threshold_bytes: int | None  # None: OOM events only (no limit)
    after_action: bool = False  # a fresh registration of the same threshold
    warning_bytes: int | None = None  # also wake here (policy.margin.Levels)
    last_chance_bytes: int | None = None  # and here
    soft_bytes: int | None = None  # and here (the graceful policy's soft level)


@dataclass(frozen=True, slots=True)
class Prepare:
    """Ready the victims, in the background: pidfds, biggest oom_score first (the
    process policy's victim; the order a container kill signals in)."""


@dataclass(frozen=True, slots=True)
class Unprepare:
    """Usage went back well under the warning level: let the pidfds go."""


@dataclass(frozen=True, slots=True)
class Flush:
    request_bytes: int
    last_chance_bytes: int | None = None  # stop waiting for it and act if usage gets here


@dataclass(frozen=True, slots=True)
class CacheFlush:
    request_bytes: int


@dataclass(frozen=True, slots=True)
class Act:
    policy: Policy
    reason: str


@dataclass(frozen=True, slots=True)
class Terminate:
    """Ask the container to stop (SIGTERM its main process, or evict or delete its
    pod), then watch: it exits, or usage reaches escalate_bytes, or grace_s runs out
    (event Terminated). Evict/delete refused (429) are retried while watching."""

    via: GracefulVia
    reason: str
    escalate_bytes: int | None  # the container kill when usage gets here first
    grace_s: float
    fall_back: bool  # evict/delete failed: SIGTERM the main process instead (graceful)


@dataclass(frozen=True, slots=True)
class Publish:
    """A report: the guard adds who (cgroup, pod), when and, for kills, the victims."""

    kind: ReportKind
    before: MemorySnapshot
    action: str
    reason: str = ""
    after: MemorySnapshot | None = None
    duration_s: float = 0.0
    oom_kills: int = 0


@dataclass(frozen=True, slots=True)
class LookAgain:
    at_s: float | None  # None: after the (jittered) recheck interval


@dataclass(frozen=True, slots=True)
class NoteUnlimited:
    """--flush-cache-above is a share, and this cgroup has no limit (say so once)."""


Effect = (
    Arm
    | Prepare
    | Unprepare
    | Flush
    | CacheFlush
    | Act
    | Terminate
    | Publish
    | LookAgain
    | NoteUnlimited
)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: GuardState
    effects: tuple[Effect, ...] = field(default=())
