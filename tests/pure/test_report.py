"""Report.message(): one line of at most 1 KiB with the numbers; fields() is JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.model import MIB
from memguard.policy.paths import ContainerRef, parse_container_path
from memguard.reports.report import MESSAGE_MAX_BYTES, Report, ReportKind, Victim

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CID = "9a" * 32
# About as long as a real container cgroup path gets (systemd driver on v1).
LONG_CGROUP = (
    "/sys/fs/cgroup/memory/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope"
)
REF = ContainerRef(UID, CID, "Burstable", "containerd", "systemd")
STRESS = Victim(pid=31337, comm="stress-ng-vm", oom_score=987, rss_bytes=90 * MIB, killed=True)


BASE = Report(
    kind=ReportKind.KILL_PROCESS,
    cgroup=LONG_CGROUP,
    ref=REF,
    usage_bytes=99 * MIB,
    limit_bytes=100 * MIB,
    threshold_bytes=98 * MIB,
    policy="process",
    action="killed",
    reason="still over threshold 0.1s after a flush",
    cache_before_bytes=20 * MIB,
    cache_after_bytes=1 * MIB,
    victims=(STRESS,),
)


def report(**changes: Any) -> Report:
    return replace(BASE, **changes)


def assert_one_short_line(message: str) -> None:
    assert len(message.encode()) <= MESSAGE_MAX_BYTES
    assert len(message.splitlines()) == 1


def test_message_carries_the_numbers() -> None:
    message = report(usage_after_bytes=90 * MIB).message()
    assert_one_short_line(message)
    assert message.startswith("killed; ")
    assert message.endswith(f"; cgroup {LONG_CGROUP}")
    for part in [
        "usage 99.0MiB -> 90.0MiB",
        "limit 100.0MiB",
        "threshold 98.0MiB",
        "cache 20.0MiB -> 1.0MiB",
        "victims 31337/stress-ng-vm (oom_score 987)",
        "policy process",
        "still over threshold 0.1s after a flush",
    ]:
        assert part in message


@pytest.mark.parametrize(
    ("changes", "present", "absent"),
    [
        ({"limit_bytes": None, "threshold_bytes": None}, "limit unlimited", "limit 100"),
        ({"cache_after_bytes": None}, "cache 20.0MiB;", "->"),
        ({"cache_before_bytes": None, "cache_after_bytes": None}, "usage 99.0MiB;", "cache"),
        ({"victims": ()}, "threshold 98.0MiB;", "victims"),
        ({"survivors": 2}, "2 protected processes left", "more"),
        ({"oom_kills": 3, "kind": ReportKind.KERNEL_OOM}, "kernel OOM kills 3", "; ;"),
        ({"reason": ""}, "policy process", "; ;"),
    ],
)
def test_message_optional_parts(changes: dict[str, Any], present: str, absent: str) -> None:
    message = report(**changes).message()
    assert_one_short_line(message)
    assert present in message
    assert absent not in message


def test_message_with_a_thousand_victims_stays_short_and_keeps_the_numbers() -> None:
    victims = tuple(
        Victim(pid=10_000 + i, comm=f"worker-{i:07d}", oom_score=900, rss_bytes=MIB, killed=True)
        for i in range(1000)
    )
    message = report(victims=victims, kind=ReportKind.KILL_CONTAINER).message()
    assert_one_short_line(message)
    assert "usage 99.0MiB" in message
    assert "limit 100.0MiB" in message
    assert "threshold 98.0MiB" in message
    assert "10000/worker-0000000" in message
    assert "and 992 more" in message


@pytest.mark.parametrize("cgroup", ["/x/" + "a" * 5000, "/x/" + "é" * 3000, "/x/" + "€" * 700])
def test_message_from_a_huge_cgroup_path_is_cut_to_1_kib(cgroup: str) -> None:
    message = report(cgroup=cgroup).message()
    assert_one_short_line(message)
    assert "; cgroup ..." in message  # the path is shortened from its start
    assert message.endswith(cgroup[-40:])  # its end (the container id) is kept
    assert len(message.encode()) > MESSAGE_MAX_BYTES - 8  # cut near the limit, not earlier


def test_message_keeps_the_numbers_with_a_huge_cgroup_path() -> None:
    message = report(cgroup="/x/" + "a" * 2000).message()
    assert "threshold 98.0MiB" in message


def test_message_is_one_line_even_with_a_newline_in_comm() -> None:
    victim = Victim(pid=7, comm="evil\nFAKE", oom_score=1, rss_bytes=0, killed=True)
    assert len(report(victims=(victim,)).message().splitlines()) == 1


def test_message_survives_a_non_utf8_cgroup_name() -> None:
    assert "usage" in report(cgroup="/x/\udcff").message()


printable = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=0, max_size=3000
)
victims_st = st.lists(
    st.builds(
        Victim,
        pid=st.integers(1, 2**22),
        comm=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=15),
        oom_score=st.integers(0, 2000),
        rss_bytes=st.integers(0, 2**40),
        killed=st.booleans(),
    ),
    max_size=50,
).map(tuple)


@given(cgroup=printable, reason=printable, victims=victims_st)
def test_message_is_always_one_line_of_at_most_1_kib(
    cgroup: str, reason: str, victims: tuple[Victim, ...]
) -> None:
    assert_one_short_line(report(cgroup=cgroup, reason=reason, victims=victims).message())


def test_fields_are_json_ready_and_name_the_pod_and_container() -> None:
    data = report(extra={"node": "node-1"}, latency_s=0.0012).fields()
    decoded = json.loads(json.dumps(data))
    assert decoded["kind"] == "OomGuardKillProcess"
    assert decoded["pod_uid"] == UID
    assert decoded["container_id"] == CID
    assert decoded["qos_class"] == "Burstable"
    assert decoded["runtime"] == "containerd"
    assert "ref" not in decoded
    assert decoded["usage_bytes"] == 99 * MIB
    assert decoded["threshold_bytes"] == 98 * MIB
    victim = {"pid": 31337, "comm": "stress-ng-vm", "oom_score": 987, "rss_bytes": 90 * MIB}
    assert decoded["victims"] == [{**victim, "killed": True}]
    assert decoded["extra"] == {"node": "node-1"}


def test_fields_without_a_pod_carry_nulls() -> None:
    data = report(ref=ContainerRef(None, None, None, None, "leaf"), limit_bytes=None).fields()
    decoded = json.loads(json.dumps(data))
    assert decoded["pod_uid"] is None
    assert decoded["container_id"] is None
    assert decoded["limit_bytes"] is None


def test_golden_ref_matches_the_path_parser() -> None:
    assert parse_container_path(LONG_CGROUP) == REF


@pytest.mark.parametrize("kind", list(ReportKind), ids=lambda kind: kind.value)
def test_the_log_sink_logs_every_kind_at_its_level(kind: ReportKind) -> None:
    """Every kind has a level of its own (a missing one made the log sink fail)."""
    import logging

    import trio

    from memguard.reports.log_sink import _LEVELS, LogSink

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(f"test.log_sink.{kind.value}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Keep())
    trio.run(LogSink(logger).deliver, replace(BASE, kind=kind))
    assert kind in _LEVELS
    assert [(r.levelno, r.getMessage().split()[0]) for r in records] == [
        (_LEVELS[kind], kind.value)
    ]
