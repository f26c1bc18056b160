"""The scripted scenario behind `memguard demo` and `memguard fake drive`.

Three phases on three fake containers, each driven towards its limit:
  flush  clean page cache grows: memguard's flush brings usage back down
  skip   dirty page cache grows: a flush cannot drop it, memguard leaves it
         to the kernel and says why
  kill   anonymous memory grows in the worker: nothing to flush, memguard's
         policy kills it before the (fake) kernel OOM killer would
A phase ends when something reacted (usage fell, a member died) or usage got
within one step of the limit (the skip phase holds there).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import trio

from memguard.fake.drive import Kind, StepResult, step
from memguard.fake.tree import FakeContainer
from memguard.policy.model import MIB
from memguard.units import format_size

STEP_INTERVAL_S = 0.04
MAX_STEPS = 400


class Outcome(enum.Enum):
    USAGE_FELL = "usage fell (page cache was flushed)"
    MEMBER_KILLED = "a process was killed"
    KERNEL_OOM = "the fake kernel's OOM killer acted"
    HELD_AT_LIMIT = "holding one step below the limit"
    GONE = "the cgroup is gone"
    STEPS_EXHAUSTED = "gave up after the maximum number of steps"


@dataclass(frozen=True)
class Phase:
    name: str
    container: str  # a FakeContainer name from memguard.fake.tree.DEFAULT_PODS
    kind: Kind
    step_bytes: int
    prefill_bytes: int  # charged at once before stepping, to get there quickly
    hold_below_limit: bool = False


PHASES = (
    Phase("flush", "web", Kind.CACHE, 8 * MIB, prefill_bytes=160 * MIB),
    Phase("skip", "api", Kind.DIRTY, 2 * MIB, prefill_bytes=200 * MIB, hold_below_limit=True),
    Phase("kill", "cache", Kind.ANON, 8 * MIB, prefill_bytes=160 * MIB),
)


def _judge(previous: StepResult, current: StepResult, phase: Phase) -> Outcome | None:
    if current.kernel_oom_pid is not None:
        return Outcome.KERNEL_OOM
    if current.members < previous.members:
        return Outcome.MEMBER_KILLED
    if current.usage_bytes < previous.usage_bytes:
        return Outcome.USAGE_FELL
    limit = current.limit_bytes
    near_limit = limit is not None and current.usage_bytes + phase.step_bytes > limit
    if phase.hold_below_limit and near_limit:
        return Outcome.HELD_AT_LIMIT
    return None


async def run_phase(
    root: str, container: FakeContainer, phase: Phase, say: Callable[[str], None]
) -> Outcome:
    previous = step(root, container.path, phase.kind, phase.prefill_bytes)
    if previous is None:
        return Outcome.GONE
    say(
        f"[{phase.name}] growing {phase.kind.value} in {container.name} "
        f"({format_size(previous.usage_bytes)} of {format_size(previous.limit_bytes)})"
    )
    for _ in range(MAX_STEPS):
        await trio.sleep(STEP_INTERVAL_S)
        current = step(root, container.path, phase.kind, phase.step_bytes)
        if current is None:
            return Outcome.GONE
        outcome = _judge(previous, current, phase)
        if outcome is not None:
            say(f"[{phase.name}] {outcome.value}: usage {format_size(current.usage_bytes)}")
            return outcome
        # The step that was charged may itself have been undone: judge against it.
        previous = StepResult(current.usage_bytes, current.limit_bytes, current.members)
    return Outcome.STEPS_EXHAUSTED
