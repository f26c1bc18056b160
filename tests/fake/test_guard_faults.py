"""Guards under scripted faults: limit changes, vanishing files, garbage, flush cooldown."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from memguard.fake import drive, model
from memguard.fake.model import FakeMemory
from memguard.kernel import names
from memguard.policy.margin import threshold_bytes
from memguard.policy.model import MIB, CacheLimit, Policy
from memguard.reports.report import ReportKind
from testing.agents import (
    make_config,
    make_settings,
    report_matching,
    reported,
    running_agent,
    until,
    wait_guarded,
)

HEX = "d" * 64


@pytest.fixture
def container(empty_fake_root: str) -> str:
    path = os.path.join(empty_fake_root, "kubepods", f"pod{'1' * 8}-1111-1111-1111-{'1' * 12}", HEX)
    model.create(path, FakeMemory(limit_bytes=256 * MIB, anon_by_pid={0: 100 * MIB}))
    return path


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _write_in_place(path: str, text: str) -> None:
    """As `echo text > path` does: truncate and write the same inode."""
    with open(path, "w") as file:
        file.write(text)


async def test_limit_change_rearms_the_threshold(empty_fake_root: str, container: str) -> None:
    settings = make_settings()
    config = make_config(empty_fake_root, policy=Policy.NOOP)
    async with running_agent(config) as (agent, collect):
        supervisor = agent.supervisor
        expected = threshold_bytes(256 * MIB, settings)
        await until(
            supervisor.changes,
            lambda: supervisor.guards[container].armed_threshold_bytes == expected,
            "s.guards[container].armed_threshold_bytes == expected",
        )
        _write_in_place(os.path.join(container, names.LIMIT_FILE), str(128 * MIB))
        expected = threshold_bytes(128 * MIB, settings)
        await until(
            supervisor.changes,
            lambda: supervisor.guards[container].armed_threshold_bytes == expected,
            "s.guards[container].armed_threshold_bytes == expected",
        )
        assert collect.reports == []  # 100 MiB is still under the new threshold
        _write_in_place(os.path.join(container, names.LIMIT_FILE), str(96 * MIB))
        report = await reported(collect, container, ReportKind.NOOP)
    assert report.limit_bytes == 96 * MIB
    assert report.threshold_bytes == threshold_bytes(96 * MIB, settings)


async def test_vanished_file_pauses_the_guard_without_failing(
    empty_fake_root: str, container: str, autojump_clock: trio.testing.MockClock
) -> None:
    stat_path = os.path.join(container, names.STAT_FILE)
    config = make_config(empty_fake_root, policy=Policy.NOOP)
    async with running_agent(config) as (agent, collect):
        supervisor = agent.supervisor
        await wait_guarded(agent, 1)
        saved = _read(stat_path)
        os.unlink(stat_path)
        usage_path = os.path.join(container, names.USAGE_FILE)
        _write_in_place(usage_path, str(251 * MIB))  # wakes the guard: the stat is gone
        await trio.sleep(30)  # virtual time: several not-ready retries pass
        assert supervisor.guarded == {container}
        assert collect.reports == []
        _write_in_place(stat_path, saved)
        report = await reported(collect, container, ReportKind.NOOP)
    assert report.usage_bytes == 251 * MIB
    assert supervisor.failures == 0


async def test_garbage_in_memory_stat_is_tolerated(empty_fake_root: str, container: str) -> None:
    config = make_config(empty_fake_root, policy=Policy.NOOP)
    async with running_agent(config) as (_, collect):
        stat_path = os.path.join(container, names.STAT_FILE)
        lines = _read(stat_path).splitlines()
        garbage = ["", "total_cache", "rss x", "\x00\x01", "unknown_key 12 34", *lines, "junk"]
        _write_in_place(stat_path, "\n".join(garbage))
        _write_in_place(os.path.join(container, names.USAGE_FILE), str(255 * MIB))
        report = await reported(collect, container, ReportKind.NOOP)
    assert report.usage_bytes == 255 * MIB


async def test_garbage_usage_fails_one_guard_and_spares_the_others(
    empty_fake_root: str, container: str, autojump_clock: trio.testing.MockClock
) -> None:
    other = container.replace(HEX, "e" * 64)
    model.create(other, FakeMemory(limit_bytes=64 * MIB))
    config = make_config(empty_fake_root, policy=Policy.NOOP)
    async with running_agent(config) as (agent, collect):
        supervisor = agent.supervisor
        await wait_guarded(agent, 2)
        _write_in_place(os.path.join(container, names.USAGE_FILE), "not a number\n")
        await until(supervisor.changes, lambda: supervisor.failures >= 1, "s.failures >= 1")
        drive.step(empty_fake_root, other, drive.Kind.ANON, 63 * MIB)
        await reported(collect, other, ReportKind.NOOP)
        # Repaired, the failed guard comes back after its backoff and acts again.
        drive.step(empty_fake_root, container, drive.Kind.ANON, 155 * MIB)
        report = await reported(collect, container, ReportKind.NOOP)
    assert report.usage_bytes == 255 * MIB


async def test_flush_cooldown_goes_straight_to_the_policy(
    empty_fake_root: str, container: str, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(empty_fake_root, policy=Policy.NOOP, flush_cooldown_s=600.0)
    async with running_agent(config) as (_, collect):
        drive.step(empty_fake_root, container, drive.Kind.CACHE, 152 * MIB)
        flush = await reported(collect, container, ReportKind.FLUSH)
        assert flush.cache_after_bytes == 0
        drive.step(empty_fake_root, container, drive.Kind.CACHE, 152 * MIB)
        skip = await reported(collect, container, ReportKind.SKIP)
    assert "left to the kernel" in skip.reason
    assert [r.kind for r in collect.reports].count(ReportKind.FLUSH) == 1


async def test_v2_memory_max_change_rearms_and_events_wake_the_guard(
    tmp_path: os.PathLike[str],
) -> None:
    root = os.path.join(tmp_path, "v2tree")
    model.make_root(root, cgroup_version=2)
    path = os.path.join(
        root,
        "kubepods.slice",
        "kubepods-burstable.slice",
        f"kubepods-burstable-pod{'2' * 8}_2222_2222_2222_{'2' * 12}.slice",
        f"cri-containerd-{HEX}.scope",
    )
    model.create(path, FakeMemory(limit_bytes=256 * MIB, anon_by_pid={0: 100 * MIB}, version=2))
    settings = make_settings()
    async with running_agent(make_config(root, policy=Policy.NOOP)) as (agent, collect):
        supervisor = agent.supervisor
        expected = threshold_bytes(256 * MIB, settings)
        await until(
            supervisor.changes,
            lambda: supervisor.guards[path].armed_threshold_bytes == expected,
            "s.guards[path].armed_threshold_bytes == expected",
        )
        _write_in_place(os.path.join(path, "memory.max"), "max")
        await until(
            supervisor.changes,
            lambda: supervisor.guards[path].armed_threshold_bytes is None,
            "s.guards[path].armed_threshold_bytes is None",
        )
        _write_in_place(os.path.join(path, "memory.max"), str(100 * MIB))
        report = await reported(collect, path, ReportKind.NOOP)
    assert report.limit_bytes == 100 * MIB
    assert report.ref.qos_class == "Burstable"


async def test_cache_flusher_flushes_above_its_share_and_respects_the_cooldown(
    empty_fake_root: str, container: str, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(
        empty_fake_root, cache_flush_above=CacheLimit(ratio=0.25), flush_cooldown_s=30.0
    )
    async with running_agent(config) as (_, collect):
        drive.step(empty_fake_root, container, drive.Kind.CACHE, 80 * MIB)  # over 64 MiB
        first = await reported(collect, container, ReportKind.FLUSH)
        first_at_s = trio.current_time()
        assert "--flush-cache-above" in first.reason
        assert first.cache_before_bytes == 80 * MIB
        assert first.cache_after_bytes == 0  # v1 fake: force_empty drops all clean cache
        drive.step(empty_fake_root, container, drive.Kind.CACHE, 80 * MIB)
        second = await report_matching(
            collect, lambda r: r.kind is ReportKind.FLUSH and r is not first, "a second flush"
        )
        waited_s = trio.current_time() - first_at_s
    assert waited_s >= 30.0  # not before --flush-cooldown, though the cache was back at once
    assert second.cache_before_bytes == 80 * MIB
    flushes = [r for r in collect.reports if r.kind is ReportKind.FLUSH]
    assert len(flushes) == 2


async def test_cache_flusher_skips_unlimited_cgroups_for_a_share(
    empty_fake_root: str, autojump_clock: trio.testing.MockClock
) -> None:
    path = os.path.join(empty_fake_root, "kubepods", f"pod{'3' * 8}-3333-3333-3333-{'3' * 12}", HEX)
    model.create(path, FakeMemory(limit_bytes=None, clean_cache_bytes=500 * MIB))
    config = make_config(empty_fake_root, cache_flush_above=CacheLimit(ratio=0.25))
    async with running_agent(config) as (agent, collect):
        await wait_guarded(agent, 1)
        await trio.sleep(120)  # virtual time: several flush intervals pass
    assert collect.reports == []
