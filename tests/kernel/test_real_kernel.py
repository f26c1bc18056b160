"""memguard against the real kernel: real cgroups, hogs, page cache and kills.

cgroup v1 on this host; the same tests run on cgroup v2 inside the test VM
(tests/vm/test_v2_tier.py).
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import uuid
from collections.abc import Callable, Mapping
from fractions import Fraction

import pytest

from memguard.backends.v2 import Tripwire
from memguard.cli.config import RunConfig
from memguard.kernel import cgroupfs
from memguard.kube.pods import PodInfo, parse_pod
from memguard.policy.margin import threshold_bytes
from memguard.policy.model import MIB, CacheLimit, Policy
from memguard.policy.qos import QosClass, QosConfig, high_for
from memguard.reports.report import ReportKind
from testing.agents import (
    make_config,
    make_settings,
    open_fd_count,
    reported,
    running_agent,
    trio_task_count,
    until,
    wait_armed,
    wait_guarded,
)
from testing.cgroups import FDS_PER_GUARD, TEST_CGROUP_VERSION, CgroupTree

pytestmark = pytest.mark.kernel
KILLED = -signal.SIGKILL


def kill_config(cgroups: CgroupTree, policy: Policy) -> RunConfig:
    """memguard's defaults: v1's threshold eventfd wins every race; on v2 the
    memory.high tripwire (--high-tripwire auto: these cgroups' memory.high reads
    "max") does against a 100 MiB/s anon hog, by throttling the allocator past the
    threshold; the other signals' odds are measured in bench/v2_signals.py."""
    config = make_config(cgroups.parent, policy=policy)
    assert config.v2.tripwire is Tripwire.AUTO
    return config


async def test_process_policy_kills_a_fast_hog_before_the_kernel_does(
    cgroups: CgroupTree,
) -> None:
    cgroup = cgroups.container(limit_bytes=128 * MIB)
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=100)
    config = kill_config(cgroups, Policy.PROCESS)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, cgroup)
        hog.go()
        report = await reported(collect, cgroup, ReportKind.KILL_PROCESS)
        assert await hog.exited() == KILLED
    assert [v.pid for v in report.victims] == [hog.pid]
    assert report.latency_s is not None
    assert cgroups.oom_kills(cgroup) == 0
    assert report.threshold_bytes == threshold_bytes(128 * MIB, make_settings())


async def test_page_cache_is_flushed_and_nothing_is_killed(
    cgroups: CgroupTree, page_cache_dir: pathlib.Path
) -> None:
    cgroup = cgroups.container(limit_bytes=128 * MIB)
    target = os.path.join(page_cache_dir, "cache-filler")
    dd = cgroups.spawn(cgroup, ["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=400"])
    config = make_config(cgroups.parent, policy=Policy.PROCESS)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, cgroup)
        dd.go()
        assert await dd.exited() == 0
        flush = await reported(collect, cgroup, ReportKind.FLUSH)
    assert flush.cache_before_bytes is not None
    assert flush.cache_after_bytes is not None
    assert flush.cache_after_bytes < flush.cache_before_bytes
    kills = {ReportKind.KILL_PROCESS, ReportKind.KILL_CONTAINER, ReportKind.KERNEL_OOM}
    assert not [r for r in collect.reports if r.kind in kills]
    assert cgroups.oom_kills(cgroup) == 0


async def test_container_policy_kills_every_process_of_the_cgroup(cgroups: CgroupTree) -> None:
    cgroup = cgroups.container(limit_bytes=128 * MIB)
    sleepers = [cgroups.spawn(cgroup, ["sleep", "3600"]) for _ in range(2)]
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=100)
    config = kill_config(cgroups, Policy.CONTAINER)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, cgroup)
        for process in [*sleepers, hog]:
            process.go()
        report = await reported(collect, cgroup, ReportKind.KILL_CONTAINER)
        codes = [await process.exited() for process in [*sleepers, hog]]
    assert codes == [KILLED] * 3
    assert sorted(v.pid for v in report.victims) == sorted(p.pid for p in [*sleepers, hog])
    assert report.survivors == 0
    assert cgroupfs.read_procs(cgroup) == []
    assert cgroups.oom_kills(cgroup) == 0


async def test_noop_kills_nothing_and_reports_the_kernel_oom(cgroups: CgroupTree) -> None:
    cgroup = cgroups.container(limit_bytes=64 * MIB)
    hog = cgroups.hog(cgroup, target_mib=128, rate_mib_s=100)
    config = make_config(cgroups.parent, policy=Policy.NOOP)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, cgroup)
        hog.go()
        noop = await reported(collect, cgroup, ReportKind.NOOP)
        assert await hog.exited() == KILLED  # by the kernel's OOM killer
        oom = await reported(collect, cgroup, ReportKind.KERNEL_OOM)
    assert noop.victims == ()
    assert oom.oom_kills >= 1
    assert cgroups.oom_kills(cgroup) >= 1


async def test_rmdir_of_a_guarded_cgroup_ends_its_guard_cleanly(cgroups: CgroupTree) -> None:
    cgroup = cgroups.container(limit_bytes=64 * MIB)
    async with running_agent(make_config(cgroups.parent)) as (agent, _):
        supervisor = agent.supervisor
        await wait_armed(agent, cgroup)
        fds_armed = open_fd_count()
        cgroups.remove(cgroup)
        await wait_guarded(agent, 0)
        assert supervisor.failures == 0
        # the guard's fds are closed (at most: a worker thread's file open when
        # fds_armed was counted may be closed by now too)
        assert open_fd_count() <= fds_armed - FDS_PER_GUARD


async def test_limit_change_rearms_the_kernel_threshold(cgroups: CgroupTree) -> None:
    cgroup = cgroups.container(limit_bytes=256 * MIB)
    settings = make_settings()
    async with running_agent(make_config(cgroups.parent)) as (agent, _):
        supervisor = agent.supervisor
        await wait_armed(agent, cgroup)
        cgroups.set_limit(cgroup, 128 * MIB)
        expected = threshold_bytes(128 * MIB, settings)
        await until(
            supervisor.changes,
            lambda: supervisor.guards[cgroup].armed_threshold_bytes == expected,
            "s.guards[cgroup].armed_threshold_bytes == expected",
        )


async def test_many_real_cgroups_come_and_go_without_leaks(cgroups: CgroupTree) -> None:
    count = 500 if cgroups.version == 1 else 100  # the v2 VM is emulated (TCG): slow
    async with running_agent(make_config(cgroups.parent)) as (agent, _):
        supervisor = agent.supervisor
        tasks_before, fds_before = trio_task_count(), open_fd_count()
        paths = [cgroups.container(limit_bytes=64 * MIB, index=i) for i in range(count)]
        await until(
            supervisor.changes,
            lambda: len(supervisor.guards) == count and supervisor.armed == count,
            f"{count} guards armed",
        )
        assert open_fd_count() == fds_before + count * FDS_PER_GUARD
        for path in paths:
            cgroups.remove(path)
        await wait_guarded(agent, 0)
        assert trio_task_count() == tasks_before
        assert open_fd_count() == fds_before
        assert supervisor.failures == 0


async def test_cache_flusher_reclaims_page_cache_above_its_limit(
    cgroups: CgroupTree, page_cache_dir: pathlib.Path
) -> None:
    cgroup = cgroups.container(limit_bytes=1024 * MIB)
    target = os.path.join(page_cache_dir, "flusher-cache")
    # The cache is written (and synced: clean pages) before the agent starts, so the
    # flush sees all of it at once rather than racing dd's dirty pages.
    argv = ["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=200", "conv=fsync"]
    dd = cgroups.spawn(cgroup, argv)
    dd.go()
    assert await dd.exited() == 0
    config = make_config(
        cgroups.parent,
        cache_flush_above=CacheLimit(size_bytes=64 * MIB),
        cache_flush_interval_s=0.5,
    )
    async with running_agent(config) as (_, collect):
        flush = await reported(collect, cgroup, ReportKind.FLUSH)
    assert "--flush-cache-above" in flush.reason
    assert flush.cache_before_bytes is not None
    assert flush.cache_after_bytes is not None
    assert flush.cache_before_bytes > 64 * MIB
    # v1 force_empty drops it all; v2 reclaims the excess over 64 MiB
    assert flush.cache_after_bytes <= 64 * MIB + 4 * MIB
    assert not [r for r in collect.reports if r.kind is not ReportKind.FLUSH]


class PodsByUid(dict[str, PodInfo]):
    """Pods as the pod cache would hold them (a memguard.qos.applier.PodSource)."""

    def container_view(
        self, pod_uid: str | None, container_id: str | None
    ) -> tuple[str, Mapping[str, str]] | None:
        pod = self.get(pod_uid or "")
        container = pod.container(container_id) if pod is not None else None
        return None if pod is None or container is None else (container.name, pod.annotations)

    def subscribe(self, listener: Callable[[str | None], None]) -> None:
        pass  # these pods never change

    def unsubscribe(self, listener: Callable[[str | None], None]) -> None:
        pass


def annotated_pod(uid: str, container_id: str, annotations: dict[str, str]) -> PodInfo:
    metadata = {"namespace": "shop", "name": "web-0", "uid": uid, "annotations": annotations}
    status = {"name": "app", "containerID": f"containerd://{container_id}"}
    pod = parse_pod({"metadata": metadata, "status": {"containerStatuses": [status]}})
    assert pod is not None
    return pod


async def test_memory_qos_is_written_on_v2_and_reported_unsupported_on_v1(
    cgroups: CgroupTree,
) -> None:
    qos = QosConfig({"silver": QosClass("silver", Fraction(1, 5))}, frozenset({"memory.high"}))
    config = make_config(cgroups.parent, memory_qos=qos)
    good_uid, bad_uid = str(uuid.uuid4()), str(uuid.uuid4())
    good_id, bad_id = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    pods = PodsByUid(
        {
            good_uid: annotated_pod(good_uid, good_id, {"class.memory-qos.nri.io": "silver"}),
            # allow-listed, well-formed, but not a value the kernel takes
            bad_uid: annotated_pod(bad_uid, bad_id, {"memory.high.memory-qos.nri.io": "lots"}),
        }
    )
    async with running_agent(config, pods=pods) as (_, collect):
        good = cgroups.container(128 * MIB, pod_uid=good_uid, container_id=good_id)
        bad = cgroups.container(128 * MIB, pod_uid=bad_uid, container_id=bad_id)
        if TEST_CGROUP_VERSION == 2:
            applied = await reported(collect, good, ReportKind.QOS_APPLIED)
            refused = await reported(collect, bad, ReportKind.QOS_INVALID)
            high = cgroups.read(good, "memory.high")
            assert int(high) == high_for(128 * MIB, Fraction(1, 5), os.sysconf("SC_PAGE_SIZE"))
            assert cgroups.read(good, "memory.swap.max") == "max"
            assert "class silver" in applied.reason
            assert "memory.high: the kernel refused 'lots'" in refused.reason
            assert cgroups.read(bad, "memory.high") == "max"
        else:
            unsupported = await reported(collect, good, ReportKind.QOS_UNSUPPORTED)
            assert "cgroup v1 has no equivalent of memory.high, memory.swap.max" in (
                unsupported.reason
            )
            await reported(collect, bad, ReportKind.QOS_UNSUPPORTED)
            assert "memory.high" not in cgroups.files(good)
    assert not [r for r in collect.reports if r.kind is ReportKind.QOS_APPLIED and r.cgroup == bad]


@pytest.mark.parametrize(
    ("args", "exit_code", "level"),
    [
        (["--verbose"], 0, "INFO"),  # a bare interpreter is far under 95 % of 128 MiB
        (["--warning", "1", "--failure", "90"], 0, "WARN"),
        (["--warning", "1", "--failure", "2"], 1, "ERROR"),  # ~8 MiB is over 2 % of 128 MiB
    ],
)
async def test_probe_reads_the_real_cgroup_it_runs_in(
    cgroups: CgroupTree, tmp_path: pathlib.Path, args: list[str], exit_code: int, level: str
) -> None:
    cgroup = cgroups.container(128 * MIB)
    log = tmp_path / "probe.log"
    argv = [sys.executable, "-m", "memguard.probe", *args, "--logfile", str(log)]
    probe = cgroups.spawn(cgroup, argv)
    probe.go()
    assert await probe.exited() == exit_code
    [line] = log.read_text().splitlines()
    assert f" {level} memguard probe: " in line
    assert "128.0MiB" in line  # the test cgroup's limit, read from the cgroup it ran in
    assert f"cgroup v{TEST_CGROUP_VERSION} " in line
