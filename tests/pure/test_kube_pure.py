"""The pure Kubernetes parts: pod parsing, Event bodies, series aggregation."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.kube.aggregate import Aggregator, Bump, Create, SeriesKey
from memguard.kube.events import (
    REPORTING_CONTROLLER,
    Regarding,
    build_event,
    event_name,
    micro_time,
    regarding_for,
    series_patch,
)
from memguard.kube.pods import ContainerInfo, bare_container_id, parse_pod
from memguard.policy.paths import ContainerRef
from memguard.reports.report import Report, ReportKind, Victim
from testing.kube import apirules

HEX = "ab" * 32
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web-0", "uid": UID, "resourceVersion": "42",
                     "annotations": {"a": "b", "class.memory-qos.nri.io": "silver"}},
        "spec": {"nodeName": "node-a", "priority": 1000},
        "status": {"qosClass": "Burstable", **status},
    }  # fmt: skip


@pytest.mark.parametrize("runtime", ["containerd", "cri-o", "docker"])
def test_container_ids_of_every_runtime_are_matched(runtime: str) -> None:
    info = parse_pod(pod(containerStatuses=[{"name": "app", "containerID": f"{runtime}://{HEX}"}]))
    assert info is not None
    assert info.container(HEX) == ContainerInfo("app", "spec.containers{app}")
    assert (info.namespace, info.name, info.uid, info.qos_class) == (
        "shop",
        "web-0",
        UID,
        "Burstable",
    )
    assert info.priority == 1000
    assert info.annotations == {"class.memory-qos.nri.io": "silver"}  # only memguard's kept


def test_init_and_ephemeral_containers_get_their_own_field_paths() -> None:
    info = parse_pod(pod(
        initContainerStatuses=[{"name": "setup", "containerID": f"containerd://{'1' * 64}"}],
        ephemeralContainerStatuses=[{"name": "debug", "containerID": f"containerd://{'2' * 64}"}],
        containerStatuses=[{"name": "app"}],  # not started yet: no id
    ))  # fmt: skip
    assert info is not None
    assert info.container("1" * 64) == ContainerInfo("setup", "spec.initContainers{setup}")
    assert info.container("2" * 64) == ContainerInfo("debug", "spec.ephemeralContainers{debug}")
    assert info.container(None) is None
    assert len(info.containers_by_id) == 2


@pytest.mark.parametrize(
    "broken", [{}, {"metadata": {"name": "x", "uid": "u"}}, {"metadata": {"namespace": 1}}]
)
def test_pods_without_identity_are_ignored(broken: dict[str, Any]) -> None:
    assert parse_pod(broken) is None


def test_bare_container_id() -> None:
    assert bare_container_id(f"cri-o://{HEX}") == HEX
    assert bare_container_id(HEX) == HEX
    assert bare_container_id("") == ""


@pytest.mark.parametrize(
    ("wall_s", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1795000000.5, "2026-11-18T11:06:40.500000Z"),
        (1795000000.9999996, "2026-11-18T11:06:41.000000Z"),  # rounds into the next second
    ],
)
def test_micro_time_has_exactly_six_digits(wall_s: float, expected: str) -> None:
    assert micro_time(wall_s) == expected


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_micro_time_parses_back_within_a_microsecond(wall_s: float) -> None:
    text = micro_time(wall_s)
    parsed = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
    assert abs(parsed.timestamp() - wall_s) <= 1e-6 + 1e-9 * wall_s


def test_event_names_stay_valid_for_the_longest_pod_names() -> None:
    name = event_name(Regarding("Pod", "p" * 253, "ns"), 2**63 - 1)
    assert len(name) <= 253
    assert name.endswith(f".{2**63 - 1:x}")


def report(kind: ReportKind, *, dry_run: bool = False) -> Report:
    ref = ContainerRef(UID, HEX, "Burstable", "containerd", "cgroupfs")
    return Report(
        kind,
        f"/kubepods/burstable/pod{UID}/{HEX}",
        ref,
        130 << 20,
        128 << 20,
        125 << 20,
        "process",
        "killed process",
        dry_run=dry_run,
        victims=(Victim(7, "java", 1000, 1 << 20, not dry_run),),
    )


@pytest.mark.parametrize("kind", list(ReportKind))
@pytest.mark.parametrize("about_pod", [True, False])
@pytest.mark.parametrize("dry_run", [False, True])
def test_every_event_body_passes_the_strict_schema_and_server_rules(
    kind: ReportKind, about_pod: bool, dry_run: bool
) -> None:
    info = parse_pod(pod(containerStatuses=[{"name": "app", "containerID": f"containerd://{HEX}"}]))
    the_report = report(kind, dry_run=dry_run)
    regarding = regarding_for(the_report, info if about_pod else None, "node-a")
    body = build_event(the_report, regarding, "node-a", 1795000000.0, event_name(regarding, 1))
    apirules.check_schema(body)
    assert apirules.event_create_errors(body, apirules.EVENTS_V1) == []
    assert body["reportingController"] == REPORTING_CONTROLLER
    normal = kind in (ReportKind.FLUSH, ReportKind.QOS_APPLIED)
    assert body["type"] == ("Normal" if normal else "Warning")
    if about_pod:
        assert body["regarding"]["fieldPath"] == "spec.containers{app}"
    else:
        assert body["regarding"] == {
            "apiVersion": "v1",
            "kind": "Node",
            "name": "node-a",
            "uid": "node-a",  # as the kubelet's own Node events
        }
        assert body["metadata"]["namespace"] == "default"
    killing = kind in (
        ReportKind.KILL_PROCESS,
        ReportKind.KILL_CONTAINER,
        ReportKind.TERMINATE,
        ReportKind.EVICT,
        ReportKind.DELETE,
    )
    assert body["action"].startswith("Would") == (dry_run and killing)


def test_series_patch_is_valid() -> None:
    patch = series_patch(3, 1795000000.25)
    assert patch == {"series": {"count": 3, "lastObservedTime": "2026-11-18T11:06:40.250000Z"}}


KEY = SeriesKey(
    Regarding("Pod", "web-0", "shop", UID), "OomGuardKillProcess", "KillProcess", "Warning"
)


def test_aggregation_bumps_within_the_window_and_restarts_after_it() -> None:
    aggregator = Aggregator(window_s=600)
    assert aggregator.plan(KEY, 0.0) == Create()
    aggregator.created(KEY, "web-0.1", "shop", 0.0)
    assert aggregator.plan(KEY, 300.0) == Bump("web-0.1", "shop", 2)
    aggregator.bumped(KEY, 2, 300.0)
    assert aggregator.plan(KEY, 899.0) == Bump("web-0.1", "shop", 3)  # 599 s after the last
    assert aggregator.plan(KEY, 901.0) == Create()  # 601 s after the last: a new Event
    assert len(aggregator) == 0


def test_aggregation_keys_are_per_object_and_reason() -> None:
    aggregator = Aggregator()
    aggregator.created(KEY, "web-0.1", "shop", 0.0)
    other = SeriesKey(KEY.regarding, "CgroupOOM", "Observe", "Warning")
    assert aggregator.plan(other, 1.0) == Create()
    aggregator.forget(KEY)
    assert aggregator.plan(KEY, 2.0) == Create()
