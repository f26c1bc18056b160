"""The swap trigger (kube-soomkiller's job, issue 13): node swap I/O sustained ->
act gracefully on the container that suffers most from it.

The kernel has no notification for swap I/O, so this is the one place memguard
polls: /proc/vmstat every --swap-poll-interval (one small procfs read on the
trio thread, ~20 us). The decision is pure (memguard.policy.swap); only when
it fires are the guarded containers read (swap bytes, usage, PSI full avg10),
in a worker thread, and the victim handed to `act` - the guard side's graceful
path (SIGTERM or eviction, escalating to the container kill) - in a task of its
own, so sampling goes on meanwhile. A container being acted on is passed over
until its act returns. --dry-run: the decision is logged, `act` is not called.

It is a container listener of the guard supervisor (it learns the guarded
containers from their guards' lifecycle, like memory QoS) and a service under
supervise(): an unexpected error restarts it with backoff, guards go on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from memguard.components import Changes
from memguard.errors import CgroupFormatError, KernelError
from memguard.guarding.pods import OverridesSource
from memguard.guarding.supervisor import GuardSupervisor
from memguard.kernel import swapfiles
from memguard.policy.paths import ContainerRef
from memguard.policy.swap import (
    RankedBy,
    SwapCandidate,
    SwapSettings,
    SwapState,
    Verdict,
    VictimChoice,
    VmstatSample,
    choose_victim,
    observe,
    quiet_until,
)
from memguard.units import format_size

log = logging.getLogger(__name__)

COMPONENT = "swap-trigger"
NO_SWAP_WARNING = "swap trigger on, but this node has no swap: it will never fire"
HISTORY = 16  # decisions and acts kept for `memguard status` and the tests
_T = TypeVar("_T")

# act(cgroup_dir, reason) -> acted: the guard side's graceful path.
ActGracefully = Callable[[str, str], Awaitable[bool]]
# (usage bytes, swap bytes) of a cgroup, None when gone (memguard.kernel.cgroup_v1/v2).
SwapReader = Callable[[str], tuple[int, int] | None]
PsiReader = Callable[[str], float | None]  # memory.pressure full avg10 (None: no PSI)


def _no_psi(cgroup_dir: str) -> float | None:
    return None


class SwapTrigger:
    component = COMPONENT

    def __init__(
        self,
        settings: SwapSettings,
        act: ActGracefully,
        overrides: OverridesSource,
        read_swap: SwapReader,
        read_psi: PsiReader = _no_psi,
        dry_run: bool = False,
        vmstat_path: str = swapfiles.VMSTAT_PATH,
        swaps_path: str = swapfiles.SWAPS_PATH,
    ) -> None:
        self.settings = settings
        self._act = act
        self._overrides = overrides
        self._read_swap = read_swap
        self._read_psi = read_psi
        self._dry_run = dry_run
        self._vmstat_path = vmstat_path
        self._swaps_path = swaps_path
        self._containers: dict[str, ContainerRef] = {}
        self._acting: set[str] = set()
        self.state = SwapState()
        # The observation API (memguard.components.Changes): moves on every decision.
        self.changes = Changes()
        self.decisions: list[VictimChoice] = []  # the last firings' choices, oldest first
        self.acted: list[tuple[str, bool]] = []  # (cgroup_dir, act's answer), oldest first

    # -- memguard.guarding.supervisor.ContainerListener -----------------------------------

    def container_seen(self, cgroup_dir: str, ref: ContainerRef, limit_bytes: int | None) -> None:
        self._containers[cgroup_dir] = ref

    def container_gone(self, cgroup_dir: str) -> None:
        self._containers.pop(cgroup_dir, None)

    # -- the service ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._say_swap()
        try:
            swapfiles.read_vmstat(self._vmstat_path)
        except CgroupFormatError as error:
            log.warning("swap trigger on, but it cannot work here: %s", error)
            task_status.started()
            await trio.sleep_forever()
        interval_s = self.settings.poll_interval_s
        async with trio.open_nursery() as acts:
            task_status.started()
            next_s = trio.current_time()
            while True:
                self._sample(acts)
                next_s += interval_s
                now_s = trio.current_time()
                if next_s < now_s:  # fell behind (a stall): no burst of catch-up samples
                    next_s = now_s + interval_s
                await trio.sleep_until(next_s)

    def _say_swap(self) -> None:
        try:
            areas = swapfiles.read_swaps(self._swaps_path)
        except KernelError as error:
            log.warning("swap trigger on; cannot tell whether this node has swap (%s)", error)
            return
        if not areas:
            log.warning(NO_SWAP_WARNING)
            return
        total = sum(area.size_bytes for area in areas)
        log.info(
            "swap trigger on: %s of swap (%s); fires when swap I/O stays above %g pages/s "
            "for %gs (sampled every %gs), then %gs cooldown%s",
            format_size(total),
            ", ".join(area.filename for area in areas),
            self.settings.io_threshold_pages_s,
            self.settings.sustained_s,
            self.settings.poll_interval_s,
            self.settings.cooldown_s,
            " (dry run: decides and logs only)" if self._dry_run else "",
        )

    def _sample(self, acts: trio.Nursery) -> None:
        now_s = trio.current_time()
        try:
            pswpin, pswpout = swapfiles.read_vmstat(self._vmstat_path)
        except (KernelError, CgroupFormatError) as error:
            log.warning("swap trigger: %s (sample skipped)", error)
            return
        observation = observe(self.state, VmstatSample(now_s, pswpin, pswpout), self.settings)
        self.state = observation.state
        if observation.verdict is Verdict.SUSTAINED:
            rate = observation.rate_pages_s or 0.0
            self.state = quiet_until(self.state, now_s + self.settings.cooldown_s)
            acts.start_soon(self._fire, rate, observation.above_for_s)
        elif observation.verdict in (Verdict.RESET, Verdict.GAP):
            log.info(
                "swap trigger: %s in /proc/vmstat, window restarted", observation.verdict.value
            )

    async def _fire(self, rate: float, above_for_s: float) -> None:
        containers = dict(self._containers)
        acting = frozenset(self._acting)
        candidates = await trio.to_thread.run_sync(self._candidates, containers, acting)
        choice = choose_victim(candidates)
        self._remember(self.decisions, choice)
        trigger = (
            f"node swap I/O {rate:.0f} pages/s above {self.settings.io_threshold_pages_s:g} "
            f"for {above_for_s:.1f}s"
        )
        skipped = "; ".join(f"{path} {why}" for path, why in choice.skipped[:8])
        passed = f"; passed over: {skipped}" if skipped else ""
        victim = choice.victim
        if victim is None:
            log.warning(
                "swap trigger: %s, but no container to act on (%d guarded, %d using swap)%s",
                trigger, len(candidates), choice.using_swap, passed,
            )  # fmt: skip
            self.changes.notify()
            return
        reason = f"{trigger}; {_severity(victim, choice.ranked_by)}"
        log.warning(
            "swap trigger: %s; victim %s (highest %s of %d using swap)%s%s",
            reason, victim.cgroup_dir, choice.ranked_by.value, choice.using_swap, passed,
            "; dry run: not acting" if self._dry_run else "; acting gracefully",
        )  # fmt: skip
        if self._dry_run:
            self.changes.notify()
            return
        self._acting.add(victim.cgroup_dir)
        try:
            acted = await self._act(victim.cgroup_dir, f"swap trigger: {reason}")
        finally:
            self._acting.discard(victim.cgroup_dir)
        self._remember(self.acted, (victim.cgroup_dir, acted))
        self.changes.notify()
        if not acted:
            log.warning("swap trigger: could not act on %s", victim.cgroup_dir)

    def _candidates(
        self, containers: dict[str, ContainerRef], acting: frozenset[str]
    ) -> list[SwapCandidate]:
        """Read every guarded container (blocking reads: a worker thread)."""
        candidates = []
        for cgroup_dir, ref in containers.items():
            try:
                read = self._read_swap(cgroup_dir)
                psi = self._read_psi(cgroup_dir) if read is not None and read[1] > 0 else None
            except (KernelError, CgroupFormatError) as error:
                log.warning("swap trigger: %s not read (%s)", cgroup_dir, error)
                continue
            if read is None:
                continue  # gone
            usage_bytes, swap_bytes = read
            overrides = self._overrides.overrides(ref)
            candidates.append(
                SwapCandidate(
                    cgroup_dir, swap_bytes, usage_bytes, psi, overrides, cgroup_dir in acting
                )
            )
        return candidates

    @staticmethod
    def _remember(history: list[_T], item: _T) -> None:
        history.append(item)
        del history[:-HISTORY]


def _severity(victim: SwapCandidate, ranked_by: RankedBy) -> str:
    psi = "n/a" if victim.psi_full_avg10 is None else f"{victim.psi_full_avg10:.2f}"
    return (
        f"PSI full avg10 {psi}; swap {format_size(victim.swap_bytes)} of "
        f"{format_size(victim.swap_bytes + victim.usage_bytes)} "
        f"({victim.swap_share:.0%} swap share); ranked by {ranked_by.value}"
    )


class GracefulAct:
    """The swap trigger's act: the victim's guard takes the graceful path
    (GuardSupervisor.act_gracefully). The trigger is composed before the agent
    that holds the supervisor, so the supervisor is handed over afterwards."""

    def __init__(self) -> None:
        self.supervisor: GuardSupervisor | None = None

    async def __call__(self, cgroup_dir: str, reason: str) -> bool:
        if self.supervisor is None:
            return False
        return await self.supervisor.act_gracefully(cgroup_dir, reason)
