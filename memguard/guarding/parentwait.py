"""Waiting for a --parent that does not exist (yet), and saying so when it stays away.

The kubelet makes its tree (kubepods, kubepods.slice) when it starts; memguard
may start first (a systemd unit), or look in the wrong place (a cgroup v1 path
on a cgroup v2 node). While the parent is missing memguard guards nothing, so
it is not ready, and:
- the parent's directory is watched for the parent's creation (inotify
  IN_CREATE, best effort: discovery also rescans every DEGRADED_RESCAN_S);
- with --parent auto the other kubelet driver's tree is a candidate too: the
  first candidate that appears becomes the parent;
- missing for --parent-wait, on_missing is called once per absence (the agent
  reports it: a log warning, a Warning Event on the Node). A parent that
  appears and goes again is a new absence.
Times are trio's clock (missing_since_s), so tests can jump it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import trio

from memguard.backends.inotify_hub import InotifyHub, Subscription
from memguard.errors import WatchError
from memguard.kernel.inotify import IN_CREATE, IN_MOVED_TO, IN_ONLYDIR, InotifyEvent

log = logging.getLogger(__name__)

CREATION_EVENTS = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR


class ParentWait:
    def __init__(
        self,
        candidates: Sequence[str],
        hub: InotifyHub,
        wait_s: float,
        on_missing: Callable[[str, float], None],
        on_created: Callable[[], None],
    ) -> None:
        self._candidates = tuple(candidates)  # the parent first
        self._hub = hub
        self._wait_s = wait_s
        self._on_missing = on_missing  # (parent, seconds missing), once per absence
        self._on_created = on_created  # a candidate was created: rescan
        self.missing_since_s: float | None = None
        self._reported = False
        self._watches: list[Subscription] = []

    def present(self, parent: str) -> str | None:
        """The parent if it is there, else a candidate that is (it becomes the parent),
        else None. One stat of cgroupfs per candidate: cheap, never blocks long."""
        if os.path.isdir(parent):
            return parent
        for path in self._candidates:
            if path != parent and os.path.isdir(path):
                log.info("parent %s: not there, but %s is: guarding that", parent, path)
                return path
        return None

    def missing(self, parent: str) -> None:
        """A rescan found no parent: start waiting, or report once it waited too long."""
        now_s = trio.current_time()
        if self.missing_since_s is None:
            self.missing_since_s = now_s
            others = "".join(f" (or {path})" for path in self._candidates if path != parent)
            log.warning("parent %s does not exist (yet): waiting for it%s", parent, others)
            self._watch_for_creation()
        missing_s = now_s - self.missing_since_s
        if not self._reported and missing_s >= self._wait_s:
            self._reported = True
            self._on_missing(parent, missing_s)

    def found(self, parent: str) -> None:
        if self.missing_since_s is None:
            return
        log.info("parent %s appeared", parent)
        self.missing_since_s = None
        self._reported = False
        for subscription in self._watches:
            self._hub.unsubscribe(subscription)
        self._watches.clear()

    def due_in_s(self) -> float | None:
        """Seconds until the report of a missing parent is due (None: none is)."""
        if self.missing_since_s is None or self._reported:
            return None
        return max(self.missing_since_s + self._wait_s - trio.current_time(), 0.0)

    def _watch_for_creation(self) -> None:
        names_by_dir: dict[str, set[str]] = {}
        for path in self._candidates:
            names_by_dir.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
        for directory, names in names_by_dir.items():

            def created(event: InotifyEvent, names: set[str] = names) -> None:
                if event.name in names:
                    self._on_created()

            try:
                subscription = self._hub.subscribe(directory, CREATION_EVENTS, created)
            except WatchError:
                continue  # the rescans look anyway
            if subscription is not None:
                self._watches.append(subscription)
