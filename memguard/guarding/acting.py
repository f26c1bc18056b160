"""A guard's OOM path (policy.effects Flush and Act): flush while listening, then kill.

A flush runs in a worker thread while the guard keeps listening: usage at the
last-chance level ends the wait (the flush goes on in its thread) and the guard
acts at once. The kill takes the prepared victims (memguard.guarding.preparer)
and is finished even when memguard is being stopped; it is bounded.
"""

from __future__ import annotations

import math
import time

import trio

from memguard.backends.base import Backend, Notifier
from memguard.guarding.flusher import Flusher
from memguard.guarding.killer import Killer, KillOutcome, Prepared
from memguard.guarding.preparer import Preparer
from memguard.guarding.reporting import ReportNotes
from memguard.policy import effects as fx
from memguard.policy.model import GuardSettings, Policy
from memguard.policy.state import GuardState
from memguard.policy.table import last_chance_reason

CONTAINER_KILL_BOUND_S = 2.0


class Acting:
    """One container's flushes and kills, for its guard's loop."""

    def __init__(
        self,
        cgroup_dir: str,
        flusher: Flusher,
        killer: Killer,
        backend: Backend,
        preparer: Preparer,
        notes: ReportNotes,
    ) -> None:
        self._cgroup_dir = cgroup_dir
        self._flusher = flusher
        self._killer = killer
        self._backend = backend
        self._preparer = preparer
        self._notes = notes

    async def flush_listening(
        self, effect: fx.Flush, notifier: Notifier, state: GuardState, settings: GuardSettings
    ) -> fx.Event:
        """Flush in a worker thread; usage at the last-chance level meanwhile ends
        the wait (the flush goes on in its thread) and the guard acts at once.
        state and settings: the guard's, which stay as they are while it flushes."""
        last_chance = effect.last_chance_bytes
        outcome: list[fx.Event] = []
        async with trio.open_nursery() as nursery:

            async def flush() -> None:
                flushed = await self._flusher.flush(self._cgroup_dir, effect.request_bytes)
                outcome.append(fx.Flushed(flushed.duration_s))
                nursery.cancel_scope.cancel()

            async def listen() -> None:
                while last_chance is not None:
                    self._notes.woke_by = await notifier.wait(math.inf)
                    usage = notifier.usage_bytes()
                    if usage is None or usage < last_chance:
                        continue
                    snapshot = self._backend.snapshot(self._cgroup_dir)
                    now_s = trio.current_time()
                    if snapshot is not None and last_chance_reason(
                        state, snapshot, settings, now_s
                    ):
                        outcome.append(fx.LastChance(snapshot.usage_bytes))
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(flush)
            nursery.start_soon(listen)
        return outcome[0] if outcome else fx.Flushed(0.0)

    async def act(self, effect: fx.Act, notifier: Notifier) -> fx.Acted | None:
        """The kill policy on the prepared victims; None: the cgroup vanished meanwhile."""
        started = time.perf_counter()
        # From the kernel's notification, or else from the read that found usage over.
        woke_at = self._notes.woke_at(notifier)
        prepared = self._preparer.take()
        try:
            # A kill under way is finished and reported even when memguard is being
            # stopped (SIGTERM mid-kill): it is bounded (CONTAINER_KILL_BOUND_S).
            with trio.CancelScope(shield=True):
                outcome = await self._run_policy(effect.policy, prepared)
        finally:
            if prepared is not None:
                prepared.close()
        if outcome.gone:
            return None
        self._notes.acted(outcome, woke_at)
        return fx.Acted(len(outcome.victims), outcome.gone, time.perf_counter() - started)

    async def _run_policy(self, policy: Policy, prepared: Prepared | None) -> KillOutcome:
        killer = self._killer
        if policy is Policy.NOOP:
            return KillOutcome()
        if policy is Policy.PROCESS:
            return await killer.kill_process(self._cgroup_dir, prepared)
        deadline_s = trio.current_time() + CONTAINER_KILL_BOUND_S
        return await killer.kill_container(self._cgroup_dir, prepared, deadline_s)
