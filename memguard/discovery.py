"""Finding container cgroups under --parent and following them as they come and go.

Every directory of the tree is watched (IN_CREATE / IN_DELETE / moves, which on
cgroupfs are mkdir and rmdir of child cgroups). A new directory is watched
first and listed second, so a child created in between is seen either way.
A full rescan runs at start, after an inotify queue overflow and every
rescan interval; it also restarts guards that ended while their cgroup stayed.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Iterator

import trio

from memguard.kernel.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    InotifyEvent,
)
from memguard.paths import ContainerRef, leaf_ref, parse_container_path
from memguard.watch import InotifyHub, Subscription

log = logging.getLogger(__name__)

TREE_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO


class MatchMode(enum.Enum):
    CONTAINERS = "containers"  # the Kubernetes/docker path forms (memguard.paths)
    LEAF = "leaf"  # every directory without subdirectories (unknown layouts)


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


class Discovery:
    def __init__(
        self,
        root: str,
        match: MatchMode,
        hub: InotifyHub,
        on_found: Callable[[str, ContainerRef], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.root = os.path.abspath(root)
        self._match = match
        self._hub = hub
        self._on_found = on_found
        self._on_lost = on_lost
        self._watched: dict[str, Subscription] = {}
        self.containers: dict[str, ContainerRef] = {}
        self._rescan_wanted = trio.Event()
        self._root_missing_logged = False
        hub.on_overflow(self.request_rescan)

    def request_rescan(self) -> None:
        self._rescan_wanted.set()

    async def run(
        self,
        rescan_interval_s: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.rescan()
        task_status.started()
        while True:
            with trio.move_on_after(rescan_interval_s):
                await self._rescan_wanted.wait()
            self._rescan_wanted = trio.Event()
            self.rescan()

    def rescan(self) -> None:
        """Re-list the whole tree and reconcile watches and guards with it."""
        if not os.path.isdir(self.root):
            if not self._root_missing_logged:
                log.warning("parent %s does not exist (yet): waiting for it", self.root)
                self._root_missing_logged = True
            self._forget_under(self.root, include_self=True)
            return
        if self._root_missing_logged:
            log.info("parent %s appeared", self.root)
            self._root_missing_logged = False
        seen = set(self._add_tree(self.root))
        for path in [p for p in self._watched if p not in seen]:
            self._unwatch(path)
        for path in [p for p in self.containers if p not in seen]:
            self._lose(path)
        for path, ref in list(self.containers.items()):
            self._on_found(path, ref)  # idempotent: restarts guards that ended

    def _add_tree(self, top: str) -> Iterator[str]:
        """Watch and classify top and everything below it; yields the paths."""
        stack = [top]
        while stack:
            path = stack.pop()
            if path not in self._watched:
                subscription = self._hub.subscribe(path, TREE_EVENTS, self._handler(path))
                if subscription is None:
                    continue  # removed while we walked
                self._watched[path] = subscription
            children = _subdirs(path)
            stack.extend(children)
            self._classify(path, has_children=bool(children))
            yield path

    def _classify(self, path: str, has_children: bool) -> None:
        ref = self._ref_for(path, has_children)
        if ref is None:
            if path in self.containers:
                self._lose(path)
            return
        if path not in self.containers:
            self.containers[path] = ref
            self._on_found(path, ref)

    def _ref_for(self, path: str, has_children: bool) -> ContainerRef | None:
        if path == self.root:
            return None
        if self._match is MatchMode.LEAF:
            return None if has_children else leaf_ref(path)
        return parse_container_path(path)

    def _handler(self, path: str) -> Callable[[InotifyEvent], None]:
        def handle(event: InotifyEvent) -> None:
            self._on_event(path, event)

        return handle

    def _on_event(self, path: str, event: InotifyEvent) -> None:
        if not event.mask & IN_ISDIR or not event.name:
            return
        child = os.path.join(path, event.name)
        if event.mask & (IN_CREATE | IN_MOVED_TO):
            for _ in self._add_tree(child):
                pass
        elif event.mask & (IN_DELETE | IN_MOVED_FROM):
            self._forget_under(child, include_self=True)
        if self._match is MatchMode.LEAF:
            self._classify(path, has_children=bool(_subdirs(path)))

    def _forget_under(self, top: str, include_self: bool) -> None:
        prefix = top.rstrip("/") + "/"

        def under(path: str) -> bool:
            return path.startswith(prefix) or (include_self and path == top)

        for path in [p for p in self.containers if under(p)]:
            self._lose(path)
        for path in [p for p in self._watched if under(p)]:
            self._unwatch(path)

    def _unwatch(self, path: str) -> None:
        subscription = self._watched.pop(path, None)
        if subscription is not None:
            self._hub.unsubscribe(subscription)

    def _lose(self, path: str) -> None:
        del self.containers[path]
        self._on_lost(path)
