"""The Kubernetes Event sink: every report becomes (or bumps) an Event.

The sink sits behind the report bus's bounded queue (drop-and-count when
full), so nothing here can slow a guard. Delivery resolves the pod from the
cache without waiting (an unknown pod is reported against the Node; only
before the first pod list completes does it wait, at most SYNC_WAIT_S), then
hands the post to the asyncio loop: retries with backoff on 5xx, 429, timeouts
and refused connections; a 4xx is logged once per status and reason, with the
server's answer, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass

import trio

from memguard.kube.aggregate import Aggregator, Bump, SeriesKey
from memguard.kube.bridge import AsyncioBridge
from memguard.kube.client import ApiError, KubeClient
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
from memguard.report import Report

log = logging.getLogger(__name__)

EVENTS_PATH = "/apis/events.k8s.io/v1/namespaces/{namespace}/events"
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # then give up: 5 attempts
EVENT_TIMEOUT_S = 5.0
SYNC_WAIT_S = 5.0
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Delivery:
    report: Report
    regarding: Regarding
    wall_s: float
    monotonic_s: float


class EventPoster:
    """Creates Events and bumps their series; lives on the asyncio loop."""

    def __init__(self, client: KubeClient, node_name: str) -> None:
        self._client = client
        self._node = node_name
        self._aggregator = Aggregator()
        self.counts: Counter[str] = Counter()
        self._logged_rejections: set[tuple[int, str]] = set()

    async def post(self, delivery: Delivery) -> str:
        """'created', 'bumped', 'rejected' (4xx) or 'failed' (gave up retrying)."""
        report, regarding = delivery.report, delivery.regarding
        key = SeriesKey(regarding, report.kind.value, event_action(report), event_type(report.kind))
        plan = self._aggregator.plan(key, delivery.monotonic_s)
        try:
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
        except ApiError as error:
            if error.retryable:
                log.warning("giving up on a %s event after retries: %s", report.kind.value, error)
                return self._count("failed")
            self._log_rejection(error)
            return self._count("rejected")

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    def _log_rejection(self, error: ApiError) -> None:
        key = (error.status, error.reason)
        if key not in self._logged_rejections:
            self._logged_rejections.add(key)
            log.error(
                "the API server refused an event (%s %s; logged once): %s",
                error.status,
                error.reason,
                error.body[:2000],
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
        for attempt in range(len(RETRY_BACKOFF_S) + 1):
            try:
                await self._client.request(
                    method, path, body=body, content_type=content_type, timeout_s=EVENT_TIMEOUT_S
                )
                return
            except ApiError as error:
                if not error.retryable or attempt == len(RETRY_BACKOFF_S):
                    raise
                self.counts["retries"] += 1
                await asyncio.sleep(RETRY_BACKOFF_S[attempt])


class KubeEventSink:
    name = "kubernetes"

    def __init__(
        self, bridge: AsyncioBridge, poster: EventPoster, cache: PodCache, node_name: str
    ) -> None:
        self._bridge = bridge
        self._poster = poster
        self._cache = cache
        self._node = node_name

    async def _pod(self, report: Report) -> PodInfo | None:
        uid = report.ref.pod_uid
        if uid is None:
            return None
        if not self._cache.synced.is_set():
            await trio.to_thread.run_sync(
                self._cache.synced.wait, SYNC_WAIT_S, abandon_on_cancel=True
            )
        return self._cache.lookup(uid)

    async def deliver(self, report: Report) -> None:
        pod = await self._pod(report)
        regarding = regarding_for(report, pod, self._node)
        wall_s = report.wall_time_s or time.time()
        await self._bridge.run(
            self._poster.post(Delivery(report, regarding, wall_s, time.monotonic()))
        )
