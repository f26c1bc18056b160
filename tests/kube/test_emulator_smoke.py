"""The emulated API server, driven by kubernetes-asyncio on its own loop thread.

These pin what memguard's Kubernetes code will rely on: kubeconfig loading,
list with fieldSelector, list+watch from a resourceVersion, 410 Gone,
events.k8s.io/v1 and core/v1 Event create/patch with the server's validation,
injected 500s, delays and an unreachable server. The last test pins the kmock
0.8 quirks that testing/kube/apiserver.py exists to fix: if kmock changes them,
it fails and NOTES.md needs a look.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import aiohttp
import kmock
import pytest
import trio
from kubernetes_asyncio import client, watch

from testing.kube import apirules
from testing.kube.aioloop import AsyncioThread
from testing.kube.client import api_client
from testing.kube.emulator import (
    CORE_EVENTS,
    EVENTS_V1,
    PODS,
    KubeEmulator,
    container_id,
    make_pod,
)
from testing.waits import aio_bounded, within

UID_A = "0b7ba2b0-5f6e-4a4b-9c1e-3d8f0f1e2a3b"
POD_REF = {"api_version": "v1", "kind": "Pod", "namespace": "shop", "name": "web-0", "uid": UID_A}


def micro_time(moment: datetime.datetime) -> str:
    """MicroTime as the server parses it: exactly 6 fractional digits."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_message(error: client.ApiException) -> str:
    """The message of the Status object the server answered with."""
    body = error.body  # typed bytes, but kubernetes-asyncio has decoded it to str
    text = body.decode() if isinstance(body, bytes) else str(body)
    return str(json.loads(text)["message"])


def event_v1(name: str, **overrides: Any) -> client.EventsV1Event:
    body = client.EventsV1Event(
        metadata=client.V1ObjectMeta(name=name, namespace="shop"),
        event_time=micro_time(datetime.datetime.now(datetime.UTC)),  # type: ignore[arg-type]
        reason="OomGuardKillContainer",
        action="KillContainer",
        type="Warning",
        note="cgroup kubepods/pod.../abc usage 255Mi limit 256Mi: killed container app",
        regarding=client.V1ObjectReference(**POD_REF, field_path="spec.containers{app}"),
        reporting_controller="memguard",
        reporting_instance="node-a",
    )
    for key, value in overrides.items():
        setattr(body, key, value)
    return body


def seed_pods(kube: KubeEmulator) -> None:
    kube.create_pod(make_pod("shop", "web-0", uid=UID_A, node_name="node-a"))
    kube.create_pod(make_pod("shop", "web-1", node_name="node-b"))
    kube.create_pod(make_pod("ops", "agent", node_name="node-a", containers=("a", "b")))


async def test_list_pods_on_this_node(kube: KubeEmulator, client_loop: AsyncioThread) -> None:
    seed_pods(kube)

    async def scenario() -> client.V1PodList:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            core = client.CoreV1Api(api)
            return await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")

    pods = await client_loop.run(scenario())
    assert [(p.metadata.namespace, p.metadata.name) for p in pods.items] == [
        ("shop", "web-0"),
        ("ops", "agent"),
    ]
    assert (pods.kind, pods.api_version) == ("PodList", "v1")
    assert int(pods.metadata.resource_version) > 0
    agent = pods.items[1]
    assert agent.status.container_statuses[1].container_id == container_id(agent.metadata.uid, "b")
    assert pods.items[0].metadata.uid == UID_A


async def test_discovery(kube: KubeEmulator, client_loop: AsyncioThread) -> None:
    async def scenario() -> tuple[client.V1APIResourceList, client.V1APIGroupList]:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            core = await client.CoreV1Api(api).get_api_resources()  # GET /api/v1/
            return core, await client.ApisApi(api).get_api_versions()

    core, groups = await client_loop.run(scenario())
    assert core.group_version == "v1"
    assert {(r.name, r.kind, r.namespaced) for r in core.resources} == {
        ("pods", "Pod", True),
        ("nodes", "Node", False),
        ("events", "Event", True),
    }
    assert sorted(g.name for g in groups.groups) == ["events.k8s.io", "policy"]


async def test_unsupported_field_label_is_400(
    kube: KubeEmulator, client_loop: AsyncioThread
) -> None:
    async def scenario() -> None:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            await client.CoreV1Api(api).list_pod_for_all_namespaces(field_selector="spec.x=y")

    with pytest.raises(client.ApiException) as caught:
        await client_loop.run(scenario())
    assert caught.value.status == 400
    assert status_message(caught.value) == "field label not supported: spec.x"


async def watch_until(kube: KubeEmulator, name: str, **kwargs: Any) -> list[tuple[str, str]]:
    """Watch pods on node-a and collect (type, name) until `name` shows up."""
    seen: list[tuple[str, str]] = []
    assert kube.kubeconfig is not None
    async with api_client(kube.kubeconfig) as api:
        core = client.CoreV1Api(api)
        async with watch.Watch() as stream:
            async for event in stream.stream(
                core.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-a", **kwargs
            ):
                seen.append((event["type"], event["object"].metadata.name))
                if event["object"].metadata.name == name:
                    return seen
    raise AssertionError("the watch ended")


async def test_watch_sees_pod_created_after_it_started(
    kube: KubeEmulator, client_loop: AsyncioThread
) -> None:
    seed_pods(kube)
    seen: list[tuple[str, str]] = []

    async def watcher() -> None:
        seen.extend(await client_loop.run(watch_until(kube, "web-2")))

    with within("a watch seeing web-2 created after it started", 10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await kube.wait_watching(PODS)
            kube.create_pod(make_pod("shop", "web-3", node_name="node-b"))  # not on node-a
            kube.create_pod(make_pod("shop", "web-2", node_name="node-a"))
    # No resourceVersion: existing pods first (synthetic ADDED), then changes.
    assert seen == [("ADDED", "web-0"), ("ADDED", "agent"), ("ADDED", "web-2")]


async def test_watch_from_resource_version_and_410(
    kube: KubeEmulator, client_loop: AsyncioThread
) -> None:
    seed_pods(kube)

    async def list_version() -> str:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            pods = await client.CoreV1Api(api).list_pod_for_all_namespaces()
            return str(pods.metadata.resource_version)

    version = await client_loop.run(list_version())
    kube.patch(PODS, "shop", "web-0", {"metadata": {"labels": {"tier": "front"}}})
    kube.create_pod(make_pod("shop", "late", node_name="node-a"))
    # From a listed version: only what changed since; agent is not replayed.
    seen = await client_loop.run(watch_until(kube, "late", resource_version=version))
    assert seen == [("MODIFIED", "web-0"), ("ADDED", "late")]

    # One 410 is retried once by kubernetes-asyncio itself (same resourceVersion) ...
    kube.fail("watch", PODS, status=410)
    seen = await client_loop.run(watch_until(kube, "late", resource_version=version))
    assert seen == [("MODIFIED", "web-0"), ("ADDED", "late")]
    # ... an expired version fails twice and surfaces: the caller must re-list.
    kube.expire_watches()
    watches_before = kube.request_count("watch", PODS)
    with pytest.raises(client.ApiException) as caught:
        await client_loop.run(watch_until(kube, "late", resource_version=version))
    assert caught.value.status == 410
    assert kube.request_count("watch", PODS) == watches_before + 2


async def post_event_v1(kube: KubeEmulator, body: client.EventsV1Event) -> client.EventsV1Event:
    assert kube.kubeconfig is not None
    async with api_client(kube.kubeconfig) as api:
        return await client.EventsV1Api(api).create_namespaced_event("shop", body)


async def test_events_v1_create_then_aggregate(
    kube: KubeEmulator, client_loop: AsyncioThread
) -> None:
    created = await client_loop.run(post_event_v1(kube, event_v1("web-0.oomguard.1")))
    assert created.metadata.uid
    assert created.metadata.resource_version

    async def bump_series(count: int) -> client.EventsV1Event:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            series = {"count": count, "lastObservedTime": micro_time(datetime.datetime.now())}
            return await client.EventsV1Api(api).patch_namespaced_event(
                "web-0.oomguard.1", "shop", {"series": series}
            )

    await client_loop.run(bump_series(2))
    patched = await client_loop.run(bump_series(3))
    assert patched.series.count == 3

    [stored] = kube.events()
    assert stored["reason"] == "OomGuardKillContainer"
    assert stored["regarding"]["fieldPath"] == "spec.containers{app}"
    assert stored["series"]["count"] == 3
    history = kube.history(EVENTS_V1, "shop", "web-0.oomguard.1")
    assert [v.get("series", {}).get("count") for v in history] == [None, 2, 3]
    [shown] = kube.kubectl_events()
    assert shown["involvedObject"]["uid"] == UID_A
    assert shown["reportingComponent"] == "memguard"
    assert shown["message"].startswith("cgroup kubepods/")
    assert kube.rejections == []


@pytest.mark.parametrize(
    ("change", "status", "why"),
    [
        # Python's isoformat() drops the fraction when microsecond == 0: a 400.
        ({"event_time": datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)}, 400, "6 fractional"),
        ({"reporting_instance": None}, 422, "reportingInstance: Required"),
        ({"note": "x" * 1025}, 422, "at most 1024"),
        ({"deprecated_count": 1}, 422, "count: needs to be unset"),
        (
            {"series": client.EventsV1EventSeries(count=1, last_observed_time="x")},  # type: ignore[arg-type]
            400,
            "6 fractional",
        ),
    ],
)
async def test_events_v1_validation(
    kube: KubeEmulator,
    client_loop: AsyncioThread,
    change: dict[str, Any],
    status: int,
    why: str,
) -> None:
    with pytest.raises(client.ApiException) as caught:
        await client_loop.run(post_event_v1(kube, event_v1("bad.1", **change)))
    assert caught.value.status == status
    assert why in status_message(caught.value)
    assert kube.events() == []
    assert len(kube.rejections) == 1


async def test_events_v1_note_is_immutable(kube: KubeEmulator, client_loop: AsyncioThread) -> None:
    await client_loop.run(post_event_v1(kube, event_v1("web-0.oomguard.2")))

    async def change_note() -> None:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            await client.EventsV1Api(api).patch_namespaced_event(
                "web-0.oomguard.2", "shop", {"note": "edited"}
            )

    with pytest.raises(client.ApiException) as caught:
        await client_loop.run(change_note())
    assert caught.value.status == 422
    assert "message: field is immutable" in status_message(caught.value)


async def test_core_v1_event_create_then_count(
    kube: KubeEmulator, client_loop: AsyncioThread
) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def scenario() -> client.CoreV1Event:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            core = client.CoreV1Api(api)
            body = client.CoreV1Event(
                metadata=client.V1ObjectMeta(name="web-0.oomguard.3", namespace="shop"),
                involved_object=client.V1ObjectReference(**POD_REF),
                reason="OomGuardFlush",
                message="flushed 200Mi of page cache",
                type="Warning",
                source=client.V1EventSource(component="memguard", host="node-a"),
                first_timestamp=now,  # type: ignore[arg-type]
                last_timestamp=now,  # type: ignore[arg-type]
                count=1,
            )
            await core.create_namespaced_event("shop", body)
            # client-go's EventCorrelator: bump count and lastTimestamp in place.
            return await core.patch_namespaced_event(
                "web-0.oomguard.3", "shop", {"count": 2, "lastTimestamp": now}
            )

    patched = await client_loop.run(scenario())
    assert patched.count == 2
    [stored] = kube.events(apirules.CORE_V1)
    assert stored["count"] == 2
    assert stored["source"] == {"component": "memguard", "host": "node-a"}
    assert len(kube.history(CORE_EVENTS, "shop", "web-0.oomguard.3")) == 2


async def test_injected_500s_then_recovery(kube: KubeEmulator, client_loop: AsyncioThread) -> None:
    kube.fail("create", EVENTS_V1, times=2)
    kube.fail("create", PODS)
    seed_pods(kube)  # the test's own setup is never faulted
    for _ in range(2):
        with pytest.raises(client.ApiException) as caught:
            await client_loop.run(post_event_v1(kube, event_v1("web-0.oomguard.4")))
        assert caught.value.status == 500
        assert kube.events() == []  # a faulted write is not applied
    await client_loop.run(post_event_v1(kube, event_v1("web-0.oomguard.4")))
    assert [e["metadata"]["name"] for e in kube.events()] == ["web-0.oomguard.4"]
    assert kube.request_count("create", EVENTS_V1) == 3


async def test_delay_hits_the_client_timeout(
    kube: KubeEmulator, client_loop: AsyncioThread
) -> None:
    kube.fail("list", PODS, status=None, delay_s=30)

    async def scenario() -> None:
        assert kube.kubeconfig is not None
        async with api_client(kube.kubeconfig) as api:
            await client.CoreV1Api(api).list_pod_for_all_namespaces(_request_timeout=0.2)

    with pytest.raises(TimeoutError):
        await client_loop.run(scenario())


async def test_unreachable_then_back(kube: KubeEmulator, client_loop: AsyncioThread) -> None:
    kube.stop_server()
    with pytest.raises(aiohttp.ClientConnectionError):
        await client_loop.run(post_event_v1(kube, event_v1("web-0.oomguard.5")))
    kube.start_server()  # same port: the kubeconfig still points at it
    await client_loop.run(post_event_v1(kube, event_v1("web-0.oomguard.5")))
    assert len(kube.events()) == 1


async def test_stopping_the_server_cuts_an_open_watch(
    kube: KubeEmulator, client_loop: AsyncioThread
) -> None:
    seed_pods(kube)
    with (  # noqa: PT012
        within("stopping the server cutting an open watch", 10),
        pytest.raises(ExceptionGroup) as caught,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_loop.run, watch_until(kube, "never"))
            await kube.wait_watching(PODS)
            await trio.to_thread.run_sync(kube.stop_server)
    assert caught.group_contains(aiohttp.ClientPayloadError)
    # kubernetes-asyncio re-connects only after a clean end of stream; a cut is raised.


def test_manifests_validate_strictly() -> None:
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "memguard", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"app": "memguard"}},
            "template": {
                "metadata": {"labels": {"app": "memguard"}},
                "spec": {"containers": [{"name": "memguard", "image": "memguard:0.1"}]},
            },
        },
    }
    apirules.check_schema(daemonset)
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}  # type: ignore[index]
    with pytest.raises(apirules.SchemaError, match="securityContxt"):
        apirules.check_schema(daemonset)


async def test_kmock_quirks_that_apiserver_py_fixes() -> None:
    """Plain kmock 0.8, no subclass: the behaviour NOTES.md describes."""
    emulator = kmock.KubernetesEmulator()
    emulator.resources["v1/pods"].kind = "Pod"
    emulator.resources["events.k8s.io/v1/events"].kind = "Event"
    pods, events = "/api/v1/namespaces/shop/pods", "/apis/events.k8s.io/v1/namespaces/shop/events"

    async def scenario() -> None:
        async with emulator, kmock.Server(emulator) as server:
            http = server.client
            for name, node in (("a", "node-a"), ("b", "node-b")):
                pod = {"metadata": {"name": name}, "spec": {"nodeName": node}}
                async with http.post(pods, json=pod) as response:
                    assert response.status == 200  # a real server says 201
            async with http.get("/api/v1") as response:
                assert (await response.json())["groupVersion"] == "/v1"
            async with http.get("/api/v1/") as response:  # kubernetes-asyncio's discovery path
                assert response.status == 404
            async with http.get(f"{pods}?fieldSelector=spec.nodeName%3Dnode-a") as response:
                listed = await response.json()
            assert listed["metadata"] == {"resourceVersion": "..."}
            assert "kind" not in listed
            assert [p["metadata"]["name"] for p in listed["items"]] == ["a", "b"]  # ignored
            assert "uid" not in listed["items"][0]["metadata"]
            async with http.get(f"{pods}?watch=True") as response:  # kubernetes-asyncio's spelling
                assert "items" in await response.json()  # served as a LIST, not a watch
            # A reaction answers 500, but the object was stored before it ran.
            emulator["post", kmock.resource("events.k8s.io/v1/events")] << kmock.KubernetesError(
                status=500
            )
            async with http.post(events, json={"metadata": {"name": "e"}}) as response:
                assert response.status == 500
            assert emulator.objects["events.k8s.io/v1/events", "shop", "e"] == {
                "metadata": {"name": "e"}
            }

    await trio.to_thread.run_sync(asyncio.run, aio_bounded(scenario(), "kmock's quirks checked"))
