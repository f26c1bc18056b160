"""A guard's prepared victims: made ready in the background, never on the kill path.

A scan of the members when the guard is armed (again when older than
SCAN_MAX_AGE_S); pidfds once usage passes the warning level (again when older
than PREPARED_MAX_AGE_S). On a real cgroupfs the reads and pidfd opens run in a
worker thread; a fake tree's reads are quick and done at once.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import trio

from memguard.backends.base import Backend
from memguard.guarding.killer import Killer, Prepared

PREPARED_MAX_AGE_S = 0.5  # warned: victims older than this are prepared again
SCAN_MAX_AGE_S = 30.0  # calm: the members and the protected ones, this often


class Preparer:
    """One guard's victims ready for the kill (memguard.guarding.prepared), kept fresh."""

    def __init__(
        self,
        cgroup_dir: str,
        killer: Killer,
        backend: Backend,
        changed: Callable[[], None],
    ) -> None:
        self._cgroup_dir = cgroup_dir
        self._killer = killer
        self._backend = backend
        self._changed = changed  # told whenever `prepared` is replaced (observable: count)
        self.prepared: Prepared | None = None
        self._preparing = False
        # The guard's background nursery while a notifier is armed (None: prepare nothing).
        self.background: trio.Nursery | None = None

    @property
    def count(self) -> int:
        """Victims with an open pidfd, ready for the kill (0: not in the danger zone)."""
        return len(self.prepared.victims) if self.prepared is not None else 0

    def start(self, with_pidfds: bool) -> None:
        """Prepare anew (pidfds, or a scan only), unless a preparation is under way."""
        if self._preparing or self.background is None:
            return
        killer = self._killer
        if with_pidfds:
            work = functools.partial(killer.prepare, self._cgroup_dir)
        else:
            work = functools.partial(killer.scan, self._cgroup_dir)
        if not self._backend.flush_blocks:  # a fake tree: quick reads, done at once
            self._prepared_now(work())
            return
        self._preparing = True
        self.background.start_soon(self._prepare, work)

    async def _prepare(self, work: Callable[[], Prepared | None]) -> None:
        """Real cgroupfs and /proc reads, pidfd opens: in a worker thread."""
        try:
            fresh = await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        finally:
            self._preparing = False
        self._prepared_now(fresh)

    def _prepared_now(self, fresh: Prepared | None) -> None:
        self.drop()
        self.prepared = fresh
        self._changed()

    def refresh(self, warned: bool, registered: bool) -> None:
        """Warned victims older than PREPARED_MAX_AGE_S, or a stale scan, are renewed."""
        prepared = self.prepared
        age_s = math.inf if prepared is None else time.perf_counter() - prepared.at_s
        if warned and age_s > PREPARED_MAX_AGE_S:
            self.start(with_pidfds=True)
        elif registered and age_s > SCAN_MAX_AGE_S:
            self.start(with_pidfds=False)

    def take(self) -> Prepared | None:
        """The prepared victims for the kill: the caller closes them."""
        prepared, self.prepared = self.prepared, None
        return prepared

    def close(self) -> None:
        """Their pidfds closed (fx.Unprepare); the emptied Prepared stays, with its age."""
        if self.prepared is not None:
            self.prepared.close()

    def drop(self) -> None:
        if self.prepared is not None:
            self.prepared.close()
            self.prepared = None
