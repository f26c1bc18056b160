"""The Kubernetes Event sink: every report becomes (or bumps) an Event.

The sink sits behind the report bus's bounded queue (drop-and-count when
full), so nothing here can slow a guard. Delivery resolves the pod from the
cache without waiting (an unknown pod is reported against the Node; only
before the first pod list completes does it wait, at most SYNC_WAIT_S), then
hands the post to the asyncio loop: retries with backoff on 5xx, 429, timeouts
and refused connections; a 4xx is logged once per status and reason (for at
most MAX_LOGGED_REJECTIONS of them), with the server's answer, and counted.

Time is bounded twice. On the loop, one report - bump or create, every
attempt, every backoff - gets DELIVERY_DEADLINE_S, then counts as timed out.
On trio, deliver() gives up after DELIVER_TIMEOUT_S (the sync wait, the
deadline and a grace) even if the loop itself is stuck, and raises
DeliveryTimeout: the bus counts it as a failure and moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from memguard.kube.aggregate import Aggregator, Bump, SeriesKey
from memguard.kube.bridge import AsyncioBridge
from memguard.kube.client import ApiError, KubeClient, every_tenfold
from memguard.kube.events import (
    Regarding,
    build_event,
    event_action,
    event_name,
    event_type,
    regarding_for,
    series_patch,
)
from memguard.kube.podcache import PodCache
from memguard.kube.pods import PodInfo
from memguard.reports.report import Report

log = logging.getLogger(__name__)

EVENTS_PATH = "/apis/events.k8s.io/v1/namespaces/{namespace}/events"
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # then give up: 5 attempts
EVENT_TIMEOUT_S = 5.0  # one attempt: connect, send, answer
# One report in all, on the loop. One request and its retries fit (5 x 5 s + 7.5 s
# = 32.5 s); a bump that ends in 404 is followed by a create (a 409 by another
# create): those chains are cut by the deadline, not by that arithmetic.
DELIVERY_DEADLINE_S = 35.0
SYNC_WAIT_S = 5.0
DELIVER_GRACE_S = 5.0
# The longest deliver() can take, whatever the loop does: shorter than the bus's own
# per-delivery timeout (memguard.reporting.DELIVERY_TIMEOUT_S), so this sink's
# bound, with its count and its message, acts first.
DELIVER_TIMEOUT_S = SYNC_WAIT_S + DELIVERY_DEADLINE_S + DELIVER_GRACE_S
MAX_LOGGED_REJECTIONS = 32  # distinct (status, reason) pairs logged; then counted only
MERGE_PATCH = "application/merge-patch+json"
SUBJECT_EXTRA = "subject"  # Report.extra: the SeriesKey's subject (see aggregate.SeriesKey)
# How a delivery ends (EventPoster.post; memguard_kube_events_total{outcome}).
OUTCOMES = ("created", "bumped", "rejected", "failed", "timed_out")


class DeliveryTimeout(Exception):
    """The asyncio loop did not finish a post in time (it may be stuck)."""


@dataclass(frozen=True)
class Delivery:
    report: Report
    regarding: Regarding
    wall_s: float
    monotonic_s: float


class EventPoster:
    """Creates Events and bumps their series; lives on the asyncio loop."""

    def __init__(
        self,
        client: KubeClient,
        node_name: str,
        *,
        attempt_timeout_s: float = EVENT_TIMEOUT_S,
        retry_backoff_s: Sequence[float] = RETRY_BACKOFF_S,
        deadline_s: float = DELIVERY_DEADLINE_S,
    ) -> None:
        self._client = client
        self._node = node_name
        self._attempt_timeout_s = attempt_timeout_s
        self._retry_backoff_s = tuple(retry_backoff_s)
        self.deadline_s = deadline_s
        self._aggregator = Aggregator()
        self.counts: Counter[str] = Counter()  # deliveries by outcome (OUTCOMES)
        self.retries = 0  # requests sent again (5xx, 429, timeouts, refused connections)
        self._logged_rejections: set[tuple[int, str]] = set()

    @property
    def series_evicted(self) -> int:
        """Event series forgotten because the series map was full (aggregate.MAX_SERIES)."""
        return self._aggregator.evicted

    async def post(self, delivery: Delivery) -> str:
        """The outcome: 'created', 'bumped', 'rejected' (4xx), 'failed' (gave up
        retrying, or an unexpected error) or 'timed_out' (DELIVERY_DEADLINE_S)."""
        kind = delivery.report.kind.value
        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._post(delivery)
        except TimeoutError:
            outcome = self._count("timed_out")
            if every_tenfold(self.counts[outcome]):
                log.warning(
                    "a %s event took over %.0fs: given up (%d so far)",
                    kind,
                    self.deadline_s,
                    self.counts[outcome],
                )
            return outcome
        except ApiError as error:
            if not error.retryable:
                self._log_rejection(error)
                return self._count("rejected")
            return self._gave_up(kind, str(error))
        except Exception as error:  # not the server's doing, still never the sink's end
            return self._gave_up(kind, f"{type(error).__name__}: {error}")

    async def _post(self, delivery: Delivery) -> str:
        report, regarding = delivery.report, delivery.regarding
        key = SeriesKey(
            regarding,
            report.kind.value,
            event_action(report),
            event_type(report.kind),
            report.extra.get(SUBJECT_EXTRA, ""),
        )
        plan = self._aggregator.plan(key, delivery.monotonic_s)
        if isinstance(plan, Bump):
            try:
                await self._bump(plan, delivery.wall_s)
                self._aggregator.bumped(key, plan.count, delivery.monotonic_s)
                return self._count("bumped")
            except ApiError as error:
                if error.status != 404:
                    raise
                self._aggregator.forget(key)  # expired by its TTL: start anew
        name = await self._create(delivery)
        self._aggregator.created(key, name, regarding.event_namespace, delivery.monotonic_s)
        return self._count("created")

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    def _gave_up(self, kind: str, why: str) -> str:
        outcome = self._count("failed")
        if every_tenfold(self.counts[outcome]):
            log.warning(
                "giving up on a %s event (%d so far): %s",
                kind,
                self.counts[outcome],
                " ".join(why.split())[:300],
            )
        return outcome

    def _log_rejection(self, error: ApiError) -> None:
        key = (error.status, error.reason)  # the reason is bounded by ApiError
        if key in self._logged_rejections:
            return
        if len(self._logged_rejections) >= MAX_LOGGED_REJECTIONS:
            return  # a server inventing reasons: counted (rejected), not logged
        self._logged_rejections.add(key)
        log.error(
            "the API server refused an event (%s %s; logged once): %s",
            error.status,
            error.reason,
            " ".join(error.body.split())[:2000],
        )
        if len(self._logged_rejections) == MAX_LOGGED_REJECTIONS:
            log.error(
                "%d kinds of refusal logged: further kinds are only counted",
                MAX_LOGGED_REJECTIONS,
            )

    async def _create(self, delivery: Delivery) -> str:
        regarding = delivery.regarding
        path = EVENTS_PATH.format(namespace=regarding.event_namespace)
        for _ in range(3):  # a name collision (409) gets a fresh name
            name = event_name(regarding, time.time_ns())
            body = build_event(delivery.report, regarding, self._node, delivery.wall_s, name)
            try:
                await self._with_retries("POST", path, body, None)
                return name
            except ApiError as error:
                if error.status != 409:
                    raise
        raise ApiError(409, "Conflict", "event name collisions")

    async def _bump(self, plan: Bump, wall_s: float) -> None:
        path = EVENTS_PATH.format(namespace=plan.namespace) + f"/{plan.name}"
        await self._with_retries("PATCH", path, series_patch(plan.count, wall_s), MERGE_PATCH)

    async def _with_retries(
        self, method: str, path: str, body: object, content_type: str | None
    ) -> None:
        backoff_s = self._retry_backoff_s
        for attempt in range(len(backoff_s) + 1):
            try:
                await self._client.send(
                    method,
                    path,
                    body=body,
                    content_type=content_type,
                    timeout_s=self._attempt_timeout_s,
                )
                return
            except ApiError as error:
                if not error.retryable or attempt == len(backoff_s):
                    raise
                self.retries += 1
                await asyncio.sleep(backoff_s[attempt])


class KubeEventSink:
    name = "kubernetes"

    def __init__(
        self,
        bridge: AsyncioBridge,
        poster: EventPoster,
        cache: PodCache,
        node_name: str,
        *,
        sync_wait_s: float = SYNC_WAIT_S,
        grace_s: float = DELIVER_GRACE_S,
    ) -> None:
        self._bridge = bridge
        self._poster = poster
        self._cache = cache
        self._node = node_name
        self._sync_wait_s = sync_wait_s
        self.deliver_timeout_s = sync_wait_s + poster.deadline_s + grace_s
        self.stalls = 0  # deliveries given up on the trio side (DeliveryTimeout)

    async def _pod(self, report: Report) -> PodInfo | None:
        uid = report.ref.pod_uid
        if uid is None:
            return None
        if not self._cache.synced.is_set():
            await trio.to_thread.run_sync(
                self._cache.synced.wait, self._sync_wait_s, abandon_on_cancel=True
            )
        return self._cache.lookup(uid)

    async def deliver(self, report: Report) -> None:
        """Post report as an Event; DeliveryTimeout after deliver_timeout_s, whatever
        the asyncio loop does (its task is cancelled, if the loop still runs)."""
        with trio.move_on_after(self.deliver_timeout_s):
            pod = await self._pod(report)
            regarding = regarding_for(report, pod, self._node)
            wall_s = report.wall_time_s or time.time()
            delivery = Delivery(report, regarding, wall_s, time.monotonic())
            await self._bridge.run(self._poster.post(delivery))
            return
        self.stalls += 1
        raise DeliveryTimeout(
            f"a {report.kind.value} event: no answer from the asyncio loop "
            f"within {self.deliver_timeout_s:.0f}s (is it stuck?)"
        )
