"""Memory QoS classes and direct annotations (pure): the plan per container, the config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import pytest

from memguard.policy.qos import QosClass, QosConfig, high_for, parse_qos_config, plan_memory_qos

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
PAGE = 4 * KIB

# The NRI memory-qos plugin's example configuration.
NRI_CLASSES: list[dict[str, Any]] = [
    {"name": "bronze", "swaplimitratio": 0.5},
    {"name": "silver", "swaplimitratio": 0.2},
]
NRI_UNIFIED = ["memory.high", "memory.swap.max"]

# Ratios as the decimal text an operator writes; the config gets float(text).
RATIOS = {"bronze": "0.5", "silver": "0.2", "gold": "0"}
CONFIG = parse_qos_config(
    [{"name": name, "swaplimitratio": float(text)} for name, text in RATIOS.items()], NRI_UNIFIED
)
LIMIT = 3 * GIB + 12_345  # not page-aligned on purpose
GIB_S = str(GIB)

CLASS = "class.memory-qos.nri.io"
HIGH = "memory.high.memory-qos.nri.io"
SWAP = "memory.swap.max.memory-qos.nri.io"


def expected_high(limit: int, ratio_text: str, page: int) -> int:
    """limit x (1 - ratio) rounded down to a page, at least one page; exact arithmetic."""
    keep = Fraction(limit) * (1 - Fraction(ratio_text))
    return max(page, math.floor(keep / page) * page)


def class_high(name: str, limit: int = LIMIT) -> str:
    return str(expected_high(limit, RATIOS[name], PAGE))


def plan(annotations: Mapping[str, str], container: str = "c0", limit: int | None = LIMIT) -> Any:
    return plan_memory_qos(annotations, container, limit, PAGE, CONFIG)


# high_for ------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [PAGE, 64 * KIB])
@pytest.mark.parametrize(
    ("limit", "ratio_text"),
    [
        (GIB, "0.0"),
        (GIB, "1.0"),
        (GIB, "0.2"),
        (GIB, "0.5"),
        (GIB + 1, "0.0"),
        (GIB - 1, "0.0"),
        (GIB + 12_345, "0.2"),
        (3 * GIB + 12_345, "0.5"),
        (10 * MIB + 7, "0.3"),
        (512 * MIB, "0.25"),
        (1_000_000_000, "0.1"),
        (1_000_000_000, "0.9"),
        (123_456_789, "0.33"),
        (5 * PAGE, "0.2"),  # exactly 4 pages of 4 KiB
        (PAGE - 1, "0.0"),  # below a page: still one page
        (PAGE, "0.5"),
        (1, "0.0"),
        (0, "0.0"),
        (64 * GIB + 3, "0.75"),
        (100 * MIB, "0.07"),  # float: 104857600 * 0.07 = 7340032.000000001
        (25 * MIB, "0.55"),  # float: 26214400 * 0.55 = 14417920.000000002
    ],
)
def test_high_for_is_limit_times_one_minus_ratio_in_pages(
    limit: int, ratio_text: str, page: int
) -> None:
    got = high_for(limit, float(ratio_text), page)
    assert got == expected_high(limit, ratio_text, page)
    assert got % page == 0
    assert got >= page


@pytest.mark.parametrize("limit", [GIB, GIB + 1, 7 * PAGE + 5, 12_345_678])
def test_high_for_extremes(limit: int) -> None:
    assert high_for(limit, 0.0, PAGE) == limit - limit % PAGE
    assert high_for(limit, 1.0, PAGE) == PAGE
    assert high_for(limit, 0.0, PAGE) >= high_for(limit, 0.2, PAGE) >= high_for(limit, 0.5, PAGE)


# plan_memory_qos: what is written ------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "container", "writes", "class_name"),
    [
        # pod-wide class reaches every container
        (
            {CLASS: "silver"},
            "c0",
            {"memory.high": class_high("silver"), "memory.swap.max": "max"},
            "silver",
        ),
        (
            {CLASS: "silver"},
            "c7",
            {"memory.high": class_high("silver"), "memory.swap.max": "max"},
            "silver",
        ),
        # a container's own class beats the pod's, only for that container
        (
            {CLASS: "silver", f"{CLASS}/c0": "bronze"},
            "c0",
            {"memory.high": class_high("bronze"), "memory.swap.max": "max"},
            "bronze",
        ),
        (
            {CLASS: "silver", f"{CLASS}/c0": "bronze"},
            "c1",
            {"memory.high": class_high("silver"), "memory.swap.max": "max"},
            "silver",
        ),
        # an empty override removes the pod's class
        ({CLASS: "silver", f"{CLASS}/c0": ""}, "c0", {}, None),
        ({CLASS: ""}, "c0", {}, None),
        # ratio 0: memory.high is the page-aligned limit, and swap is left alone
        ({CLASS: "gold"}, "c0", {"memory.high": str(LIMIT - LIMIT % PAGE)}, "gold"),
        # a direct annotation overrides the class's value
        (
            {CLASS: "silver", f"{HIGH}/c0": "max"},
            "c0",
            {"memory.high": "max", "memory.swap.max": "max"},
            "silver",
        ),
        (
            {CLASS: "gold", f"{SWAP}/c0": "0"},
            "c0",
            {"memory.high": str(LIMIT - LIMIT % PAGE), "memory.swap.max": "0"},
            "gold",
        ),
        # pod-wide direct annotations apply to every container
        ({SWAP: "0", HIGH: GIB_S}, "c0", {"memory.swap.max": "0", "memory.high": GIB_S}, None),
        ({SWAP: "0", HIGH: GIB_S}, "c3", {"memory.swap.max": "0", "memory.high": GIB_S}, None),
        # container-specific beats pod-wide
        ({HIGH: GIB_S, f"{HIGH}/c0": "max"}, "c0", {"memory.high": "max"}, None),
        ({HIGH: GIB_S, f"{HIGH}/c0": "max"}, "c1", {"memory.high": GIB_S}, None),
        # an empty container value drops the pod-wide direct value (the class's stays)
        ({HIGH: GIB_S, f"{HIGH}/c0": ""}, "c0", {}, None),
        (
            {CLASS: "bronze", HIGH: GIB_S, f"{HIGH}/c0": ""},
            "c0",
            {"memory.high": class_high("bronze"), "memory.swap.max": "max"},
            "bronze",
        ),
        # annotations for other containers are ignored
        ({f"{CLASS}/c1": "bronze", f"{HIGH}/c1": "max", f"{SWAP}/c10": "0"}, "c0", {}, None),
        (
            {CLASS: "silver", f"{CLASS}/c1": "bronze", f"{HIGH}/c1": "max"},
            "c0",
            {"memory.high": class_high("silver"), "memory.swap.max": "max"},
            "silver",
        ),
        # even a bad one (unknown class, file not allowed) for another container
        (
            {CLASS: "silver", f"{CLASS}/c1": "platinum", "memory.max.memory-qos.nri.io/c1": "1"},
            "c0",
            {"memory.high": class_high("silver"), "memory.swap.max": "max"},
            "silver",
        ),
        # unrelated annotations are ignored
        (
            {
                "io.kubernetes.cri.sandbox-id": "abc def",
                "class.other-qos.example.io": "platinum",
                "memory.high": "max",
                "memory.high/c0": "max",
                "memory.high.memory-qos.nri.io.example.com": "oops value",
                "kubectl.kubernetes.io/last-applied-configuration": "{\n}",
            },
            "c0",
            {},
            None,
        ),
        ({}, "c0", {}, None),
    ],
)
def test_plan_writes(
    annotations: dict[str, str], container: str, writes: dict[str, str], class_name: str | None
) -> None:
    result = plan(annotations, container)
    assert result.problems == ()
    assert dict(result.writes) == writes
    assert result.class_name == class_name


def test_class_writes_follow_the_limit() -> None:
    """memory.high tracks each container's own limit, not a constant."""
    for limit in (256 * MIB, GIB + 1, 8 * GIB - 3):
        for name in RATIOS:
            got = plan({CLASS: name}, limit=limit).writes["memory.high"]
            assert got == str(expected_high(limit, RATIOS[name], PAGE))
            assert int(got) <= limit


def test_unlimited_container_gets_no_memory_high_but_still_swap() -> None:
    silver = plan({CLASS: "silver"}, limit=None)
    assert dict(silver.writes) == {"memory.swap.max": "max"}
    assert silver.problems == ()
    assert silver.notes
    assert any("memory.high" in note and "silver" in note for note in silver.notes)
    gold = plan({CLASS: "gold"}, limit=None)
    assert dict(gold.writes) == {}
    assert gold.problems == ()
    assert gold.notes
    # a direct value still applies without a limit
    direct = plan({CLASS: "silver", f"{HIGH}/c0": "2G"}, limit=None)
    assert dict(direct.writes) == {"memory.high": "2G", "memory.swap.max": "max"}


def test_limited_container_has_no_notes() -> None:
    assert plan({CLASS: "silver"}).notes == ()


# plan_memory_qos: problems mean nothing is written -------------------------------------------

TOO_LONG = "9" * 65


@pytest.mark.parametrize(
    ("annotations", "fragments"),
    [
        ({CLASS: "platinum"}, ["'platinum'", "bronze", "gold", "silver"]),
        ({CLASS: "silver", f"{CLASS}/c0": "platinum"}, ["'platinum'", "bronze", "silver"]),
        (
            {"memory.max.memory-qos.nri.io/c0": "1G"},
            ["memory.max", "unifiedannotations", "memory.high", "memory.swap.max"],
        ),
        (
            {CLASS: "silver", "memory.max.memory-qos.nri.io": "1G"},
            ["memory.max.memory-qos.nri.io", "memory.high, memory.swap.max"],
        ),
        ({f"{HIGH}/c0": "1\n2"}, [HIGH, "'1\\n2'"]),
        ({f"{HIGH}/c0": "1 G"}, [HIGH, "'1 G'"]),
        ({f"{HIGH}/c0": "1\tG"}, [HIGH]),
        ({f"{SWAP}/c0": TOO_LONG}, [SWAP, TOO_LONG]),
        ({f"{HIGH}/c0": "max\x00"}, [HIGH]),
        # a problem also drops the class's own writes
        ({CLASS: "silver", f"{HIGH}/c0": "1 G"}, ["'1 G'"]),
        ({CLASS: "silver", f"{SWAP}/c0": TOO_LONG}, [TOO_LONG]),
    ],
)
def test_plan_problems_write_nothing(annotations: dict[str, str], fragments: list[str]) -> None:
    result = plan(annotations)
    assert dict(result.writes) == {}
    assert result.problems
    text = "\n".join(result.problems)
    for fragment in fragments:
        assert fragment in text


def test_value_of_exactly_64_characters_is_accepted() -> None:
    value = "9" * 64
    assert dict(plan({f"{HIGH}/c0": value}).writes) == {"memory.high": value}


def test_unknown_class_with_no_classes_configured() -> None:
    only_files = parse_qos_config(None, ["memory.high"])
    result = plan_memory_qos({CLASS: "silver"}, "c0", GIB, PAGE, only_files)
    assert dict(result.writes) == {}
    assert len(result.problems) == 1
    assert "'silver'" in result.problems[0]
    assert "none" in result.problems[0]


def test_direct_annotation_refused_when_nothing_is_allowed() -> None:
    classes_only = parse_qos_config(NRI_CLASSES, None)
    result = plan_memory_qos({f"{HIGH}/c0": "max"}, "c0", GIB, PAGE, classes_only)
    assert dict(result.writes) == {}
    assert "memory.high" in result.problems[0]
    assert "none" in result.problems[0]


# parse_qos_config ----------------------------------------------------------------------------


def test_nri_plugin_example() -> None:
    config = parse_qos_config(NRI_CLASSES, NRI_UNIFIED)
    assert config.enabled
    assert dict(config.classes) == {
        "bronze": QosClass("bronze", Fraction(1, 2)),
        "silver": QosClass("silver", Fraction(1, 5)),
    }
    assert config.unified_files == frozenset(NRI_UNIFIED)


def test_ratio_is_optional_and_integers_are_accepted() -> None:
    config = parse_qos_config(
        [
            {"name": "none"},
            {"name": "all", "swaplimitratio": 1},
            {"name": "zero", "swaplimitratio": 0},
        ],
        None,
    )
    assert config.classes["none"].swap_limit_ratio == 0
    assert config.classes["all"].swap_limit_ratio == 1
    assert isinstance(config.classes["all"].swap_limit_ratio, Fraction)
    assert config.unified_files == frozenset()
    assert config.enabled


@pytest.mark.parametrize(
    ("classes", "unified"),
    [(None, None), ([], []), (None, []), ([], None)],
)
def test_empty_config_is_disabled(classes: Any, unified: Any) -> None:
    config = parse_qos_config(classes, unified)
    assert not config.enabled
    assert dict(config.classes) == {}
    assert config.unified_files == frozenset()
    assert config == QosConfig()


def test_only_unified_files_enable_it() -> None:
    assert parse_qos_config(None, ["memory.high"]).enabled


@pytest.mark.parametrize(
    ("classes", "unified", "fragments"),
    [
        ([{"name": "x", "swaplimitratio": 2}], None, ["classes[0]", "2"]),
        ([{"name": "x", "swaplimitratio": -0.1}], None, ["classes[0]", "-0.1"]),
        ([{"name": "x", "swaplimitratio": "abc"}], None, ["classes[0]", "'abc'"]),
        ([{"name": "x", "swaplimitratio": True}], None, ["classes[0]", "True"]),
        ([{"name": "x", "swaplimitratio": float("nan")}], None, ["classes[0]", "nan"]),
        ([{"name": "x", "swaplimitratio": float("inf")}], None, ["classes[0]", "inf"]),
        ([{"name": "x", "swaplimitratio": None}], None, ["classes[0]", "None"]),
        (
            [{"name": "ok", "swaplimitratio": 0.1}, {"name": "x", "swaplimitratio": 1.5}],
            None,
            ["classes[1]", "1.5"],
        ),
        (
            [{"name": "silver"}, {"name": "silver", "swaplimitratio": 0.5}],
            None,
            ["classes[1]", "'silver'"],
        ),
        ([{"swaplimitratio": 0.2}], None, ["classes[0]", "name"]),
        ([{"name": "", "swaplimitratio": 0.2}], None, ["classes[0]", "name"]),
        ([{"name": "  "}], None, ["classes[0]", "name"]),
        ([{"name": 7}], None, ["classes[0]", "name"]),
        ([{"name": "x", "swaplimit": 0.2}], None, ["classes[0]", "swaplimit"]),
        ([{"name": "x", "swapLimitRatio": 0.2}], None, ["classes[0]", "swapLimitRatio"]),
        (["silver"], None, ["classes[0]"]),
        ({"silver": 0.2}, None, ["classes"]),
        ("silver", None, ["classes"]),
        (None, "memory.high", ["unifiedannotations"]),
        (None, {"memory.high": True}, ["unifiedannotations"]),
        (None, ["cgroup.procs"], ["unifiedannotations[0]", "'cgroup.procs'"]),
        (None, ["memory.high", "memory/../x"], ["unifiedannotations[1]", "'memory/../x'"]),
        (None, ["memory.high/../../cgroup.procs"], ["unifiedannotations[0]", "cgroup.procs"]),
        (None, ["memory..high"], ["unifiedannotations[0]", "'memory..high'"]),
        (None, ["memory.high\n"], ["unifiedannotations[0]"]),
        (None, ["memory.max "], ["unifiedannotations[0]"]),
        (None, ["high"], ["unifiedannotations[0]", "'high'"]),
        (None, [5], ["unifiedannotations[0]", "5"]),
        (None, [None], ["unifiedannotations[0]", "None"]),
    ],
)
def test_parse_qos_config_errors_name_the_culprit(
    classes: Any, unified: Any, fragments: list[str]
) -> None:
    with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is checked below
        parse_qos_config(classes, unified)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("classes", [5, True, 0.5])
def test_classes_that_are_not_iterable_are_a_value_error(classes: Any) -> None:
    with pytest.raises(ValueError, match="classes"):
        parse_qos_config(classes, None)


def test_a_containers_own_value_shields_it_from_a_bad_pod_wide_one() -> None:
    annotations = {
        "memory.high.memory-qos.nri.io": "1 G",  # malformed, but c0 overrides it
        "memory.high.memory-qos.nri.io/c0": "max",
    }
    assert plan(annotations, "c0").writes == {"memory.high": "max"}
    assert plan(annotations, "c1").problems  # c1 gets the malformed pod-wide value
