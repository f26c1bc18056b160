"""memguard.io annotations and protection -> ContainerOverrides: precedence, bad values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.kube.pods import kept_annotation, read_pod
from memguard.policy.annotations import (
    CRITICAL_PRIORITY,
    OWN_POD,
    PodFacts,
    Protection,
    container_overrides,
    setting_of,
)
from memguard.policy.model import Policy
from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides, MarginOverride

MI = 1 << 20
DEFAULT = Protection()


def overrides_of(annotations: dict[str, str], container: str | None = "web") -> ContainerOverrides:
    found, problems = container_overrides(PodFacts("shop", 0, annotations, container), DEFAULT)
    assert problems == ()
    return found


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, NO_OVERRIDES),
        ({"memguard.io/policy": "noop"}, ContainerOverrides(policy=Policy.NOOP)),
        # the container's key wins over the pod's, whichever is listed first
        (
            {"memguard.io/policy": "noop", "policy.memguard.io/web": "process"},
            ContainerOverrides(policy=Policy.PROCESS),
        ),
        (
            {"policy.memguard.io/web": "process", "memguard.io/policy": "noop"},
            ContainerOverrides(policy=Policy.PROCESS),
        ),
        # another container's key does not reach this one
        (
            {"memguard.io/policy": "noop", "policy.memguard.io/db": "process"},
            ContainerOverrides(policy=Policy.NOOP),
        ),
        ({"memguard.io/ignore": "true"}, ContainerOverrides(ignore=True)),
        ({"memguard.io/ignore": "True", "ignore.memguard.io/web": "false"}, NO_OVERRIDES),
        ({"memguard.io/margin": "64Mi"}, ContainerOverrides(margin=MarginOverride(bytes=64 * MI))),
        ({"memguard.io/margin": "1048576"}, ContainerOverrides(margin=MarginOverride(bytes=MI))),
        ({"memguard.io/margin": "1G"}, ContainerOverrides(margin=MarginOverride(bytes=10**9))),
        ({"memguard.io/margin": "10%"}, ContainerOverrides(margin=MarginOverride(ratio=0.1))),
        (
            {"memguard.io/soft-margin": "20%", "soft-margin.memguard.io/web": "128Mi"},
            ContainerOverrides(soft_margin=MarginOverride(bytes=128 * MI)),
        ),
        ({"memguard.io/grace-period": "30s"}, ContainerOverrides(grace_period_s=30.0)),
        ({"memguard.io/grace-period": "2m"}, ContainerOverrides(grace_period_s=120.0)),
        ({"memguard.io/grace-period": "45"}, ContainerOverrides(grace_period_s=45.0)),
        ({"grace-period.memguard.io/web": "0"}, ContainerOverrides(grace_period_s=0.0)),
        # memory QoS's keys and others are not memguard.io settings
        ({"class.memory-qos.nri.io/web": "gold", "example.com/policy": "x"}, NO_OVERRIDES),
    ],
)
def test_precedence(annotations: dict[str, str], expected: ContainerOverrides) -> None:
    assert overrides_of(annotations) == expected


def test_an_unknown_container_reads_the_pods_keys_only() -> None:
    annotations = {"memguard.io/policy": "noop", "policy.memguard.io/web": "process"}
    assert overrides_of(annotations, container=None).policy is Policy.NOOP


@pytest.mark.parametrize(
    ("annotations", "field", "value", "bad_key", "why"),
    [
        # a bad container value: the pod's applies; a bad pod value: the flag's (None)
        (
            {"memguard.io/policy": "noop", "policy.memguard.io/web": "proces"},
            "policy", Policy.NOOP, "policy.memguard.io/web", "is not a policy (",
        ),
        ({"memguard.io/policy": "kill"}, "policy", None, "memguard.io/policy", "is not a policy"),
        ({"memguard.io/ignore": "yes"}, "ignore", False, "memguard.io/ignore", "not true or false"),
        ({"memguard.io/margin": "lots"}, "margin", None, "memguard.io/margin", "is not a size"),
        ({"memguard.io/margin": "0%"}, "margin", None, "memguard.io/margin", "out of range"),
        ({"memguard.io/margin": "100%"}, "margin", None, "memguard.io/margin", "out of range"),
        ({"memguard.io/margin": "2Ti"}, "margin", None, "memguard.io/margin", "at most 1Ti"),
        ({"memguard.io/margin": "0.1"}, "margin", None, "memguard.io/margin", "as a percentage"),
        ({"memguard.io/margin": "-5Mi"}, "margin", None, "memguard.io/margin", "is not a size"),
        (
            {"memguard.io/soft-margin": "10%", "soft-margin.memguard.io/web": "1m"},
            "soft_margin", MarginOverride(ratio=0.1), "soft-margin.memguard.io/web", "not a size",
        ),
        (
            {"memguard.io/grace-period": "soon"},
            "grace_period_s", None, "memguard.io/grace-period", "is not a duration",
        ),
        (
            {"memguard.io/grace-period": "2h"},
            "grace_period_s", None, "memguard.io/grace-period", "out of range: 0s .. 1h",
        ),
    ],
)  # fmt: skip
def test_a_bad_value_is_a_problem_and_the_next_level_applies(
    annotations: dict[str, str], field: str, value: Any, bad_key: str, why: str
) -> None:
    found, problems = container_overrides(PodFacts("shop", 0, annotations, "web"), DEFAULT)
    assert getattr(found, field) == value
    [problem] = problems
    assert problem.key == bad_key
    assert problem.value == annotations[bad_key]
    assert why in problem.why
    assert bad_key in problem.describe()


def test_an_unknown_memguard_key_is_a_problem() -> None:
    found, problems = container_overrides(
        PodFacts("shop", 0, {"memguard.io/polcy": "noop"}, "web"), DEFAULT
    )
    assert found == NO_OVERRIDES
    [problem] = problems
    assert problem.key == "memguard.io/polcy"
    assert "not a memguard.io setting" in problem.why


@pytest.mark.parametrize(
    ("facts", "settings", "why"),
    [
        (PodFacts("kube-system"), DEFAULT, "namespace kube-system is protected"),
        (PodFacts("kube-system"), Protection(frozenset()), None),
        (PodFacts("shop"), Protection(frozenset({"shop", "infra"})), "namespace shop is protected"),
        (PodFacts("shop", CRITICAL_PRIORITY), DEFAULT, "priority 2000000000 is critical"),
        (PodFacts("shop", 2_000_001_000), DEFAULT, "--act-on-critical"),
        (PodFacts("shop", CRITICAL_PRIORITY), Protection(act_on_critical=True), None),
        (PodFacts("shop", CRITICAL_PRIORITY - 1), DEFAULT, None),
        (PodFacts("shop", None), DEFAULT, None),
        (PodFacts("shop", own_pod=True), Protection(frozenset(), act_on_critical=True), OWN_POD),
    ],
)
def test_protection(facts: PodFacts, settings: Protection, why: str | None) -> None:
    found, _ = container_overrides(facts, settings)
    if why is None:
        assert found.protected is None
    else:
        assert found.protected is not None
        assert why in found.protected


@given(st.dictionaries(st.sampled_from(["memguard.io/", "policy.memguard.io/"]), st.text()))
def test_no_annotation_lifts_protection(annotations: dict[str, str]) -> None:
    prefixed = {f"{key}{value[:8]}": value for key, value in annotations.items()}
    facts = PodFacts("kube-system", CRITICAL_PRIORITY, prefixed, "web")
    found, _ = container_overrides(facts, DEFAULT)
    assert found.protected is not None


@given(st.dictionaries(st.text(max_size=40), st.text(max_size=40), max_size=8), st.text())
def test_any_annotations_give_overrides_never_an_exception(
    annotations: dict[str, str], container: str
) -> None:
    found, problems = container_overrides(PodFacts("shop", 0, annotations, container), DEFAULT)
    assert isinstance(found, ContainerOverrides)
    assert all(setting_of(problem.key) is not None for problem in problems)


def test_pod_facts_from_a_pod_object() -> None:
    metadata: dict[str, Any] = {
        "namespace": "shop", "name": "web-0", "uid": "u1",
        "deletionTimestamp": "2026-11-30T10:00:00Z",
        "annotations": {"memguard.io/policy": "noop", "policy.memguard.io/app": "process",
                        "kubectl.kubernetes.io/last-applied-configuration": "{}"},
    }  # fmt: skip
    spec = {"terminationGracePeriodSeconds": 45, "priority": 7}
    info = read_pod({"metadata": metadata, "spec": spec})
    assert info.annotations == {"memguard.io/policy": "noop", "policy.memguard.io/app": "process"}
    assert info.termination_grace_period_s == 45
    assert info.terminating
    assert not read_pod({"metadata": {**metadata, "deletionTimestamp": None}}).terminating


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        ("memguard.io/policy", True),
        ("policy.memguard.io/web", True),
        ("memguard.io.example.com/policy", False),
        ("notmemguard.io/policy", False),
    ],
)
def test_memguard_keys_are_kept(key: str, kept: bool) -> None:
    assert kept_annotation(key) is kept
