"""The swap trigger's pure core: when node swap I/O is sustained, and whom to act on.

kube-soomkiller's job (issue 13), as functions over frozen data, `now` passed in.

Rules:
- The rate is (pswpin + pswpout deltas) / the time between two /proc/vmstat
  samples, in pages per second. An interval is "high" when its rate is above
  the threshold; the window of high intervals starts at the first high
  interval's *start* (the sample before it), and the trigger fires once the
  window is `sustained_s` long. One low interval ends the window: a spike
  never fires.
- A counter that went backwards (a reset, a 64-bit wrap, a sample from a
  different boot) gives no rate: the window restarts, nothing fires.
- A gap (two samples further apart than `max_gap_intervals` poll intervals:
  the agent was stalled, or reads failed) gives no rate either: the window
  restarts from the late sample. A rate over a long gap would be an average
  that says nothing about "sustained".
- After acting, nothing fires for `cooldown_s`, and the window starts again
  only after the cooldown ends (the victim's memory takes a while to go).
- The victim: among guarded containers using swap (swap bytes > 0) that may be
  acted on (not protected, not terminating, not ignored, not being acted on), the highest PSI
  `full avg10` when every one of them has per-cgroup PSI (cgroup v2), else the
  highest swap share, swap / (usage + swap) (cgroup v1 has no per-cgroup PSI);
  ties go to more swap bytes, then to the cgroup path (deterministic).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides


@dataclass(frozen=True, slots=True)
class SwapSettings:
    io_threshold_pages_s: float = 1000.0  # --swap-io-threshold
    sustained_s: float = 10.0  # --sustained-duration
    poll_interval_s: float = 1.0  # --swap-poll-interval
    cooldown_s: float = 30.0  # --swap-cooldown
    max_gap_intervals: float = 3.0  # a sample later than this many intervals: a gap

    @property
    def max_gap_s(self) -> float:
        return self.poll_interval_s * self.max_gap_intervals


@dataclass(frozen=True, slots=True)
class VmstatSample:
    """/proc/vmstat's swap counters (pages, since boot) at `at_s` (a monotonic clock)."""

    at_s: float
    pswpin: int
    pswpout: int


class Verdict(enum.Enum):
    FIRST = "first"  # no previous sample: no rate yet
    CALM = "calm"  # at or below the threshold
    RISING = "rising"  # above, not for long enough yet
    SUSTAINED = "sustained"  # above for sustained_s: act
    RESET = "reset"  # a counter went backwards: window restarted
    GAP = "gap"  # samples too far apart: window restarted
    COOLDOWN = "cooldown"  # acted recently: nothing fires


@dataclass(frozen=True, slots=True)
class SwapState:
    last: VmstatSample | None = None
    above_since_s: float | None = None  # start of the current high window
    quiet_until_s: float | None = None  # the cooldown's end


@dataclass(frozen=True, slots=True)
class Observation:
    state: SwapState
    verdict: Verdict
    rate_pages_s: float | None = None  # over the last interval (None: no rate)
    above_for_s: float = 0.0  # how long the high window has lasted


def observe(state: SwapState, sample: VmstatSample, settings: SwapSettings) -> Observation:
    """Fold one sample into the state and say what it means."""
    last = state.last
    fresh = replace(state, last=sample, above_since_s=None)
    if last is None:
        return Observation(fresh, Verdict.FIRST)
    interval_s = sample.at_s - last.at_s
    delta = (sample.pswpin - last.pswpin) + (sample.pswpout - last.pswpout)
    if sample.pswpin < last.pswpin or sample.pswpout < last.pswpout or interval_s <= 0:
        return Observation(fresh, Verdict.RESET)
    if interval_s > settings.max_gap_s:
        return Observation(fresh, Verdict.GAP)
    rate = delta / interval_s
    quiet = state.quiet_until_s is not None and sample.at_s < state.quiet_until_s
    if quiet:
        return Observation(fresh, Verdict.COOLDOWN, rate)
    if rate <= settings.io_threshold_pages_s:
        return Observation(fresh, Verdict.CALM, rate)
    since_s = last.at_s if state.above_since_s is None else state.above_since_s
    if state.quiet_until_s is not None:
        since_s = max(since_s, state.quiet_until_s)
    above_for_s = sample.at_s - since_s
    held = replace(fresh, above_since_s=since_s)
    verdict = Verdict.SUSTAINED if above_for_s >= settings.sustained_s else Verdict.RISING
    return Observation(held, verdict, rate, above_for_s)


def quiet_until(state: SwapState, until_s: float) -> SwapState:
    """Nothing fires before until_s (the cooldown after acting); the window restarts."""
    return replace(state, above_since_s=None, quiet_until_s=until_s)


# -- the victim ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwapCandidate:
    """One guarded container as the trigger read it."""

    cgroup_dir: str
    swap_bytes: int
    usage_bytes: int  # memory in RAM (v1 usage_in_bytes, v2 memory.current): no swap
    psi_full_avg10: float | None = None  # None: no per-cgroup PSI (v1, psi=0)
    overrides: ContainerOverrides = NO_OVERRIDES
    busy: bool = False  # being acted on already (the act has not returned)

    @property
    def swap_share(self) -> float:
        total = self.usage_bytes + self.swap_bytes
        return self.swap_bytes / total if total > 0 else 0.0


class RankedBy(enum.Enum):
    PSI = "PSI full avg10"
    SWAP_SHARE = "swap share"


@dataclass(frozen=True, slots=True)
class VictimChoice:
    victim: SwapCandidate | None
    ranked_by: RankedBy
    using_swap: int  # candidates with swap bytes > 0
    skipped: tuple[tuple[str, str], ...] = ()  # (cgroup_dir, why) of swapping ones passed over


def why_skipped(candidate: SwapCandidate) -> str | None:
    """Why the trigger must not act on a container (None: it may)."""
    overrides = candidate.overrides
    if overrides.ignore:
        return "ignored (memguard.io/ignore)"
    if overrides.protected is not None:
        return f"protected ({overrides.protected})"
    if overrides.terminating:
        return "its pod is terminating already"
    if candidate.busy:
        return "being acted on already"
    return None


def choose_victim(candidates: Iterable[SwapCandidate]) -> VictimChoice:
    """The container to act on (rules in the module header)."""
    swapping = [c for c in candidates if c.swap_bytes > 0]
    skipped: list[tuple[str, str]] = []
    eligible: list[SwapCandidate] = []
    for candidate in swapping:
        why = why_skipped(candidate)
        if why is None:
            eligible.append(candidate)
        else:
            skipped.append((candidate.cgroup_dir, why))
    with_psi = bool(eligible) and all(c.psi_full_avg10 is not None for c in eligible)
    ranked_by = RankedBy.PSI if with_psi else RankedBy.SWAP_SHARE

    def key(c: SwapCandidate) -> tuple[float, int, str]:
        severity = (c.psi_full_avg10 or 0.0) if with_psi else c.swap_share
        return (severity, c.swap_bytes, c.cgroup_dir)

    victim = max(eligible, key=key) if eligible else None
    return VictimChoice(victim, ranked_by, len(swapping), tuple(skipped))
