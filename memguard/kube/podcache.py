"""The node's pods, kept current with list + watch (runs on the asyncio loop).

list pods with fieldSelector spec.nodeName=<node>, then watch from the list's
resourceVersion; a watch that ends is resumed from the last version seen; a
410 Gone (the version was compacted away) means list again; any other error
backs off (1 s doubling to 30 s) and resumes. Lookups by pod UID are a dict
read from any thread and never wait: an unknown pod is simply None.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from memguard.kube.client import ApiError, KubeClient
from memguard.kube.pods import PodInfo, parse_pod

log = logging.getLogger(__name__)

PODS_PATH = "/api/v1/pods"
WATCH_TIMEOUT_S = 300
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class PodCache:
    def __init__(self, client: KubeClient, node_name: str) -> None:
        self._client = client
        self._node = node_name
        self._pods: dict[str, PodInfo] = {}
        self.synced = threading.Event()  # set after the first successful list
        self.relists = 0
        self.errors = 0
        self.resource_version: str | None = None
        self._changed: asyncio.Event | None = None  # created on the loop, on demand
        # Called on the cache's loop with a changed pod's uid (None: all, after a list);
        # they must not block (memory QoS hands the uid over to trio).
        self.listeners: list[Callable[[str | None], None]] = []

    async def wait_until(self, predicate: Callable[[PodCache], bool]) -> None:
        """Park (on the cache's loop) until predicate(self) holds."""
        while not predicate(self):
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _notify(self, pod_uid: str | None = None) -> None:
        for listener in self.listeners:
            try:
                listener(pod_uid)
            except Exception:
                log.exception("pod cache listener failed")
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def lookup(self, pod_uid: str | None) -> PodInfo | None:
        return None if pod_uid is None else self._pods.get(pod_uid)

    def __len__(self) -> int:
        return len(self._pods)

    def _selector(self) -> list[tuple[str, str]]:
        return [("fieldSelector", f"spec.nodeName={self._node}")]

    async def run(self) -> None:
        """List and watch until cancelled; never raises for API trouble."""
        attempt = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                attempt = 0
            except Gone:
                log.info("pod watch expired (410 Gone): listing pods again")
                self.resource_version = None
            except ApiError as error:
                if error.status == 410:
                    log.info("pod watch expired (410 Gone): listing pods again")
                    self.resource_version = None
                    continue
                self.errors += 1
                delay_s = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                log.warning("pod cache: %s; retrying in %.0fs", error, delay_s)
                attempt += 1
                await asyncio.sleep(delay_s)

    async def _list(self) -> None:
        answer = await self._client.request("GET", PODS_PATH, query=self._selector())
        pods = {}
        for item in answer.get("items") or []:
            info = parse_pod(item)
            if info is not None:
                pods[info.uid] = info
        self._pods = pods  # one atomic swap: readers see the old or the new map
        self.resource_version = (answer.get("metadata") or {}).get("resourceVersion")
        self.relists += 1
        if not self.synced.is_set():
            log.info("pod cache synced: %d pods on node %s", len(pods), self._node)
        self.synced.set()
        self._notify()

    async def _watch(self) -> None:
        query = [
            *self._selector(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_TIMEOUT_S)),
        ]
        if self.resource_version:
            query.append(("resourceVersion", self.resource_version))
        async for event in self._client.stream(PODS_PATH, query, WATCH_TIMEOUT_S + 30):
            self._apply(event)

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise ApiError(int(obj.get("code") or 0), str(obj.get("reason")), str(obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = version
        if kind == "BOOKMARK":
            return
        info = parse_pod(obj)
        if info is None:
            return
        if kind == "DELETED":
            self._pods.pop(info.uid, None)
        else:
            self._pods[info.uid] = info
        self._notify(info.uid)
