"""One inotify instance shared by discovery and every guard.

inotify returns the same watch descriptor for the same inode and replaces its
mask, so the hub keeps, per wd, the list of subscribers and the union of their
masks, and delivers each event to the subscribers whose mask matches.
IN_Q_OVERFLOW (events were lost) goes to every overflow handler.

A handler that raises fails alone: the hub counts it (component "inotify"),
logs it and delivers the event to the other subscribers. subscribe() raises
WatchError when inotify cannot watch that one path (watch limit, PATH_MAX):
the caller decides how to do without.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from memguard.components import ComponentStatus
from memguard.kernel.inotify import IN_IGNORED, IN_Q_OVERFLOW, Inotify, InotifyEvent

log = logging.getLogger(__name__)

EventHandler = Callable[[InotifyEvent], None]
COMPONENT = "inotify"


@dataclass(eq=False)
class Subscription:
    path: str
    mask: int
    handler: EventHandler
    wd: int = -1


@dataclass
class _Watch:
    path: str
    subscriptions: list[Subscription] = field(default_factory=list)

    @property
    def mask(self) -> int:
        union = 0
        for subscription in self.subscriptions:
            union |= subscription.mask
        return union


class InotifyHub:
    def __init__(self, status: ComponentStatus | None = None) -> None:
        self._status = status or ComponentStatus()
        self._status.register(COMPONENT)
        self._inotify = Inotify()
        self._watches: dict[int, _Watch] = {}
        self._wd_by_path: dict[str, int] = {}
        self._overflow_handlers: list[Callable[[], None]] = []

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def __enter__(self) -> InotifyHub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._inotify.close()
        self._watches.clear()
        self._wd_by_path.clear()

    def on_overflow(self, handler: Callable[[], None]) -> None:
        self._overflow_handlers.append(handler)

    def subscribe(self, path: str, mask: int, handler: EventHandler) -> Subscription | None:
        """Deliver events matching mask on path to handler; None if path is gone."""
        subscription = Subscription(path, mask, handler)
        existing = self._find(path)
        new_mask = mask | (existing.mask if existing else 0)
        wd = self._inotify.add_watch(path, new_mask)
        if wd is None:
            return None
        watch = self._watches.setdefault(wd, _Watch(path))
        self._wd_by_path.pop(watch.path, None)
        watch.path = path
        self._wd_by_path[path] = wd
        subscription.wd = wd
        watch.subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        watch = self._watches.get(subscription.wd)
        if watch is None or subscription not in watch.subscriptions:
            return
        watch.subscriptions.remove(subscription)
        if watch.subscriptions:
            return
        self._forget(subscription.wd)
        if not self._inotify.closed:
            self._inotify.rm_watch(subscription.wd)

    def _find(self, path: str) -> _Watch | None:
        wd = self._wd_by_path.get(path)
        return None if wd is None else self._watches.get(wd)

    def _forget(self, wd: int) -> None:
        watch = self._watches.pop(wd, None)
        if watch is not None and self._wd_by_path.get(watch.path) == wd:
            del self._wd_by_path[watch.path]

    def dispatch(self, event: InotifyEvent) -> None:
        if event.mask & IN_Q_OVERFLOW:
            log.warning("inotify queue overflowed: rescanning")
            for overflow_handler in list(self._overflow_handlers):
                overflow_handler()
            return
        watch = self._watches.get(event.wd)
        if watch is None:
            return
        for subscription in list(watch.subscriptions):
            if event.mask & subscription.mask:
                try:
                    subscription.handler(event)
                except Exception as error:
                    self._status.failed(COMPONENT, error, f"event on {subscription.path} skipped")
        if event.mask & IN_IGNORED:
            self._forget(event.wd)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch events until cancelled."""
        task_status.started()
        while True:
            for event in await self._inotify.read():
                self.dispatch(event)
