"""A guard's graceful try (policy.effects.Terminate): SIGTERM (or evict, delete), then watch.

The container is asked to stop: its main process(es) get SIGTERM
(GracefulVia.PROCESS), or the API server is asked to evict (or delete) its pod,
again while it refuses (429: a PodDisruptionBudget). Then the guard watches
until the container exits, usage reaches the escalation level, or the grace
period is over; an API that fails to help is followed by SIGTERM when the effect
says to fall back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio

from memguard.backends.base import Backend, Notifier
from memguard.backends.wake import Wake
from memguard.guarding.killer import Killer, KillOutcome
from memguard.guarding.pods import PodActions, PodOutcome, PodResult
from memguard.guarding.preparer import Preparer
from memguard.guarding.reporting import ReportNotes
from memguard.kernel.pidfd import Process
from memguard.policy import effects as fx
from memguard.policy.model import GracefulVia
from memguard.policy.paths import ContainerRef
from memguard.reports.report import Victim

POD_ANSWER_WAIT_S = 5.0  # PodActions' own bound on one request
# After a graceful SIGTERM (or eviction) the guard also re-reads this often: the
# kernel tells of crossings, not of a cgroup emptying with its page cache charged.
WATCH_POLL_S = 0.02
POD_RETRY_S = 1.0  # an eviction refused (429: a PodDisruptionBudget) is asked again


@dataclass
class _PodCall:
    """An eviction or delete under way (a task of the graceful try): its last answer."""

    result: PodResult | None = None
    tries: int = 0
    final: bool = False  # no more tries (anything but a refusal)
    answered: trio.Event = field(default_factory=trio.Event)  # the first answer came


@dataclass
class _Try:
    """One graceful try under way: how it asks now, what it holds, its words so far."""

    effect: fx.Terminate
    dry_run: bool
    started: float  # perf_counter() when the try began
    woke_at: float | None  # what the latency of its SIGTERM counts from
    deadline_s: float  # trio time: the grace period is over
    via: GracefulVia
    pod: _PodCall | None = None
    detail: str = ""
    processes: list[Process] = field(default_factory=list)  # signalled: closed at the end

    def ended(self, ending: fx.Ending, detail: str) -> fx.Terminated:
        duration_s = time.perf_counter() - self.started
        effect = self.effect
        return fx.Terminated(
            ending, self.via, detail, duration_s, effect.escalate_bytes, effect.grace_s
        )


class Graceful:
    """One container's graceful tries (one at a time, on the guard's task)."""

    def __init__(
        self,
        cgroup_dir: str,
        ref: ContainerRef,
        killer: Killer,
        backend: Backend,
        pod_actions: PodActions,
        preparer: Preparer,
        notes: ReportNotes,
    ) -> None:
        self._cgroup_dir = cgroup_dir
        self._ref = ref
        self._killer = killer
        self._backend = backend
        self._pod_actions = pod_actions
        self._preparer = preparer  # SIGTERM finds the main processes among its victims
        self._notes = notes

    async def terminate(
        self, effect: fx.Terminate, notifier: Notifier, dry_run: bool
    ) -> fx.Terminated:
        """Ask the container to stop, then watch until it exits, usage reaches the
        escalation level, or the grace period is over (policy.effects.Terminate)."""
        started = time.perf_counter()
        woke_at = self._notes.woke_at(notifier)
        deadline_s = trio.current_time() + effect.grace_s
        run = _Try(effect, dry_run, started, woke_at, deadline_s, effect.via)
        try:
            async with trio.open_nursery() as nursery:
                early = await self._ask(run, nursery, notifier)
                if early is not None:
                    return early
                # Watch for the escalation level only: on v2 this lifts the soft
                # level's memory.high tripwire (a process that ignores SIGTERM runs
                # on to the hard threshold, which wakes the guard). Re-armed after.
                if not await notifier.arm(effect.escalate_bytes):
                    return run.ended(fx.Ending.EXITED, run.detail)
                ending = await self._watch(run, notifier)
                if isinstance(ending, fx.Terminated):
                    return ending
                if run.pod is not None:
                    # the container went before the API server's answer came back
                    # (it acts before it answers): wait for it, for the report
                    with trio.move_on_after(POD_ANSWER_WAIT_S):
                        await run.pod.answered.wait()
                    run.detail = _pod_words(run.via, run.pod)
                nursery.cancel_scope.cancel()
                return run.ended(ending, run.detail)
        finally:
            for process in run.processes:
                process.close()

    async def _ask(
        self, run: _Try, nursery: trio.Nursery, notifier: Notifier
    ) -> fx.Terminated | None:
        """SIGTERM, or the eviction (delete) started; how the try ended when it ends here."""
        if run.via is GracefulVia.PROCESS:
            found = await self._sigterm(run)
            if found is None:
                return run.ended(fx.Ending.NO_TARGET, "")
            run.detail = found
            if run.dry_run:
                return run.ended(fx.Ending.DRY_RUN, run.detail)
        elif run.dry_run:
            return run.ended(fx.Ending.DRY_RUN, f"grace period {run.effect.grace_s:g}s")
        else:
            run.pod = _PodCall()
            nursery.start_soon(self._ask_pod, run.via, run.effect.grace_s, run.pod, notifier)
        return None

    async def _watch(self, run: _Try, notifier: Notifier) -> fx.Ending | fx.Terminated:
        """Look until the try ends: how; or how it ended when the API refused to
        help and there is no process to SIGTERM instead."""
        ending: fx.Ending | None = None
        while ending is None:
            ending = await self._watch_once(notifier, run.effect, run.deadline_s, run.pod)
            if ending is fx.Ending.FAILED and run.pod is not None and run.effect.fall_back:
                # the API refused to help: SIGTERM the main process instead
                detail = f"{_pod_words(run.via, run.pod)}; SIGTERM instead"
                run.via, run.pod, ending = GracefulVia.PROCESS, None, None
                found = await self._sigterm(run)
                if found is None:
                    return run.ended(fx.Ending.NO_TARGET, detail)
                run.detail = f"{detail}: {found}"
        return ending

    async def _sigterm(self, run: _Try) -> str | None:
        """SIGTERM the main process(es) (a dry run: find them); the words for the
        report, None when there is none memguard may signal."""
        killer, prepared = self._killer, self._preparer.prepared
        if self._backend.flush_blocks and prepared is None:
            targets = await trio.to_thread.run_sync(
                killer.main_processes, self._cgroup_dir, None, abandon_on_cancel=True
            )
        else:
            targets = killer.main_processes(self._cgroup_dir, prepared)
        if not targets:
            return None
        names = ", ".join(f"{info.pid}/{info.comm}" for info in targets[:4])
        if run.dry_run:
            victims = tuple(Victim(i.pid, i.comm, i.oom_score, i.rss_bytes, False) for i in targets)
            self._notes.kill = KillOutcome(victims)
            return f"would SIGTERM {names}"
        signalled, first_at = killer.terminate(self._cgroup_dir, targets)
        run.processes += [process for _, process in signalled]
        kill = KillOutcome(
            tuple(Victim(i.pid, i.comm, i.oom_score, i.rss_bytes, True) for i, _ in signalled),
            first_signal_at=first_at,
        )
        self._notes.acted(kill, run.woke_at)
        return f"SIGTERM to {names}"

    async def _ask_pod(
        self, via: GracefulVia, grace_s: float, pod: _PodCall, notifier: Notifier
    ) -> None:
        """Evict (or delete) the pod; a refusal (429) is asked again until the try ends."""
        pod_actions = self._pod_actions
        call = pod_actions.evict if via is GracefulVia.EVICT else pod_actions.delete
        while True:
            pod.result = await call(self._ref, grace_s)
            pod.tries += 1
            pod.answered.set()
            if pod.result.outcome is not PodOutcome.REFUSED:
                pod.final = True
                notifier.bell.ring(Wake.POD)  # the guard looks at once
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
        pids = self._backend.pids(self._cgroup_dir)
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
        self._notes.woke_by = await notifier.wait(min(deadline_s - now_s, WATCH_POLL_S))
        return None


def _pod_words(via: GracefulVia, pod: _PodCall) -> str:
    """What the API server said to the eviction (or delete), for the report."""
    result = pod.result
    if result is None:
        return f"{via.value}: no answer yet"
    tries = f" ({pod.tries} tries)" if pod.tries > 1 else ""
    said = f": {result.detail}" if result.detail else ""
    return f"{via.value} {result.outcome.value}{tries}{said}"
