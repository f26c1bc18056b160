"""Evicting and deleting pods (memguard.kube.podactions) against the emulated API server:
the Eviction subresource with PodDisruptionBudgets, graceful DELETE, and failures."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from memguard.guarding.pods import PodOutcome, PodResult
from memguard.kube.connection import Connection
from memguard.kube.features import KubeFeatures, open_kube
from memguard.kube.podactions import ApiPodActions
from memguard.kube.podcache import PodCache
from memguard.kube.pods import PodInfo
from memguard.policy.paths import ContainerRef
from testing.kube.apirules import PDB_VIOLATION
from testing.kube.apiserver import Removal
from testing.kube.emulator import PDBS, PODS, KubeEmulator, make_pdb, make_pod
from testing.waits import bounded, within

NODE = "node-a"


@asynccontextmanager
async def pod_actions(
    kubeconfig: pathlib.Path | None, lookup: Callable[[str | None], PodInfo | None] | None = None
) -> AsyncIterator[tuple[ApiPodActions, KubeFeatures]]:
    """ApiPodActions over a running pod cache (its lookup, unless one is given)."""
    connection = Connection(False, str(kubeconfig))
    features = await bounded(open_kube(connection, NODE, explicit=True), "the Kubernetes client")
    assert features is not None
    actions = ApiPodActions(features.bridge, features.client, lookup or features.cache.lookup)
    async with trio.open_nursery() as nursery:
        with within("the pod cache started"):
            await nursery.start(features.run)
        try:
            yield actions, features
        finally:
            nursery.cancel_scope.cancel()


async def cached(features: KubeFeatures, uid: str) -> None:
    def known(cache: PodCache) -> bool:
        return cache.lookup(uid) is not None

    await bounded(features.bridge.run(features.cache.wait_until(known)), f"pod {uid} cached")


def ref_of(uid: str) -> ContainerRef:
    return ContainerRef(uid, "0" * 64, "Burstable", "containerd", "cgroupfs")


def running_pod(kube: KubeEmulator, name: str = "web-0", grace_s: int | None = None) -> str:
    uid = str(uuid.uuid4())
    pod = make_pod("shop", name, uid=uid, node_name=NODE)
    if grace_s is not None:
        pod["spec"]["terminationGracePeriodSeconds"] = grace_s
    kube.create_pod(pod)
    return uid


def stored(kube: KubeEmulator, resource: Any, name: str) -> dict[str, Any] | None:
    found = [o for o in kube.objects(resource) if o["metadata"]["name"] == name]
    return found[0] if found else None


async def test_an_eviction_is_accepted_and_carries_the_grace_period(kube: KubeEmulator) -> None:
    uid = running_pod(kube)
    async with pod_actions(kube.kubeconfig) as (actions, features):
        await cached(features, uid)
        result = await actions.evict(ref_of(uid), 12.5)  # a fraction rounds up
    assert result.outcome is PodOutcome.DONE, result
    assert kube.removals() == [Removal("evict", "shop", "web-0", 13, 201, uid)]
    pod = stored(kube, PODS, "web-0")
    assert pod is not None
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 13
    assert pod["metadata"]["deletionTimestamp"]
    assert kube.rejections == []


async def test_an_eviction_is_refused_while_a_budget_forbids_it(kube: KubeEmulator) -> None:
    uid = running_pod(kube, grace_s=7)
    kube.create(PDBS, make_pdb("shop", "web-pdb", {"app": "web-0"}, disruptions_allowed=0))
    async with pod_actions(kube.kubeconfig) as (actions, features):
        await cached(features, uid)
        refused = await actions.evict(ref_of(uid), None)
        assert refused.outcome is PodOutcome.REFUSED, refused
        assert refused.detail.startswith("429 ")
        assert PDB_VIOLATION in refused.detail
        assert "web-pdb" in refused.detail
        pod = stored(kube, PODS, "web-0")
        assert pod is not None
        assert "deletionTimestamp" not in pod["metadata"]
        # the disruption controller allows one now
        kube.patch(PDBS, "shop", "web-pdb", {"status": {"disruptionsAllowed": 1}})
        accepted = await actions.evict(ref_of(uid), None)
    assert accepted.outcome is PodOutcome.DONE, accepted
    assert [(r.status, r.grace_period_s) for r in kube.removals()] == [(429, None), (201, None)]
    pod = stored(kube, PODS, "web-0")
    assert pod is not None
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 7  # the pod's own
    pdb = stored(kube, PDBS, "web-pdb")
    assert pdb is not None
    assert pdb["status"]["disruptionsAllowed"] == 0


async def test_a_budget_of_other_pods_does_not_stop_the_eviction(kube: KubeEmulator) -> None:
    uid = running_pod(kube)
    kube.create(PDBS, make_pdb("shop", "db-pdb", {"app": "db"}, disruptions_allowed=0))
    kube.create(PDBS, make_pdb("other", "web-pdb", {"app": "web-0"}, disruptions_allowed=0))
    async with pod_actions(kube.kubeconfig) as (actions, features):
        await cached(features, uid)
        result = await actions.evict(ref_of(uid), 3)
    assert result.outcome is PodOutcome.DONE, result


async def test_delete_with_a_grace_period_and_at_once(kube: KubeEmulator) -> None:
    graceful, at_once = running_pod(kube, "web-0"), running_pod(kube, "web-1")
    async with pod_actions(kube.kubeconfig) as (actions, features):
        await cached(features, graceful)
        await cached(features, at_once)
        first = await actions.delete(ref_of(graceful), 5)
        second = await actions.delete(ref_of(at_once), 0)
    assert (first.outcome, second.outcome) == (PodOutcome.DONE, PodOutcome.DONE)
    assert kube.removals() == [
        Removal("delete", "shop", "web-0", 5, 200, graceful),
        Removal("delete", "shop", "web-1", 0, 200, at_once),
    ]
    pod = stored(kube, PODS, "web-0")
    assert pod is not None
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 5
    assert stored(kube, PODS, "web-1") is None


async def test_a_pod_that_is_gone_or_replaced_is_gone(kube: KubeEmulator) -> None:
    """404: no such pod; 409: a pod of the same name with another uid (a StatefulSet's
    replacement) - which is not removed."""
    replacement = running_pod(kube, "web-0")
    stale: dict[str | None, PodInfo] = {
        "gone": PodInfo("shop", "web-9", "uid-gone"),
        "stale": PodInfo("shop", "web-0", "uid-of-the-old-web-0"),
    }
    async with pod_actions(kube.kubeconfig, stale.get) as (actions, _):
        gone = await actions.evict(ref_of("gone"), 1)
        replaced = await actions.delete(ref_of("stale"), 1)
    assert gone.outcome is PodOutcome.GONE, gone
    assert gone.detail.startswith("404 ")
    assert replaced.outcome is PodOutcome.GONE, replaced
    assert "Precondition failed" in replaced.detail
    pod = stored(kube, PODS, "web-0")
    assert pod is not None
    assert pod["metadata"]["uid"] == replacement
    assert "deletionTimestamp" not in pod["metadata"]


async def test_failures_are_results_never_exceptions(kube: KubeEmulator) -> None:
    uid = running_pod(kube)
    results: list[PodResult] = []
    async with pod_actions(kube.kubeconfig) as (actions, features):
        await cached(features, uid)
        results.append(await actions.evict(ref_of("not-cached"), 1))
        kube.fail("create", PODS, status=500)  # the eviction is a create on pods/eviction
        results.append(await actions.evict(ref_of(uid), 1))
        kube.fail("delete", PODS, status=None, delay_s=30)  # held far beyond the bound
        with within("a delete held by the server ends at its bound", 15):
            results.append(await actions.delete(ref_of(uid), 1))
        kube.clear_faults()
        await trio.to_thread.run_sync(kube.stop_server)
        results.append(await actions.delete(ref_of(uid), 1))
    assert [r.outcome for r in results] == [PodOutcome.FAILED] * 4, results
    assert "not known" in results[0].detail
    assert results[1].detail.startswith("500 ")
    assert "within 5s" in results[2].detail
    assert results[3].detail.startswith("no answer")
    assert actions.counts["evict", "failed"] == 2
