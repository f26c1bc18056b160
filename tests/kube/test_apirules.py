"""The API-server rules the emulator enforces, checked without a server."""

from __future__ import annotations

from typing import Any

import pytest

from testing.kube import apirules

POD = {
    "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web", "tier": "a"}},
    "spec": {"nodeName": "node-a"},
    "status": {"phase": "Running"},
}
EVENT_V1 = {
    "metadata": {"name": "web-0.1", "namespace": "shop"},
    "regarding": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "u1"},
    "reportingController": "memguard",
    "reason": "OomGuardFlush",
    "type": "Warning",
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("spec.nodeName=node-a", True),
        ("spec.nodeName==node-a,status.phase=Running", True),
        ("spec.nodeName!=node-a", False),
        ("spec.nodeName=", False),
        ("status.podIP=", True),  # absent selects as ""
        ("spec.hostNetwork=false", True),  # absent bool selects as "false"
        ("metadata.namespace=shop,metadata.name=web-0", True),
    ],
)
def test_pod_field_selector(selector: str, expected: bool) -> None:
    assert apirules.field_selector("v1/pods", selector)(POD) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("regarding.uid=u1", True),
        ("involvedObject.name=web-0,reason=OomGuardFlush", True),
        ("reportingController=memguard", True),
        ("type=Normal", False),
    ],
)
def test_events_v1_field_selector(selector: str, expected: bool) -> None:
    matches = apirules.field_selector("events.k8s.io/v1/events", selector)
    assert matches(EVENT_V1) is expected


@pytest.mark.parametrize(
    ("resource", "selector"),
    [("v1/pods", "spec.containers=x"), ("v1/nodes", "spec.nodeName=a"), ("v1/pods", "nodeName")],
)
def test_unsupported_field_selectors_raise(resource: str, selector: str) -> None:
    with pytest.raises(apirules.SelectorError):
        apirules.field_selector(resource, selector)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", True),
        ("app==web,tier", True),
        ("app!=web", False),
        ("!tier", False),
        ("missing!=x", True),
        ("", True),
    ],
)
def test_label_selector(selector: str, expected: bool) -> None:
    assert apirules.label_selector(selector)(POD) is expected


def test_set_based_label_selectors_are_not_emulated() -> None:
    with pytest.raises(apirules.SelectorError, match="not emulated"):
        apirules.label_selector("app in (web,api)")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("memguard", True),
        ("memguard.io/agent", True),
        ("-memguard", False),
        ("Memguard.IO/agent", False),
        ("a" * 64, False),
    ],
)
def test_qualified_name(value: str, expected: bool) -> None:
    assert apirules.is_qualified_name(value) is expected


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({}, None),
        ({"series": {"count": 2, "lastObservedTime": "2025-01-01T00:00:00.000001Z"}}, None),
        ({"series": {"count": 3, "lastObservedTime": "2025-01-01T00:00:01.000000Z"}}, None),
        ({"note": "changed"}, "message: field is immutable"),
        ({"deprecatedCount": 5}, "count: field is immutable"),
        ({"series": {"count": 1, "lastObservedTime": "2025-01-01T00:00:00.000001Z"}}, "least 2"),
    ],
)
def test_event_v1_update_rules(change: dict[str, Any], error: str | None) -> None:
    old = {
        **EVENT_V1,
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "action": "Flush",
        "reportingInstance": "node-a",
        "note": "flushed",
    }
    assert apirules.event_create_errors(old, apirules.EVENTS_V1) == []
    errors = apirules.event_update_errors({**old, **change}, old, apirules.EVENTS_V1)
    if error is None:
        assert errors == []
    else:
        assert len(errors) == 1
        assert error in errors[0]


def test_core_v1_events_keep_the_legacy_rules() -> None:
    legacy = {
        "metadata": {"name": "web-0.2", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "namespace": "other", "name": "web-0"},
    }
    assert apirules.event_create_errors(legacy, apirules.CORE_V1) == [
        "involvedObject.namespace: does not match event.namespace"
    ]
    legacy["involvedObject"]["namespace"] = "shop"
    assert apirules.event_create_errors(legacy, apirules.CORE_V1) == []
