"""kmock's KubernetesEmulator, taught the API-server behaviour memguard relies on.

kmock 0.8 stores objects and serves list/watch, but (read in its source, checked
against it in test_emulator_smoke.py) it: detects a watch only from the literal
`watch=true` (kubernetes-asyncio sends `watch=True`); 404s discovery paths with
a trailing slash (kubernetes-asyncio asks for "/api/v1/") and names the core
group "/v1"; ignores fieldSelector, labelSelector, resourceVersion and
timeoutSeconds; sets no uid, resourceVersion or creationTimestamp; answers
lists without kind/apiVersion and with resourceVersion "..."; stores a created
object *before* any user reaction runs, so an injected 500 still creates it;
has no Eviction subresource and deletes a pod at once. Pods' eviction and
graceful deletion (with PodDisruptionBudgets) are added in the last section.
This subclass adds the missing behaviour (NOTES.md lists what is still
missing). Everything here runs on the emulator's own asyncio loop; tests talk
to it through testing/kube/emulator.py.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import kmock

from testing.kube import apirules

# plural path -> (kind, namespaced). kmock serves discovery only for declared
# (or already stored) resources; kubernetes-asyncio itself needs no discovery.
RESOURCES = {
    "v1/pods": ("Pod", True),
    "v1/nodes": ("Node", False),
    "v1/events": ("Event", True),
    "events.k8s.io/v1/events": ("Event", True),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", True),
}
_PODS = kmock.resource("v1/pods")
_PDBS = kmock.resource("policy/v1/poddisruptionbudgets")
DEFAULT_GRACE_PERIOD_S = 30  # a pod's spec.terminationGracePeriodSeconds when absent
_VERBS = ("create", "delete", "get", "list", "patch", "watch")
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # strconv.ParseBool
_CLOSE_WATCHES: dict[str, Any] = {"type": "memguard-test/close"}  # a bus sentinel, by identity
_WRITES = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)
HARNESS_AGENT = "memguard-test-harness"  # User-Agent of the test's own setup requests


@dataclasses.dataclass(frozen=True)
class Removal:
    """One eviction or delete of a pod over HTTP, as the server answered it."""

    how: str  # "evict" | "delete"
    namespace: str
    name: str
    grace_period_s: int | None  # deleteOptions.gracePeriodSeconds as sent (None: not sent)
    status: int  # the HTTP status answered
    uid_precondition: str | None = None  # deleteOptions.preconditions.uid as sent


@dataclasses.dataclass
class Fault:
    """Answer the next `remaining` matching requests (None: every one) with `status`
    after `delay_s`.

    status None only delays (then serves normally); 410 on a watch is sent the
    way kube-apiserver does it: HTTP 200 and one ERROR event (reason Expired).
    `body` (bytes) is sent as is with `status` (200 if None): a malformed answer.
    A faulted write is not applied (unlike a plain kmock reaction).
    """

    action: kmock.action
    resource: kmock.resource
    remaining: int | None
    status: int | None = 500
    delay_s: float = 0.0
    body: bytes | None = None

    def take(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


def path_of(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}/{resource.plural}".lstrip("/")


def group_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}".lstrip("/")


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    details = {"causes": [{"message": message}]}  # kmock puts a traceback in empty details
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiServerEmulator(kmock.KubernetesEmulator):
    def __init__(self, *, schema_version: str = apirules.SCHEMA_VERSION) -> None:
        super().__init__()
        self.schema_version = schema_version
        self.faults: list[Fault] = []
        self.stalled = 0  # requests being held by a delay fault right now
        self.rejections: list[str] = []  # every write our own rules refused
        self.removals: list[Removal] = []  # pod evictions and deletes over HTTP
        self._rv = 1
        self._compacted_rv = 0
        self._created_rv: dict[tuple[kmock.resource, str | None, str], int] = {}
        for path, (kind, namespaced) in RESOURCES.items():
            info = self.resources[path]
            info.kind, info.namespaced, info.singular = kind, namespaced, kind.lower()
            info.verbs = set(_VERBS)

    # --- state changes, called on the loop by the harness ---------------------------------

    def next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def compact(self) -> None:
        """Every resourceVersion seen so far becomes too old to watch from (410)."""
        self._compacted_rv = self.next_rv()

    def watcher_count(self, resource: kmock.resource) -> int:
        """Open watch streams on resource (subscribed to its change bus)."""
        bus = self._buses.get(resource)
        return 0 if bus is None else bus.consumer_count

    async def close_watches(self) -> None:
        """End every open watch stream cleanly, like a server-side timeout."""
        for bus in list(self._buses.values()):
            await bus.put(_CLOSE_WATCHES)

    # --- request pipeline -------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock matches only `watch=true` and discovery paths without a trailing slash;
        # kubernetes-asyncio sends `watch=True` and GETs "/api/v1/" for discovery.
        url = raw_request.rel_url
        if len(url.path) > 1 and url.path.endswith("/"):
            url = url.with_path(url.path.rstrip("/"))
        watch = url.query.get("watch")
        if watch in _GO_TRUE and watch != "true":
            url = url.update_query(watch="true")
        if url != raw_request.rel_url:
            raw_request = raw_request.clone(rel_url=url)
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        fault = self._take_fault(request)
        if fault is not None:
            self.stalled += 1
            try:
                await asyncio.sleep(fault.delay_s)
            finally:
                self.stalled -= 1
            if fault.body is not None:
                return aiohttp.web.Response(
                    body=fault.body, status=fault.status or 200, content_type="application/json"
                )
            if fault.status == 410 and request.action == kmock.action.WATCH:
                body = json.dumps(_gone_event("injected by the test")) + "\n"
                return aiohttp.web.Response(text=body, content_type="application/json")
            if fault.status is not None:
                error = _error(fault.status, "InternalError", "injected by the test")
                return await self._render_error(error)
        if self._removes_pod(request):
            return await self._remove_pod(request)
        if request.resource is not None and request.action in _WRITES:
            try:
                self._admit(request, request.resource)
            except kmock.KubernetesError as error:
                self.rejections.append(f"{request.method} {request.url.path}: {error.message}")
                return await self._render_error(error)
        return await super()._handle(request)

    def _take_fault(self, request: kmock.Request) -> Fault | None:
        if request.headers.get("User-Agent") == HARNESS_AGENT:
            return None  # faults are for the code under test, not for the test's setup
        action = request.action
        if action is None and request.method == kmock.method.POST and request.subresource:
            action = kmock.action.CREATE  # a subresource create (pods/eviction)
        for fault in self.faults:
            if fault.action == action and fault.resource == request.resource and fault.take():
                return fault
        return None

    # --- admission: what the server does before storing ------------------------------------

    def _admit(self, request: kmock.Request, resource: kmock.resource) -> None:
        if request.action == kmock.action.CREATE:
            self._admit_create(request, resource)
            return
        key = (resource, request.namespace, request.name or "")
        if key in self.objects and not self.objects[key].deleted:
            current = self.objects[key]
            if request.action == kmock.action.UPDATE:
                self._admit_patch(request, resource, current.raw)
            else:  # DELETE: the DELETED event carries a new resourceVersion
                meta = dict(current.raw["metadata"])
                meta["resourceVersion"] = self._rv_str()
                current["metadata"] = meta
        # else: kmock answers 404 itself

    def _admit_create(self, request: kmock.Request, resource: kmock.resource) -> None:
        obj = request.data
        if not isinstance(obj, dict) or not isinstance(obj.setdefault("metadata", {}), dict):
            raise _error(400, "BadRequest", "the body is not a JSON object with metadata")
        meta = obj["metadata"]
        if meta.get("namespace") not in (None, "", request.namespace):
            raise _error(400, "BadRequest", "the namespace of the object does not match the URL")
        if request.namespace:
            meta["namespace"] = request.namespace
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _error(422, "Invalid", "metadata.name: name or generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        kind = RESOURCES.get(path_of(resource), (None, None))[0]
        obj.setdefault("apiVersion", group_version(resource))
        obj.setdefault("kind", kind)
        if (obj["apiVersion"], obj["kind"]) != (group_version(resource), kind):
            raise _error(400, "BadRequest", f"{obj['apiVersion']}/{obj['kind']} sent to {resource}")
        self._validate(resource, obj, None)
        # A real server always sets uid; we keep a given one so tests can pick pod UIDs.
        meta.setdefault("uid", str(uuid.uuid4()))
        rv = self.next_rv()
        meta.update(resourceVersion=str(rv), creationTimestamp=_now())
        self._created_rv[resource, request.namespace, meta["name"]] = rv

    def _admit_patch(
        self, request: kmock.Request, resource: kmock.resource, current: dict[str, Any]
    ) -> None:
        patch = request.data
        try:  # kmock's own patch semantics: dict = merge patch, list = JSON patch
            candidate = kmock.Object(copy.deepcopy(current))
            candidate.patch(patch)
            new = candidate.raw
        except Exception as exc:  # jsonpatch/jsonpointer/ValueError: all mean "cannot apply"
            raise _error(422, "Invalid", f"the patch cannot be applied: {exc!r}") from exc
        sent_rv = (new.get("metadata") or {}).get("resourceVersion")
        if sent_rv != current["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict", "the object has been modified; please apply your changes")
        for field in ("name", "namespace", "uid"):
            if new["metadata"].get(field) != current["metadata"].get(field):
                raise _error(422, "Invalid", f"metadata.{field}: field is immutable")
        self._validate(resource, new, current)
        rv = self._rv_str()
        if isinstance(patch, list):
            patch.append({"op": "replace", "path": "/metadata/resourceVersion", "value": rv})
        else:
            patch["metadata"] = {**(patch.get("metadata") or {}), "resourceVersion": rv}

    def _validate(
        self, resource: kmock.resource, new: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        api_version, name = group_version(resource), new["metadata"].get("name")
        is_event = resource.plural == "events"
        if is_event and (errors := apirules.decode_errors(new, api_version)):
            raise _error(400, "BadRequest", "; ".join(errors))
        errors = []
        try:
            apirules.check_schema(new, self.schema_version)
        except apirules.SchemaError as exc:
            errors.append(str(exc))
        if is_event and old is None:
            errors += apirules.event_create_errors(new, api_version)
        elif is_event and old is not None:
            errors += apirules.event_update_errors(new, old, api_version)
        if errors:
            raise _error(422, "Invalid", f"{new['kind']} {name!r} is invalid: {errors}")

    def _rv_str(self) -> str:
        return str(self.next_rv())

    # --- reads ------------------------------------------------------------------------------

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        result = await super()._serve_version(request)
        assert isinstance(result, dict)
        result["groupVersion"] = result["groupVersion"].lstrip("/")  # kmock says "/v1"
        return result

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        created = await super()._serve_create(request)
        return kmock.Response(status=201, payload=created)  # type: ignore[attr-defined]

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        keep = self._selector(request)
        start, rv = self._continue_from(request)
        result = await super()._serve_list(request)
        assert request.resource is not None
        assert isinstance(result, dict)
        # A real list carries kind/apiVersion once, at the top, not on the items.
        items = [
            {k: v for k, v in item.items() if k not in ("kind", "apiVersion")}
            for item in result["items"]
            if keep(item)
        ]
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        limit = self._limit(request)
        if limit:  # pages: `limit` items, then a continue token (no snapshot: current objects)
            end = start + limit
            if end < len(items):
                metadata["continue"] = _continue_token(rv, end)
                metadata["remainingItemCount"] = len(items) - end
            items = items[start:end]
        return {
            "apiVersion": group_version(request.resource),
            "kind": f"{RESOURCES[path_of(request.resource)][0]}List",
            "metadata": metadata,
            "items": items,
        }

    def _limit(self, request: kmock.Request) -> int:
        try:
            return max(int(request.params.get("limit") or 0), 0)
        except ValueError:
            raise _error(400, "BadRequest", "limit: not an integer") from None

    def _continue_from(self, request: kmock.Request) -> tuple[int, int]:
        """(first item, list resourceVersion) of a continued list; 410 if compacted."""
        token = request.params.get("continue")
        if not token:
            return 0, self._rv
        try:
            rv_text, start_text = base64.urlsafe_b64decode(token).decode().split(":")
            rv, start = int(rv_text), int(start_text)
        except ValueError:
            raise _error(400, "BadRequest", "continue: not a token of this server") from None
        if rv < self._compacted_rv:
            raise _error(410, "Expired", "the continue token is too old: list again")
        return start, rv

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        resource = request.resource
        assert resource is not None
        keep, since = self._selector(request), self._since(request)
        if since is not None and since < self._compacted_rv:
            yield _gone_event(f"too old resource version: {since} ({self._compacted_rv})")
            return
        bus = self._buses[resource]
        marker = await bus.mark()  # subscribe before the snapshot: nothing falls in between
        try:
            yield b""  # send the headers now, so the client's watch call returns
            seen: dict[tuple[str | None, str], int] = {}
            for (res, namespace, name), obj in list(self.objects.items()):
                raw = None if res != resource or obj.deleted else obj.raw
                if raw is not None and self._wanted(request, raw, keep, since):
                    seen[namespace, name] = _rv_of(raw)
                    created_rv = self._created_rv.get((res, namespace, name), 0)
                    fresh = since is None or created_rv > since
                    yield {"type": "ADDED" if fresh else "MODIFIED", "object": raw}
            async for event in self._bus_events(bus, marker, request):
                raw = event["object"]
                key = (raw["metadata"].get("namespace"), raw["metadata"]["name"])
                if self._wanted(request, raw, keep, since) and _rv_of(raw) > seen.get(key, 0):
                    yield event
        finally:
            await bus.unmark(marker)

    async def _bus_events(
        self, bus: Any, marker: Any, request: kmock.Request
    ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        timeout_s = float(request.params.get("timeoutSeconds") or 0)
        deadline = loop.time() + timeout_s if timeout_s > 0 else None
        while True:
            remaining = None if deadline is None else max(deadline - loop.time(), 0)
            try:
                event = await asyncio.wait_for(bus.get(since=marker), remaining)
            except TimeoutError:
                return  # timeoutSeconds elapsed: the server ends the stream cleanly
            if event is _CLOSE_WATCHES:
                return
            yield event

    def _wanted(
        self,
        request: kmock.Request,
        raw: dict[str, Any],
        keep: apirules.Predicate,
        since: int | None,
    ) -> bool:
        meta = raw.get("metadata") or {}
        return (
            (request.namespace is None or meta.get("namespace") == request.namespace)
            and (request.name is None or meta.get("name") == request.name)
            and (since is None or _rv_of(raw) > since)
            and keep(raw)
        )

    def _selector(self, request: kmock.Request) -> apirules.Predicate:
        assert request.resource is not None
        try:
            by_field = apirules.field_selector(
                path_of(request.resource), request.params.get("fieldSelector", "")
            )
            by_label = apirules.label_selector(request.params.get("labelSelector", ""))
        except apirules.SelectorError as exc:
            raise _error(400, "BadRequest", str(exc)) from exc
        return lambda obj: by_field(obj) and by_label(obj)

    def _since(self, request: kmock.Request) -> int | None:
        value = request.params.get("resourceVersion", "")
        if value in ("", "0"):
            return None  # "start at most recent": synthetic ADDED for everything first
        try:
            return int(value)
        except ValueError:
            raise _error(400, "BadRequest", f"invalid resourceVersion {value!r}") from None

    # --- pods: eviction and graceful deletion (see the section at the end) -------------------

    def _removes_pod(self, request: kmock.Request) -> bool:
        if request.resource != _PODS or not request.name:
            return False
        if request.headers.get("User-Agent") == HARNESS_AGENT:
            return False  # the test's own delete(): at once, as before
        evicting = request.method == kmock.method.POST and request.subresource == "eviction"
        return evicting or (request.action == kmock.action.DELETE and not request.subresource)

    async def _remove_pod(self, request: kmock.Request) -> aiohttp.web.Response:
        how = "evict" if request.subresource == "eviction" else "delete"
        options: dict[str, Any] = {}
        grace: int | None = None
        try:
            options = self._removal_options(request, how)
            grace = _grace_of(options, request.params)
            pod = self._live_pod(request.namespace, request.name or "")
            uid = (options.get("preconditions") or {}).get("uid")
            if uid is not None and uid != pod["metadata"].get("uid"):
                message = (
                    f"Precondition failed: UID in precondition: {uid}, "
                    f"UID in object meta: {pod['metadata'].get('uid')}"
                )
                raise _Refused(apirules.failure_status(409, "Conflict", message))
            if how == "evict":
                await self._check_budgets(pod)
            removed = await self._delete_gracefully(pod, grace)
        except _Refused as refused:
            status = refused.status["code"]
            self._record(how, request, grace, status, options)
            return _removal_answer(refused.status, status)
        code = 201 if how == "evict" else 200
        self._record(how, request, grace, code, options)
        return _removal_answer(apirules.success_status(201) if how == "evict" else removed, code)

    def _removal_options(self, request: kmock.Request, how: str) -> dict[str, Any]:
        body = request.data
        if how == "delete":
            errors = apirules.delete_options_errors(body or None)
            if errors:
                raise _Refused(apirules.failure_status(400, "BadRequest", "; ".join(errors)))
            return body if isinstance(body, dict) else {}
        if not isinstance(body, dict):
            raise _Refused(apirules.failure_status(400, "BadRequest", "not an Eviction"))
        try:
            apirules.check_schema(body, self.schema_version)
        except apirules.SchemaError as exc:
            raise _Refused(apirules.failure_status(422, "Invalid", str(exc))) from None
        if (body.get("apiVersion"), body.get("kind")) != ("policy/v1", "Eviction"):
            message = (
                f"expected a policy/v1 Eviction, got {body.get('apiVersion')}/{body.get('kind')}"
            )
            raise _Refused(apirules.failure_status(400, "BadRequest", message))
        if (body.get("metadata") or {}).get("name") != request.name:
            message = "name in URL does not match name in Eviction object"
            raise _Refused(apirules.failure_status(400, "BadRequest", message))
        options = body.get("deleteOptions") or {}
        return options if isinstance(options, dict) else {}

    def _live_pod(self, namespace: str | None, name: str) -> dict[str, Any]:
        key = (_PODS, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            message = f'pods "{name}" not found'
            raise _Refused(apirules.failure_status(404, "NotFound", message))
        raw: dict[str, Any] = self.objects[key].raw
        return raw

    async def _check_budgets(self, pod: dict[str, Any]) -> None:
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        phase = (pod.get("status") or {}).get("phase")
        if terminating or phase in ("Pending", "Succeeded", "Failed"):
            return  # the server evicts these without asking a budget
        pdbs = [
            obj.raw for (r, _, _), obj in self.objects.items() if r == _PDBS and not obj.deleted
        ]
        budgets = apirules.disruption_budgets(pdbs, pod)
        if len(budgets) > 1:
            message = (
                "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support."
            )
            raise _Refused(apirules.failure_status(500, "InternalError", message))
        if not budgets:
            return
        [budget] = budgets
        allowed = (budget.get("status") or {}).get("disruptionsAllowed", 0)
        if allowed <= 0:
            raise _Refused(apirules.pdb_refusal(budget))
        meta = budget["metadata"]
        await self._internal(
            "PATCH", _PDBS, meta["namespace"], meta["name"],
            {"status": {"disruptionsAllowed": allowed - 1}},
        )  # fmt: skip

    async def _delete_gracefully(self, pod: dict[str, Any], grace: int | None) -> dict[str, Any]:
        meta = pod["metadata"]
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
            grace = DEFAULT_GRACE_PERIOD_S if grace is None else grace
        if grace <= 0:
            return await self._internal("DELETE", _PODS, meta["namespace"], meta["name"], None)
        if meta.get("deletionTimestamp"):
            return pod  # terminating already (a shorter grace period is not emulated)
        deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
        patch = {
            "metadata": {
                "deletionTimestamp": deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "deletionGracePeriodSeconds": grace,
            }
        }
        # Written here, not by a PATCH through kmock: kmock collects an object with a
        # deletionTimestamp and no finalizers at once, and a pod stays until its
        # kubelet is done (not emulated: the test deletes it, if it needs that).
        patch["metadata"]["resourceVersion"] = self._rv_str()
        async with self._lock:
            stored = self.objects[_PODS, meta["namespace"], meta["name"]]
            stored.patch(patch)
            raw: dict[str, Any] = stored.raw
            await self._buses[_PODS].put({"type": "MODIFIED", "object": raw})
        return raw

    async def _internal(
        self,
        method: str,
        resource: kmock.resource,
        namespace: str,
        name: str,
        data: Any,
    ) -> dict[str, Any]:
        """A write the server makes itself: through admission and the watch bus."""
        action = kmock.action.UPDATE if method == "PATCH" else kmock.action.DELETE
        url = f"/api{'s' if resource.group else ''}/{group_version(resource)}"
        url += f"/namespaces/{namespace}/{resource.plural}/{name}"
        request = kmock.Request(
            id=len(self._requests), headers={"User-Agent": HARNESS_AGENT}, method=method,
            url=url, data=data, action=action, resource=resource, namespace=namespace, name=name,
        )  # fmt: skip
        self._requests.append(request)
        response = await self._handle(request)
        assert isinstance(response, aiohttp.web.Response)
        assert response.body is not None
        body: dict[str, Any] = json.loads(bytes(response.body))  # type: ignore[arg-type]
        if response.status >= 300:
            raise _Refused(body)
        return body

    def _record(
        self,
        how: str,
        request: kmock.Request,
        grace: int | None,
        status: int,
        options: dict[str, Any],
    ) -> None:
        uid = (options.get("preconditions") or {}).get("uid")
        removal = Removal(how, request.namespace or "", request.name or "", grace, status, uid)
        self.removals.append(removal)


def _continue_token(rv: int, start: int) -> str:
    return base64.urlsafe_b64encode(f"{rv}:{start}".encode()).decode()


def _rv_of(raw: dict[str, Any]) -> int:
    return int((raw.get("metadata") or {}).get("resourceVersion") or 0)


def _gone_event(message: str) -> dict[str, Any]:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    return {
        "type": "ERROR",
        "object": {**status, "message": message, "reason": "Expired", "code": 410},
    }


# --- pods: eviction and graceful deletion ---------------------------------------------------
# (pkg/registry/core/pod/storage/eviction.go and the pod strategy's graceful delete)
# POST pods/<name>/eviction (policy/v1 Eviction): 429 TooManyRequests while a
# PodDisruptionBudget selecting the pod allows no disruption (its
# status.disruptionsAllowed, set by the test: there is no disruption
# controller), else the budget's count goes down by one and the pod is deleted
# as by DELETE; more than one budget is a 500, as on the real server; a pod
# already terminating, pending or finished is evicted without a budget check.
# DELETE pods/<name>: gracePeriodSeconds (DeleteOptions body or query; default
# the pod's terminationGracePeriodSeconds, else 30) > 0 sets deletionTimestamp
# and deletionGracePeriodSeconds (MODIFIED; the kubelet's part - stopping the
# containers, then the final delete - is not emulated: a test deletes the pod
# itself if it needs that), 0 removes it (DELETED). preconditions.uid that is
# not the pod's: 409 Conflict.


def _removal_answer(body: dict[str, Any], status: int) -> aiohttp.web.Response:
    return aiohttp.web.json_response(body, status=status)


class _Refused(Exception):
    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status["message"])
        self.status = status


def _grace_of(options: dict[str, Any], params: Any) -> int | None:
    grace = options.get("gracePeriodSeconds")
    if grace is None and params.get("gracePeriodSeconds") is not None:
        try:
            grace = int(params["gracePeriodSeconds"])
        except ValueError:
            raise _Refused(
                apirules.failure_status(400, "BadRequest", "gracePeriodSeconds: not an integer")
            ) from None
    return grace if isinstance(grace, int) else None
