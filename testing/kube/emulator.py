"""A Kubernetes API server for tests: kmock on 127.0.0.1, on its own asyncio thread.

    with KubeEmulator() as kube:                      # or the `kube` fixture
        path = kube.write_kubeconfig(tmp_path)        # kubernetes-asyncio loads this
        kube.create_pod(make_pod("default", "web-0", uid=UID, node_name="node-1"))
        kube.fail("create", EVENTS_V1, times=2)       # two 500s, then normal service
        ... memguard (its own asyncio loop) posts Events ...
        assert kube.events()[0]["reason"] == "OomGuardKillContainer"

The emulator is testing/kube/apiserver.py (kmock plus the server behaviour kmock
lacks). Its state lives on the emulator's loop: every method here hops onto
that loop and returns plain dicts, so it is safe from any thread, trio's too.
The hops take well under a millisecond; only `wait_watching` waits, and it is
async (trio) for that reason.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
import uuid
from types import TracebackType
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import kmock
import trio

from memguard.fake.tree import FakeContainer
from testing.kube import apirules
from testing.kube.aioloop import AsyncioThread
from testing.kube.apiserver import HARNESS_AGENT as HARNESS
from testing.kube.apiserver import ApiServerEmulator, Fault, Removal, group_version
from testing.waits import WAIT_S, within

PODS = kmock.resource("v1/pods")
NODES = kmock.resource("v1/nodes")
CORE_EVENTS = kmock.resource("v1/events")
EVENTS_V1 = kmock.resource("events.k8s.io/v1/events")
PDBS = kmock.resource("policy/v1/poddisruptionbudgets")
ResourceKey = str | kmock.resource


def container_id(pod_uid: str, container: str, runtime: str = "containerd") -> str:
    """A stable `<runtime>://<64 hex>` id, as in status.containerStatuses."""
    digest = hashlib.sha256(f"{pod_uid}/{container}".encode()).hexdigest()
    return f"{runtime}://{digest}"


def make_pod(
    namespace: str,
    name: str,
    *,
    node_name: str,
    uid: str | None = None,
    containers: tuple[str, ...] = ("app",),
    memory_limit: str | None = "256Mi",
    phase: str = "Running",
) -> dict[str, Any]:
    """A schema-valid running Pod whose containers have containerd ids."""
    uid = uid or str(uuid.uuid4())
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    resources = {"limits": {"memory": memory_limit}, "requests": {"memory": memory_limit}}
    specs = [
        {"name": c, "image": "registry.test/app:1", "resources": resources if memory_limit else {}}
        for c in containers
    ]
    statuses = [
        {
            "name": c, "containerID": container_id(uid, c), "image": "registry.test/app:1",
            "imageID": "", "ready": True, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": started}},
        }
        for c in containers
    ]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {"app": name}},
        "spec": {"nodeName": node_name, "containers": specs},
        "status": {
            "phase": phase,
            "qosClass": "Burstable" if memory_limit else "BestEffort",
            "containerStatuses": statuses,
        },
    }


def pod_for(
    container: FakeContainer, annotations: dict[str, str], node_name: str = "node-a"
) -> dict[str, Any]:
    """A pod in namespace shop named after a fake tree's container, whose one
    container 'app' has that container's pod uid and container id."""
    uid = container.ref.pod_uid
    assert uid is not None
    pod = make_pod("shop", container.name, uid=uid, node_name=node_name, containers=("app",))
    status = pod["status"]["containerStatuses"][0]
    status["containerID"] = f"containerd://{container.ref.container_id}"
    pod["metadata"]["annotations"] = annotations
    return pod


def make_pdb(
    namespace: str, name: str, match_labels: dict[str, str], disruptions_allowed: int
) -> dict[str, Any]:
    """A PodDisruptionBudget with its status as the disruption controller would set it."""
    healthy = 1 + disruptions_allowed
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": match_labels}, "minAvailable": 1},
        "status": {
            "disruptionsAllowed": disruptions_allowed,
            "currentHealthy": healthy,
            "desiredHealthy": 1,
            "expectedPods": healthy,
        },
    }


def make_node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


class _QuickShutdownServer(aiohttp.test_utils.RawTestServer):
    """aiohttp waits shutdown_timeout (60 s) for open handlers, and a watch never
    ends by itself: cut whatever is still running after a short grace period."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web.ServerRunner:
        server = aiohttp.web.Server(self._handler, loop=self._loop, debug=debug, **kwargs)
        return aiohttp.web.ServerRunner(server, debug=debug, shutdown_timeout=0.2, **kwargs)


class KubeEmulatorError(Exception):
    """The emulator refused something the test itself asked for."""


class KubeEmulator:
    def __init__(
        self, *, host: str = "127.0.0.1", schema_version: str = apirules.SCHEMA_VERSION
    ) -> None:
        self._host = host
        self._schema_version = schema_version
        self._thread = AsyncioThread("kube-emulator")
        self._api: ApiServerEmulator | None = None
        self._server: kmock.Server | None = None
        self._port = 0  # 0 until the first start: then the same port across restarts
        self.kubeconfig: pathlib.Path | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._thread.call(self._open())

    def close(self) -> None:
        if self._api is not None:
            self._thread.call(self._close())
        self._thread.stop()

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _open(self) -> None:
        api = ApiServerEmulator(schema_version=self._schema_version)
        await api.__aenter__()
        self._api = api
        await self._start_server()

    async def _close(self) -> None:
        await self._stop_server()
        if self._api is not None:
            await self._api.__aexit__(None, None, None)
            self._api = None

    async def _start_server(self) -> None:
        server = kmock.Server(
            self.api, host=self._host, port=self._port or None, server_cls=_QuickShutdownServer
        )
        await server.__aenter__()
        self._server, self._port = server, server.port

    async def _stop_server(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.__aexit__(None, None, None)

    def stop_server(self) -> None:
        """Close the port: new connections are refused, requests still open (watches)
        are cut after 0.2 s, as when a server dies. Objects and faults are kept."""
        self._thread.call(self._stop_server())

    def start_server(self) -> None:
        """Serve again, on the same port, after stop_server()."""
        self._thread.call(self._start_server())

    @property
    def api(self) -> ApiServerEmulator:
        """The kmock emulator itself: touch it only on its loop (see `on_loop`)."""
        if self._api is None:
            raise RuntimeError("the emulator is not running")
        return self._api

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("the emulator has not started")
        return f"http://{self._host}:{self._port}"

    def write_kubeconfig(self, directory: pathlib.Path, namespace: str = "default") -> pathlib.Path:
        """A kubeconfig (JSON is YAML) with one context, a bearer token and no TLS."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "memguard-test", "user": {"token": "memguard-test-token"}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {
                        "cluster": "kmock",
                        "user": "memguard-test",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "kmock",
        }
        path = directory / "kubeconfig"
        path.write_text(json.dumps(config, indent=2))
        self.kubeconfig = path
        return path

    # --- objects -------------------------------------------------------------------------------

    def create(self, resource: ResourceKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Create through the server's own admission and watch path (not an HTTP request)."""
        res = kmock.resource(resource)
        namespace = obj.get("metadata", {}).get("namespace")
        return self._thread.call(
            self._direct(
                method="POST", url=self._path(res, namespace), data=obj,
                action=kmock.action.CREATE, resource=res, namespace=namespace,
            )
        )  # fmt: skip

    def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        return self.create(PODS, pod)

    def create_node(self, name: str) -> dict[str, Any]:
        return self.create(NODES, make_node(name))

    def patch(
        self, resource: ResourceKey, namespace: str | None, name: str, patch: Any
    ) -> dict[str, Any]:
        """Merge-patch (a dict) or JSON-patch (a list) an object, as a PATCH would."""
        res = kmock.resource(resource)
        return self._thread.call(
            self._direct(
                method="PATCH", url=f"{self._path(res, namespace)}/{name}", data=patch,
                action=kmock.action.UPDATE, resource=res, namespace=namespace, name=name,
            )
        )  # fmt: skip

    def delete(self, resource: ResourceKey, namespace: str | None, name: str) -> dict[str, Any]:
        res = kmock.resource(resource)
        return self._thread.call(
            self._direct(
                method="DELETE", url=f"{self._path(res, namespace)}/{name}",
                action=kmock.action.DELETE, resource=res, namespace=namespace, name=name,
            )
        )  # fmt: skip

    async def _direct(self, **fields: Any) -> dict[str, Any]:
        # What RawHandler.__call__ does for an HTTP request, minus HTTP: kmock's
        # reactions only answer requests recorded in its request list.
        api = self.api
        request = kmock.Request(id=len(api._requests), headers={"User-Agent": HARNESS}, **fields)
        api._requests.append(request)
        response = await api._handle(request)
        assert isinstance(response, aiohttp.web.Response)
        assert response.body is not None
        body: dict[str, Any] = json.loads(bytes(response.body))  # type: ignore[arg-type]
        if response.status >= 300:
            raise KubeEmulatorError(f"{request.method} {request.url}: {body.get('message')}")
        return body

    @staticmethod
    def _path(resource: kmock.resource, namespace: str | None) -> str:
        base = "/api" if resource.group == "" else "/apis"
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}/{group_version(resource)}{scope}/{resource.plural}"

    def objects(self, resource: ResourceKey) -> list[dict[str, Any]]:
        """The stored objects of one resource (latest versions), oldest first."""
        res = kmock.resource(resource)

        def collect() -> list[dict[str, Any]]:
            items = self.api.objects.items()
            return [obj.raw for (r, _, _), obj in items if r == res and not obj.deleted]

        return self._thread.call_sync(collect)

    def history(self, resource: ResourceKey, namespace: str | None, name: str) -> list[Any]:
        """Every stored version of one object (None marks a deletion), oldest first."""
        key = (kmock.resource(resource), namespace, name)

        def collect() -> list[Any]:
            return [None if v is None else v.raw for v in self.api.objects[key].history]

        return self._thread.call_sync(collect)

    def events(self, api_version: str = apirules.EVENTS_V1) -> list[dict[str, Any]]:
        """Stored Events of one API group, exactly as posted (plus server fields)."""
        return self.objects(EVENTS_V1 if api_version == apirules.EVENTS_V1 else CORE_EVENTS)

    def kubectl_events(self) -> list[dict[str, Any]]:
        """All Events, both groups, in the core/v1 shape `kubectl get events` shows."""
        core = [apirules.kubectl_view(e, apirules.CORE_V1) for e in self.events(apirules.CORE_V1)]
        new = [apirules.kubectl_view(e, apirules.EVENTS_V1) for e in self.events()]
        return core + new

    def removals(self) -> list[Removal]:
        """Pod evictions and deletes received over HTTP, with their answers, in order."""
        return self._thread.call_sync(lambda: list(self.api.removals))

    @property
    def rejections(self) -> list[str]:
        """Writes refused by the emulator's API rules (schema, Event validation, formats)."""
        return self._thread.call_sync(lambda: list(self.api.rejections))

    # --- faults --------------------------------------------------------------------------------

    def fail(
        self,
        action: str,
        resource: ResourceKey,
        *,
        times: int | None = 1,
        status: int | None = 500,
        delay_s: float = 0.0,
    ) -> None:
        """The next `times` requests (None: all from now on) of `action` ("create",
        "list", "watch", "update", "delete", "fetch") on `resource` get `status`
        (None: just `delay_s`, then normal service). 410 on "watch" is an ERROR
        event, like the real server."""
        fault = Fault(
            kmock.action(action.upper()), kmock.resource(resource), times, status, delay_s
        )
        self._thread.call_sync(lambda: self.api.faults.append(fault))

    def answer(self, action: str, resource: ResourceKey, body: bytes, status: int = 200) -> None:
        """The next request of `action` on `resource` gets these raw bytes (a
        malformed answer: not JSON, the wrong shape, oversized, a garbled watch)."""
        fault = Fault(kmock.action(action.upper()), kmock.resource(resource), 1, status, body=body)
        self._thread.call_sync(lambda: self.api.faults.append(fault))

    def slow(self, delay_s: float, *requests: tuple[str, ResourceKey]) -> None:
        """Every request of these (action, resource) pairs waits delay_s, then is
        served normally (a server that answers, slowly)."""
        for action, resource in requests:
            self.fail(action, resource, times=None, status=None, delay_s=delay_s)

    def clear_faults(self) -> None:
        self._thread.call_sync(self.api.faults.clear)

    def stalled(self) -> int:
        """Requests held by a delay fault at this moment (the server has not answered)."""
        return self._thread.call_sync(lambda: self.api.stalled)

    def expire_watches(self) -> None:
        """Compact history and end open watches: resuming from any old resourceVersion
        now gets 410 Gone (a fresh list+watch works)."""
        self._thread.call_sync(self.api.compact)
        self.close_watches()

    def close_watches(self) -> None:
        """End open watch streams cleanly (clients reconnect from their last version)."""
        self._thread.call(self.api.close_watches())

    def request_count(self, action: str, resource: ResourceKey) -> int:
        """Requests received over HTTP (faulted and refused ones included)."""
        act, res = kmock.action(action.upper()), kmock.resource(resource)

        def count() -> int:
            requests = self.api[act][res]
            return sum(r.headers.get("User-Agent") != HARNESS for r in requests)

        return self._thread.call_sync(count)

    async def wait_watching(
        self, resource: ResourceKey, count: int = 1, timeout_s: float = WAIT_S
    ) -> None:
        """Wait (trio) until `count` watch streams on resource are subscribed; fail
        after timeout_s."""
        res = kmock.resource(resource)
        # Polling: the state is on another thread's loop, a trio.Event cannot reach it.
        with within(f"{count} watch(es) on {resource} subscribed", timeout_s):
            while self._thread.call_sync(lambda: self.api.watcher_count(res)) < count:  # noqa: ASYNC110
                await trio.sleep(0.01)
