"""The node's pods, kept current with list + watch (runs on the asyncio loop).

list pods with fieldSelector spec.nodeName=<node> (in pages of LIST_PAGE_SIZE),
then watch from the list's resourceVersion; a watch that ends is resumed from
the last version seen; a 410 Gone (the version was compacted away) means list
again. Lookups by pod UID are a dict read from any thread and never wait: an
unknown pod is simply None.

Rules (issue 9, fault isolation): nothing the server does ends `run` - any
failure (an HTTP error, a refused or cut connection, a timeout, a malformed
answer, a surprise exception type) is one log line, a count in `errors` and a
backoff (1 s doubling to 30 s), and the cache carries on with what it has. The
first 410 after a working watch relists at once (compaction is routine); 410s
in a row back off like errors, as does a watch that ends within SHORT_WATCH_S
without an event (client-go's "very short watch"), so a broken server can
never make this loop spin. A watch that stays silent for WATCH_SILENCE_S (the
server's own timeout plus a margin) is a dead server: an error. At most
MAX_PODS pods are held; odd objects are skipped and counted (`ignored`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from memguard.kube.client import (
    REQUEST_TIMEOUT_S,
    ApiError,
    KubeClient,
    MalformedAnswer,
    every_tenfold,
)
from memguard.kube.pods import PodError, PodInfo, read_pod

log = logging.getLogger(__name__)

PODS_PATH = "/api/v1/pods"
MAX_PODS = 10_000  # a node runs at most a few hundred (kubelet's default max is 110)
LIST_PAGE_SIZE = 100  # pods per list answer: 8 MiB only if they averaged 80 KiB
WATCH_TIMEOUT_S = 300  # asked of the server: it ends a watch after this
WATCH_SILENCE_S = WATCH_TIMEOUT_S + 30  # no byte for this long: the server is gone
SHORT_WATCH_S = 1.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
MAX_VERSION_CHARS = 1024  # resourceVersion and continue tokens are opaque, but short
_WATCH_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class ShortWatch(Exception):
    """The watch ended at once without a single event."""


def _describe(error: Exception) -> str:
    text = str(error) if isinstance(error, ApiError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:300]


def _token(value: object) -> str | None:
    """A resourceVersion or continue token, if it is a sane string."""
    if isinstance(value, str) and 0 < len(value) <= MAX_VERSION_CHARS:
        return value
    return None


def _version_of(obj: dict[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    return _token(metadata.get("resourceVersion")) if isinstance(metadata, dict) else None


class PodCache:
    def __init__(
        self,
        client: KubeClient,
        node_name: str,
        *,
        max_pods: int = MAX_PODS,
        page_size: int = LIST_PAGE_SIZE,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
        silence_s: float = WATCH_SILENCE_S,
        backoff_s: Sequence[float] = BACKOFF_S,
    ) -> None:
        self._client = client
        self._node = node_name
        self._max_pods = max_pods
        self._page_size = page_size
        self._request_timeout_s = request_timeout_s
        self._watch_timeout_s = watch_timeout_s
        self._silence_s = silence_s
        self._backoff_s = tuple(backoff_s)
        self._pods: dict[str, PodInfo] = {}
        self.synced = threading.Event()  # set after the first successful list
        self.relists = 0
        self.errors = 0  # failed list/watch rounds, every cause (410 Gone excepted)
        self.expired = 0  # 410 Gone: listed again
        self.ignored = 0  # objects that are not usable pods or watch events
        self.over_cap = 0  # pods not held: the cache was full
        self.retrying_in_s = 0.0  # the backoff being waited out now (0: not backing off)
        self.resource_version: str | None = None
        self._progressed = False
        self._logged_kind: str | None = None  # of the last failure logged in this streak
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

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def _notify(self, pod_uid: str | None = None) -> None:
        for listener in self.listeners:
            try:
                listener(pod_uid)
            except Exception:
                log.exception("pod cache listener failed")
        self._wake()

    def subscribe(self, listener: Callable[[str | None], None]) -> None:
        """Call listener(pod_uid) on the cache's loop when a pod changes (None: all).

        Copy-on-write: any thread may (un)subscribe while the loop calls them."""
        self.listeners = [*self.listeners, listener]

    def unsubscribe(self, listener: Callable[[str | None], None]) -> None:
        self.listeners = [known for known in self.listeners if known is not listener]

    def container_view(
        self, pod_uid: str | None, container_id: str | None
    ) -> tuple[str, Mapping[str, str]] | None:
        """(container name, pod annotations) for memory QoS; None while unknown."""
        pod = self.lookup(pod_uid)
        container = pod.container(container_id) if pod is not None else None
        if pod is None or container is None:
            return None
        return container.name, pod.annotations

    def lookup(self, pod_uid: str | None) -> PodInfo | None:
        return None if pod_uid is None else self._pods.get(pod_uid)

    def uids(self) -> list[str]:
        """The uids of the pods held now (a snapshot: safe from any thread)."""
        return list(self._pods)

    def __len__(self) -> int:
        return len(self._pods)

    def _selector(self) -> list[tuple[str, str]]:
        return [("fieldSelector", f"spec.nodeName={self._node}")]

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled; never raises for anything the server does."""
        streak = 0  # failed rounds since the last working watch
        while True:
            self._progressed = False
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                failure: Exception | None = None
            except Exception as error:  # all of them: see the module's rules
                failure = error
            if self._progressed:
                if streak:
                    log.info("pod cache: watching again after %d failed attempts", streak)
                streak, self._logged_kind = 0, None
            if failure is None:
                continue
            self.retrying_in_s = self._failed(failure, streak)
            streak += 1
            self._wake()
            try:
                await asyncio.sleep(self.retrying_in_s)
            finally:
                self.retrying_in_s = 0.0

    def _failed(self, error: Exception, streak: int) -> float:
        """Count and log one failed round; the backoff before the next."""
        backoff_s = self._backoff_s[min(streak, len(self._backoff_s) - 1)]
        if isinstance(error, Gone) or (isinstance(error, ApiError) and error.status == 410):
            self.expired += 1
            self.resource_version = None
            if streak == 0:
                log.info("pod watch expired (410 Gone): listing pods again")
                return 0.0
            what = "410 Gone again"
        else:
            self.errors += 1
            what = _describe(error)
            if isinstance(error, ShortWatch) and streak == 0:
                return 0.0
        kind = type(error).__name__
        if kind != self._logged_kind or every_tenfold(streak + 1):
            self._logged_kind = kind
            log.warning(
                "pod cache: %s; retrying in %gs (%d failures in a row, %d errors in all)",
                what,
                backoff_s,
                streak + 1,
                self.errors,
            )
        return backoff_s

    # --- list -----------------------------------------------------------------------------

    async def _list(self) -> None:
        pods: dict[str, PodInfo] = {}
        version: str | None = None
        token: str | None = None
        for _ in range(self._max_pods // self._page_size + 2):
            query = [*self._selector(), ("limit", str(self._page_size))]
            if token:
                query.append(("continue", token))
            answer = await self._client.request(
                "GET", PODS_PATH, query=query, timeout_s=self._request_timeout_s
            )
            items, metadata = answer.get("items") or [], answer.get("metadata") or {}
            if not isinstance(items, list) or not isinstance(metadata, dict):
                raise MalformedAnswer(200, "a pod list without an items list and metadata")
            for item in items:
                self._store(pods, item)
            version = _token(metadata.get("resourceVersion"))
            token = _token(metadata.get("continue"))
            if token is None or len(pods) >= self._max_pods:
                break
        else:
            raise MalformedAnswer(200, "a pod list with more pages than pods fit in the cache")
        self._pods = pods  # one atomic swap: readers see the old or the new map
        self.resource_version = version
        self.relists += 1
        if not self.synced.is_set():
            log.info("pod cache synced: %d pods on node %s", len(pods), self._node)
        self.synced.set()
        self._notify()

    def _store(self, pods: dict[str, PodInfo], obj: object) -> PodInfo | None:
        """Put one raw pod into pods (within the cap); the PodInfo, None if not held."""
        try:
            info = read_pod(obj)
        except PodError as error:
            self._ignore(f"a pod that cannot be used ({error})")
            return None
        if info.uid not in pods and len(pods) >= self._max_pods:
            self.over_cap += 1
            self._wake()
            if every_tenfold(self.over_cap):
                log.warning(
                    "pod cache full (%d pods): %d pods not held (no Events about them)",
                    self._max_pods,
                    self.over_cap,
                )
            return None
        pods[info.uid] = info
        return info

    def _ignore(self, what: str) -> None:
        self.ignored += 1
        self._wake()
        if every_tenfold(self.ignored):
            log.warning("pod cache: ignoring %s; %d ignored so far", what[:300], self.ignored)

    # --- watch ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        query = [
            *self._selector(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self._watch_timeout_s)),
        ]
        if self.resource_version:
            query.append(("resourceVersion", self.resource_version))
        loop = asyncio.get_running_loop()
        started_s = loop.time()
        try:
            stream = self._client.stream(PODS_PATH, query, self._silence_s)
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    self._apply(event)
                    self._progressed = True
        finally:
            self._progressed |= loop.time() - started_s >= SHORT_WATCH_S
        if not self._progressed:
            raise ShortWatch("the pod watch ended at once without an event")

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object")
        if kind == "ERROR":
            status = obj if isinstance(obj, dict) else {}
            code = status.get("code")
            if code == 410:
                raise Gone
            raise ApiError(
                code if type(code) is int else 0,
                str(status.get("reason") or "ERROR event"),
                str(status.get("message") or ""),
            )
        if kind not in _WATCH_TYPES or not isinstance(obj, dict):
            self._ignore(f"a watch event of type {str(kind)[:40]!r}")
            return
        version = _version_of(obj)
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        if kind == "DELETED":
            uid = self._delete(obj)
        else:
            info = self._store(self._pods, obj)
            uid = info.uid if info else None
        self.resource_version = version or self.resource_version
        if uid is not None:
            self._notify(uid)

    def _delete(self, obj: dict[str, Any]) -> str | None:
        try:
            uid = read_pod(obj).uid
        except PodError as error:
            self._ignore(f"a deleted pod that cannot be used ({error})")
            return None
        self._pods.pop(uid, None)
        return uid
