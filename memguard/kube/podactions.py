"""Evicting and deleting a container's pod (memguard.guarding.pods.PodActions).

evict: POST /api/v1/namespaces/{ns}/pods/{name}/eviction with a policy/v1
Eviction (the API server honours PodDisruptionBudgets and the pod's grace
period); delete: DELETE the pod. Both carry deleteOptions.preconditions.uid:
the pod is named by its namespace and name, and a StatefulSet's replacement
has the same name - a precondition that fails (409) means memguard's pod is
gone, so nothing else is removed.

Answers: 200/201/202 DONE; 429 REFUSED (a PodDisruptionBudget: the detail
has the server's message); 404 and 409 GONE; anything else, no answer, an
unknown pod, a stuck Kubernetes thread: FAILED. Never raises (a trio
cancellation excepted) and never takes longer than timeout_s plus a grace
on the trio side, whatever the asyncio loop does. One request, no retries:
the guard decides what to do next (escalate, ask again later).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import trio

from memguard.guarding.pods import PodOutcome, PodResult
from memguard.kube.bridge import AsyncioBridge
from memguard.kube.client import ApiError, KubeClient, every_tenfold
from memguard.kube.pods import PodInfo
from memguard.policy.paths import ContainerRef

log = logging.getLogger(__name__)

POD_PATH = "/api/v1/namespaces/{namespace}/pods/{name}"
ACTION_TIMEOUT_S = 5.0  # one request: connect, send, answer
LOOP_GRACE_S = 1.0  # then the trio side stops waiting for the loop
MAX_DETAIL_CHARS = 300
MAX_GRACE_PERIOD_S = 2**63 - 1
Request = Callable[[], Coroutine[Any, Any, None]]  # made on the loop: never left unawaited


def grace_seconds(grace_period_s: float | None) -> int | None:
    """gracePeriodSeconds (an int64; a fraction rounds up: never shorter than asked)."""
    if grace_period_s is None or not math.isfinite(grace_period_s):
        return None
    return min(max(math.ceil(grace_period_s), 0), MAX_GRACE_PERIOD_S)


def delete_options(uid: str, grace_period_s: float | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": uid},
    }
    grace = grace_seconds(grace_period_s)
    if grace is not None:
        options["gracePeriodSeconds"] = grace
    return options


def eviction(pod: PodInfo, grace_period_s: float | None) -> dict[str, Any]:
    """A policy/v1 Eviction of pod."""
    options = delete_options(pod.uid, grace_period_s)
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": options,
    }


def server_message(error: ApiError) -> str:
    """The Status message of an error answer (its reason when there is none), one line."""
    message = ""
    try:
        status = json.loads(error.body) if error.body else None
    except ValueError:
        status = None
    if isinstance(status, dict):
        message = str(status.get("message") or "")
        causes = (
            (status.get("details") or {}).get("causes")
            if isinstance(status.get("details"), dict)
            else None
        )
        if isinstance(causes, list) and causes and isinstance(causes[0], dict):
            cause = str(causes[0].get("message") or "")
            message = f"{message} ({cause})" if cause and cause != message else message
    text = message or error.reason or str(error)
    return " ".join(text.split())[:MAX_DETAIL_CHARS]


def result_of(error: ApiError) -> PodResult:
    if error.status == 0:
        return PodResult(PodOutcome.FAILED, f"no answer: {server_message(error)}")
    detail = f"{error.status} {server_message(error)}"
    if error.status == 429:
        return PodResult(PodOutcome.REFUSED, detail)
    if error.status in (404, 409):
        return PodResult(PodOutcome.GONE, detail)
    return PodResult(PodOutcome.FAILED, detail)


class ApiPodActions:
    """PodActions over the API server; pods are found in the pod cache (no GET)."""

    def __init__(
        self,
        bridge: AsyncioBridge,
        client: KubeClient,
        lookup: Callable[[str | None], PodInfo | None],
        *,
        timeout_s: float = ACTION_TIMEOUT_S,
        loop_grace_s: float = LOOP_GRACE_S,
    ) -> None:
        self._bridge = bridge
        self._client = client
        self._lookup = lookup
        self._timeout_s = timeout_s
        self._loop_grace_s = loop_grace_s
        self.counts: dict[tuple[str, str], int] = {}  # (evict|delete, outcome) -> requests

    async def evict(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        pod = self._lookup(ref.pod_uid)
        if pod is None:
            return self._count("evict", PodResult(PodOutcome.FAILED, "the pod is not known"))
        path = POD_PATH.format(namespace=pod.namespace, name=pod.name) + "/eviction"
        body = eviction(pod, grace_period_s)
        return await self._act("evict", pod, lambda: self._client.send("POST", path, body=body))

    async def delete(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        pod = self._lookup(ref.pod_uid)
        if pod is None:
            return self._count("delete", PodResult(PodOutcome.FAILED, "the pod is not known"))
        path = POD_PATH.format(namespace=pod.namespace, name=pod.name)
        body = delete_options(pod.uid, grace_period_s)
        return await self._act("delete", pod, lambda: self._client.send("DELETE", path, body=body))

    async def _act(self, what: str, pod: PodInfo, request: Request) -> PodResult:
        result = PodResult(PodOutcome.FAILED, f"no answer within {self._timeout_s:g}s")
        with trio.move_on_after(self._timeout_s + self._loop_grace_s):
            try:
                result = await self._bridge.run(self._bounded(request))
            except Exception as error:  # the loop is gone (stopped): a result, not a raise
                result = PodResult(PodOutcome.FAILED, f"{type(error).__name__}: {error}"[:300])
        self._count(what, result)
        failed = self.counts.get((what, PodOutcome.FAILED.value), 0)
        if result.outcome is PodOutcome.FAILED and every_tenfold(failed):
            log.warning(
                "%s of pod %s/%s failed (%d failures so far): %s",
                what, pod.namespace, pod.name, failed, result.detail,
            )  # fmt: skip
        return result

    async def _bounded(self, request: Request) -> PodResult:
        """On the asyncio loop: the one request, within timeout_s, as a PodResult."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await request()
        except TimeoutError:
            return PodResult(PodOutcome.FAILED, f"no answer within {self._timeout_s:g}s")
        except ApiError as error:
            return result_of(error)
        except Exception as error:  # not the server's doing: still a result, never a raise
            return PodResult(PodOutcome.FAILED, f"{type(error).__name__}: {error}"[:300])
        return PodResult(PodOutcome.DONE, "accepted by the API server")

    def _count(self, what: str, result: PodResult) -> PodResult:
        key = (what, result.outcome.value)
        self.counts[key] = self.counts.get(key, 0) + 1
        return result
