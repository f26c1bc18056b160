"""Finding container cgroups under --parent and following them as they come and go.

Directories that may hold containers are watched (IN_CREATE / IN_DELETE /
moves, which on cgroupfs are mkdir and rmdir of child cgroups). A new
directory is watched first and listed second, so a child created in between
is seen either way. A full rescan runs at start, after an inotify queue
overflow and every rescan interval; it also restarts guards that ended while
their cgroup stayed.

Nothing below a container is a container, and a pod's containers are its
direct children: discovery never watches or lists below those levels
(memguard.paths.may_hold_containers), nor more than MAX_DEPTH levels below the
parent (--match leaf). A directory that cannot be watched or listed (the
inotify watch limit, a path longer than PATH_MAX, no access, a loop) degrades
only itself: one warning per cause (at most every WARN_EVERY_S), a counter,
and while any directory is degraded the rescan runs every DEGRADED_RESCAN_S,
so containers there are still found (and guarded: their notifications do not
need inotify). The walk yields to trio every CHECKPOINT_EVERY_DIRS directories.
If the parent's filesystem itself is gone (cgroupfs unmounted), nothing can be
guarded: FatalError. A parent that does not exist (yet) is waited for
(memguard.guarding.parentwait), with a rescan every DEGRADED_RESCAN_S.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import trio

from memguard.backends.inotify_hub import InotifyHub, Subscription
from memguard.errors import FatalError, WatchError
from memguard.guarding.parentwait import ParentWait
from memguard.kernel.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    InotifyEvent,
)
from memguard.policy.paths import ContainerRef, leaf_ref, may_hold_containers, parse_container_path

log = logging.getLogger(__name__)

TREE_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR
DEGRADED_RESCAN_S = 5.0
MAX_DEPTH = 32  # levels below the parent; a kind node nested in docker needs ~10
CHECKPOINT_EVERY_DIRS = 64
WARN_EVERY_S = 10.0
MAX_RECORDED_PROBLEMS = 65536
TOO_DEEP = "too-deep"
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR})
_HINTS = {
    errno.ENOSPC: "the inotify watch limit (fs.inotify.max_user_watches) is reached",
    errno.ENAMETOOLONG: "the path is longer than PATH_MAX",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ELOOP: "too many symbolic links",
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "the system is out of file descriptors",
    errno.ENOMEM: "out of kernel memory",
}


class MatchMode(enum.Enum):
    CONTAINERS = "containers"  # the Kubernetes/docker path forms (memguard.paths)
    LEAF = "leaf"  # every directory without subdirectories (unknown layouts)


def short_path(path: str, max_chars: int = 160) -> str:
    """A path fit for one log line: its start and end, the middle elided."""
    if len(path) <= max_chars:
        return path
    keep = (max_chars - 3) // 2
    return f"{path[:keep]}...{path[-keep:]}"


def cause_name(code: int) -> str:
    return errno.errorcode.get(code, f"errno{code}")


class _Warner:
    """At most one warning per cause every WARN_EVERY_S; the rest are summed up."""

    def __init__(self) -> None:
        self._last_s: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warn(self, cause: str, message: str) -> None:
        now_s = trio.current_time()
        last_s = self._last_s.get(cause)
        if last_s is not None and now_s - last_s < WARN_EVERY_S:
            self._suppressed[cause] += 1
            return
        self._last_s[cause] = now_s
        more = self._suppressed.pop(cause, 0)
        suffix = f" ({more} more directories with this cause since then)" if more else ""
        log.warning("discovery: %s%s", message, suffix)


class Discovery:
    def __init__(
        self,
        root: str,
        match: MatchMode,
        hub: InotifyHub,
        on_found: Callable[[str, ContainerRef], None],
        on_lost: Callable[[str], None],
        mounted: Callable[[str], bool] = lambda path: True,
        alternatives: Sequence[str] = (),
        parent_wait_s: float = 60.0,
        on_parent_missing: Callable[[str, float], None] = lambda path, missing_s: None,
    ) -> None:
        """alternatives: other trees to guard should root not exist (--parent auto:
        the other kubelet driver's); on_parent_missing(root, seconds): called once
        when the parent was missing for parent_wait_s."""
        self.root = os.path.abspath(root)
        self._root_depth = self.root.rstrip("/").count("/")
        self._match = match
        self._hub = hub
        self._on_found = on_found
        self._on_lost = on_lost
        self._mounted = mounted  # the parent's filesystem is still the one we guard
        self._watched: dict[str, Subscription] = {}
        self.containers: dict[str, ContainerRef] = {}
        self.degraded: dict[str, str] = {}  # directory -> cause, retried by rescans
        self.too_deep: set[str] = set()
        self.errors: Counter[str] = Counter()  # cause -> directories that failed
        self._warner = _Warner()
        self._seen: set[str] | None = None  # during a rescan: every path it saw
        self._rescan_wanted = trio.Event()
        candidates = (self.root, *(os.path.abspath(path) for path in alternatives))
        self.parent_wait = ParentWait(
            candidates, hub, parent_wait_s, on_parent_missing, self.request_rescan
        )
        hub.on_overflow(self.request_rescan)

    def request_rescan(self) -> None:
        self._rescan_wanted.set()

    def next_rescan_s(self, rescan_interval_s: float) -> float:
        if self.degraded or self.parent_wait.missing_since_s is not None:
            rescan_interval_s = min(rescan_interval_s, DEGRADED_RESCAN_S)
        due_s = self.parent_wait.due_in_s()  # a missing parent's report
        return rescan_interval_s if due_s is None else min(rescan_interval_s, due_s)

    async def run(
        self,
        rescan_interval_s: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self.rescan()
        task_status.started()
        while True:
            with trio.move_on_after(self.next_rescan_s(rescan_interval_s)):
                await self._rescan_wanted.wait()
            self._rescan_wanted = trio.Event()
            await self.rescan()

    async def rescan(self) -> None:
        """Re-list the whole tree and reconcile watches and guards with it."""
        if not self._mounted(self.root):
            raise FatalError(
                f"the cgroup filesystem of --parent {self.root} is gone (unmounted?): "
                "nothing can be guarded"
            )
        present = self.parent_wait.present(self.root)
        if present != self.root:
            self._forget_under(self.root, include_self=True)
        if present is None:
            self.parent_wait.missing(self.root)
            return
        if present != self.root:
            self.root, self._root_depth = present, present.rstrip("/").count("/")
        self.parent_wait.found(self.root)
        seen: set[str] = set()
        self._seen = seen  # event handlers add what they find while the walk yields
        try:
            for count, path in enumerate(self._walk(self.root), start=1):
                seen.add(path)
                if count % CHECKPOINT_EVERY_DIRS == 0:
                    await trio.lowlevel.checkpoint()
        finally:
            self._seen = None
        self._reconcile(seen)

    def _reconcile(self, seen: set[str]) -> None:
        for path in [p for p in self._watched if p not in seen]:
            self._unwatch(path)
        for path in [p for p in self.containers if p not in seen]:
            self._lose(path)
        for path in [p for p in self.degraded if p not in seen]:
            del self.degraded[path]
        self.too_deep.intersection_update(seen)
        for path, ref in list(self.containers.items()):
            self._on_found(path, ref)  # idempotent: restarts guards that ended

    def _walk(self, top: str) -> Iterator[str]:
        """Watch and classify top and what may hold containers below it; yields the
        paths it visited (those still there)."""
        stack = [top]
        while stack:
            path = stack.pop()
            if self._match is MatchMode.CONTAINERS and path != self.root:
                ref = parse_container_path(path)
                if ref is not None:
                    self._found(path, ref)  # nothing below a container is one
                    yield path
                    continue
                if not may_hold_containers(path):
                    continue  # a pod's other children hold no containers
            if path.count("/") - self._root_depth > MAX_DEPTH:
                self._note_too_deep(path)
                yield path
                continue
            if not self._watch(path):
                continue  # removed while we walked
            children = self._subdirs(path)
            stack.extend(children)
            if self._match is MatchMode.LEAF:
                self._classify_leaf(path, has_children=bool(children))
            yield path

    def _watch(self, path: str) -> bool:
        """Watch path for children coming and going; False when it is gone.

        A path inotify refuses is degraded (found by rescans), not fatal."""
        if path in self._watched:
            return True
        try:
            subscription = self._hub.subscribe(path, TREE_EVENTS, self._handler(path))
        except WatchError as error:
            self._degrade(path, error.errno)
            return True  # listing it says whether it is still there
        if subscription is None:
            return False
        self._watched[path] = subscription
        if self.degraded.pop(path, None) is not None:
            log.info("discovery: %s is watched again", short_path(path))
        return True

    def _subdirs(self, path: str) -> list[str]:
        try:
            with os.scandir(path) as entries:
                return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError as error:
            if error.errno not in _GONE:
                self._degrade(path, error.errno or 0)
            return []

    def _degrade(self, path: str, code: int) -> None:
        cause = cause_name(code)
        self.errors[cause] += 1
        if path in self.degraded or len(self.degraded) >= MAX_RECORDED_PROBLEMS:
            return
        self.degraded[path] = cause
        if self._ancestor_degraded(path, cause):
            return  # one warning per subtree
        hint = _HINTS.get(code, os.strerror(code))
        self._warner.warn(
            cause,
            f"cannot watch or list {short_path(path)} ({cause}: {hint}); containers there "
            f"are found by rescans every {DEGRADED_RESCAN_S:.0f}s instead",
        )

    def _ancestor_degraded(self, path: str, cause: str) -> bool:
        parent = os.path.dirname(path)
        while len(parent) > len(self.root):
            if self.degraded.get(parent) == cause:
                return True
            parent = os.path.dirname(parent)
        return False

    def _note_too_deep(self, path: str) -> None:
        if path in self.too_deep or len(self.too_deep) >= MAX_RECORDED_PROBLEMS:
            return
        self.too_deep.add(path)
        self.errors[TOO_DEEP] += 1
        self._warner.warn(
            TOO_DEEP,
            f"not looking below {short_path(path)}: more than {MAX_DEPTH} levels below the parent",
        )

    def _found(self, path: str, ref: ContainerRef) -> None:
        if path not in self.containers:
            self.containers[path] = ref
            self._on_found(path, ref)

    def _classify_leaf(self, path: str, has_children: bool) -> None:
        if path == self.root or has_children:
            if path in self.containers:
                self._lose(path)
            return
        self._found(path, leaf_ref(path))

    def _handler(self, path: str) -> Callable[[InotifyEvent], None]:
        def handle(event: InotifyEvent) -> None:
            self._on_event(path, event)

        return handle

    def _on_event(self, path: str, event: InotifyEvent) -> None:
        if not event.mask & IN_ISDIR or not event.name:
            return
        child = os.path.join(path, event.name)
        if event.mask & (IN_CREATE | IN_MOVED_TO):
            for found in self._walk(child):
                if self._seen is not None:
                    self._seen.add(found)
        elif event.mask & (IN_DELETE | IN_MOVED_FROM):
            self._forget_under(child, include_self=True)
        if self._match is MatchMode.LEAF:
            self._classify_leaf(path, has_children=bool(self._subdirs(path)))

    def _forget_under(self, top: str, include_self: bool) -> None:
        prefix = top.rstrip("/") + "/"

        def under(path: str) -> bool:
            return path.startswith(prefix) or (include_self and path == top)

        for path in [p for p in self.containers if under(p)]:
            self._lose(path)
        for path in [p for p in self._watched if under(p)]:
            self._unwatch(path)
        for path in [p for p in self.degraded if under(p)]:
            del self.degraded[path]
        self.too_deep.difference_update([p for p in self.too_deep if under(p)])

    def _unwatch(self, path: str) -> None:
        subscription = self._watched.pop(path, None)
        if subscription is not None:
            self._hub.unsubscribe(subscription)

    def _lose(self, path: str) -> None:
        del self.containers[path]
        self._on_lost(path)

    def degraded_by_cause(self) -> Counter[str]:
        """Directories discovery cannot watch or list now, by cause."""
        counts = Counter(self.degraded.values())
        if self.too_deep:
            counts[TOO_DEEP] = len(self.too_deep)
        return counts
