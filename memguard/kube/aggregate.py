"""Repeated events become a series instead of a flood (pure).

Like client-go's events/v1 recorder: events with the same key (the object
they are about, reason, action and type) seen again within the window are not
created anew; the first Event's series is bumped (count, lastObservedTime).
On events.k8s.io/v1 only `series` may change after creation, so the note keeps
the numbers of the first occurrence; the log has every one. The window is
measured from the last occurrence (10 minutes, as client-go's
EventCorrelator), and `now_s` is passed in: no clock here.

At most MAX_SERIES series are remembered (a node has a few hundred pods and a
handful of reasons each); beyond, the one seen longest ago is forgotten, and
its next occurrence simply creates a new Event.
"""

from __future__ import annotations

from dataclasses import dataclass

from memguard.kube.events import Regarding

WINDOW_S = 600.0
MAX_SERIES = 4096


@dataclass(frozen=True)
class SeriesKey:
    regarding: Regarding
    reason: str
    action: str
    type: str
    # What tells apart reports of one reason about one object that are not the same
    # thing happening again (a bad annotation: its key and value); "" for the rest.
    subject: str = ""


@dataclass(frozen=True)
class Create:
    """Post a new Event."""


@dataclass(frozen=True)
class Bump:
    """Patch the series of an existing Event."""

    name: str
    namespace: str
    count: int


@dataclass
class _Series:
    name: str
    namespace: str
    count: int
    last_seen_s: float


class Aggregator:
    def __init__(self, window_s: float = WINDOW_S, max_series: int = MAX_SERIES) -> None:
        self._window_s = window_s
        self._max_series = max_series
        self._series: dict[SeriesKey, _Series] = {}  # least recently seen first
        self.evicted = 0

    def plan(self, key: SeriesKey, now_s: float) -> Create | Bump:
        self._expire(now_s)
        series = self._series.get(key)
        if series is None:
            return Create()
        return Bump(series.name, series.namespace, series.count + 1)

    def created(self, key: SeriesKey, name: str, namespace: str, now_s: float) -> None:
        self._series.pop(key, None)
        while len(self._series) >= self._max_series:
            del self._series[next(iter(self._series))]  # the one seen longest ago
            self.evicted += 1
        self._series[key] = _Series(name, namespace, 1, now_s)

    def bumped(self, key: SeriesKey, count: int, now_s: float) -> None:
        series = self._series.pop(key, None)
        if series is not None:
            series.count, series.last_seen_s = count, now_s
            self._series[key] = series  # now the most recently seen

    def forget(self, key: SeriesKey) -> None:
        """The Event is gone (expired by its TTL): the next one is created anew."""
        self._series.pop(key, None)

    def __len__(self) -> int:
        return len(self._series)

    def _expire(self, now_s: float) -> None:
        stale = [k for k, s in self._series.items() if now_s - s.last_seen_s > self._window_s]
        for key in stale:
            del self._series[key]
