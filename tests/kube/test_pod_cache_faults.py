"""The pod cache against a hostile or broken API server: bounded, counted, never ended.

Most tests use the emulated API server (real HTTP through kubernetes-asyncio and
aiohttp); the surprise-exception and backoff tests fake memguard's own client
boundary (KubeClient) to raise what no emulator answer can provoke.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import trio

from memguard.kube.bridge import AsyncioBridge
from memguard.kube.client import MAX_RESPONSE_BYTES, MAX_WATCH_LINE_BYTES, KubeClient
from memguard.kube.connection import Connection
from memguard.kube.podcache import PodCache
from testing.kube.emulator import PODS, KubeEmulator, make_pod
from testing.waits import bounded, within

NODE = "node-a"
FAST = {"backoff_s": (0.01,)}


@asynccontextmanager
async def running_cache(
    client_for: Callable[[], Any], **settings: Any
) -> AsyncIterator[tuple[AsyncioBridge, PodCache]]:
    """A PodCache running on its own asyncio bridge until the block ends."""
    bridge = AsyncioBridge("test-pod-cache")
    bridge.start()
    try:
        client = await bounded(bridge.run(client_for()), "the pod cache's client")
        cache = PodCache(client, NODE, **settings)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bridge.run, cache.run())
                try:
                    yield bridge, cache
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), within("the pod cache's client closed"):
                await bridge.run(client.close())
    finally:
        bridge.stop()


def emulated(kubeconfig: pathlib.Path | None) -> Callable[[], Any]:
    return lambda: KubeClient.connect(Connection(False, str(kubeconfig)))


async def until(
    bridge: AsyncioBridge, cache: PodCache, what: str, ok: Callable[[PodCache], bool]
) -> None:
    with within(what):
        await bridge.run(cache.wait_until(ok))


def pods(kube: KubeEmulator, count: int, node: str = NODE) -> list[str]:
    uids = [str(uuid.uuid4()) for _ in range(count)]
    for uid in uids:
        kube.create_pod(make_pod("shop", f"{node}-{uid[:8]}", uid=uid, node_name=node))
    return uids


async def test_pods_are_listed_in_pages(kube: KubeEmulator) -> None:
    uids = pods(kube, 5)
    pods(kube, 1, node="node-b")
    async with running_cache(emulated(kube.kubeconfig), page_size=2) as (bridge, cache):
        await until(bridge, cache, "the first list", lambda c: c.synced.is_set())
        assert all(cache.lookup(uid) is not None for uid in uids)
        assert len(cache) == 5
    assert kube.request_count("list", PODS) == 3  # 2 + 2 + 1


async def test_the_cache_holds_at_most_max_pods(kube: KubeEmulator) -> None:
    pods(kube, 5)
    async with running_cache(emulated(kube.kubeconfig), max_pods=3) as (bridge, cache):
        await until(bridge, cache, "the first list", lambda c: c.synced.is_set())
        assert (len(cache), cache.over_cap) == (3, 2)
        with within("the pod watch"):
            await kube.wait_watching(PODS)
        late = pods(kube, 2)
        await until(bridge, cache, "two more pods refused", lambda c: c.over_cap == 4)
        assert len(cache) == 3
        assert all(cache.lookup(uid) is None for uid in late)
        assert cache.errors == 0


async def test_malformed_and_oversized_lists_are_errors_then_the_cache_syncs(
    kube: KubeEmulator,
) -> None:
    uid = pods(kube, 1)[0]
    for body in (
        b"<html>502 Bad Gateway</html>",
        b'[{"kind": "PodList"}]',
        b'{"items": {"not": "a list"}, "metadata": {}}',
        b'{"items": []}' + b" " * MAX_RESPONSE_BYTES,  # one byte over the bound
    ):
        kube.answer("list", PODS, body)
    async with running_cache(emulated(kube.kubeconfig), **FAST) as (bridge, cache):
        await until(bridge, cache, "the list after 4 bad ones", lambda c: c.synced.is_set())
        assert cache.errors == 4
        assert cache.lookup(uid) is not None


async def test_odd_watch_events_are_ignored_and_garbage_is_an_error(kube: KubeEmulator) -> None:
    odd = [
        {"type": "ADDED", "object": [1, 2]},
        {"type": "SURPRISE", "object": {}},
        {"type": "MODIFIED", "object": {"metadata": {"name": 5, "uid": ["x"]}}},
        {"type": "ERROR"},  # no status: an error, not a traceback
    ]
    kube.answer("watch", PODS, b"".join(json.dumps(e).encode() + b"\n" for e in odd[:3]))
    kube.answer("watch", PODS, json.dumps(odd[3]).encode() + b"\n")
    kube.answer("watch", PODS, b"not json\n")
    kube.answer("watch", PODS, b"[]\n")
    kube.answer("watch", PODS, b"x" * (MAX_WATCH_LINE_BYTES + 1))
    async with running_cache(emulated(kube.kubeconfig), **FAST) as (bridge, cache):
        await until(bridge, cache, "4 bad watches", lambda c: c.errors == 4)
        assert cache.ignored == 3
        with within("the pod watch"):
            await kube.wait_watching(PODS)
        uid = pods(kube, 1)[0]
        await until(bridge, cache, "the watch to follow again", lambda c: c.lookup(uid) is not None)
        assert cache.errors == 4


async def test_a_silent_watch_is_noticed(kube: KubeEmulator) -> None:
    # The server ends a healthy watch after timeoutSeconds (1 s); this one sends
    # nothing, not even headers: after silence_s the cache calls it dead.
    kube.fail("watch", PODS, status=None, delay_s=60)
    settings = {"watch_timeout_s": 1, "silence_s": 1.5, **FAST}
    async with running_cache(emulated(kube.kubeconfig), **settings) as (bridge, cache):
        await until(bridge, cache, "the silent watch to fail", lambda c: c.errors == 1)
        with within("the pod watch"):
            await kube.wait_watching(PODS)
        uid = pods(kube, 1)[0]
        await until(bridge, cache, "the next watch to follow", lambda c: c.lookup(uid) is not None)


# --- memguard's client boundary, faked ------------------------------------------------------


class FakeClient(KubeClient):
    """request() raises the next scripted exception, then lists nothing; stream()
    runs `watch`."""

    def __init__(
        self, raises: list[BaseException], watch: Callable[[], AsyncGenerator[dict[str, Any], None]]
    ) -> None:
        super().__init__(api=None)
        self._raises = raises
        self._watch = watch

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        if self._raises:
            raise self._raises.pop(0)
        return {"metadata": {"resourceVersion": "1"}, "items": []}

    def stream(
        self, path: str, query: list[tuple[str, str]], read_timeout_s: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        return self._watch()

    async def close(self) -> None:
        pass


async def quiet() -> AsyncGenerator[dict[str, Any], None]:
    await asyncio.Event().wait()
    yield {}  # pragma: no cover


async def gone() -> AsyncGenerator[dict[str, Any], None]:
    yield {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}


async def nothing() -> AsyncGenerator[dict[str, Any], None]:
    events: list[dict[str, Any]] = []  # a watch that ends at once
    for event in events:
        yield event


def fake(raises: list[BaseException], watch: Callable[[], Any]) -> Callable[[], Any]:
    async def connect() -> KubeClient:
        return FakeClient(raises, watch)

    return connect


async def test_any_exception_type_is_counted_and_the_cache_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    surprises: list[BaseException] = [
        KeyError("items"),
        TimeoutError(),
        aiohttp.ClientPayloadError("cut"),
        json.JSONDecodeError("Expecting value", "<html>", 0),
        RuntimeError("Session is closed"),
        RuntimeError("Session is closed"),
    ]
    async with running_cache(fake(surprises, quiet), **FAST) as (bridge, cache):
        await until(bridge, cache, "a list after 6 failures", lambda c: c.synced.is_set())
    assert cache.errors == 6
    warnings = [r.getMessage() for r in caplog.records if r.name == "memguard.kube.podcache"]
    failures = [w for w in warnings if "retrying in" in w]
    assert len(failures) == 5  # one line per new kind of failure in a row
    assert all("\n" not in w for w in warnings)


async def test_410s_in_a_row_back_off() -> None:
    async with running_cache(fake([], gone), backoff_s=(3600.0, 7200.0)) as (bridge, cache):
        await until(bridge, cache, "a backoff", lambda c: c.retrying_in_s > 0)
        # the first 410 relisted at once; the second waits the second step
        assert (cache.expired, cache.relists, cache.retrying_in_s) == (2, 2, 7200.0)
        assert cache.errors == 0


async def test_watches_that_end_at_once_back_off() -> None:
    async with running_cache(fake([], nothing), backoff_s=(3600.0, 7200.0)) as (bridge, cache):
        await until(bridge, cache, "a backoff", lambda c: c.retrying_in_s > 0)
        assert (cache.errors, cache.relists, cache.retrying_in_s) == (2, 1, 7200.0)
