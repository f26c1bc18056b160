"""A usage drop is credited to a flush only when the kernel's OOM killer did not
make it: the fake kernel OOM-kills the worker while the flush runs (on a real
node: the anon hog fills the margin faster than force_empty drops cache)."""

from __future__ import annotations

import os
import pathlib
import signal

import pytest

from memguard.fake import model, tree
from memguard.fake.backend import FakeBackend
from memguard.fake.model import FakeMemory
from memguard.policy.model import MIB, Policy
from memguard.reports.report import Report, ReportKind
from testing.agentproc import reaped
from testing.agents import make_config, reported, running_agent


class KernelOomDuringFlush(FakeBackend):
    """The flush finds the kernel's OOM killer faster: it kills the biggest
    process (as the kernel would), counts an oom_kill and reclaims nothing."""

    def flush(self, cgroup_dir: str, request_bytes: int) -> bool:
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return False
            victim = max(memory.anon_by_pid, key=memory.anon_by_pid.__getitem__)
            os.kill(victim, signal.SIGKILL)
            memory.anon_by_pid.pop(victim)
            memory.pids.remove(victim)
            memory.oom_kills += 1
            return True


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


async def _flush_outcome(
    tmp_path: pathlib.Path, version: int, backend: FakeBackend
) -> list[Report]:
    root = str(tmp_path / "tree")
    model.make_root(root, version)
    path = os.path.join(root, "docker", "d" * 64)
    worker = tree.spawn_sleeper()
    # 200 MiB anon + 52 MiB clean cache of a 256 MiB limit: over the threshold, and
    # dropping the cache would get it well under: the guard flushes.
    memory = FakeMemory(
        limit_bytes=256 * MIB,
        pids=[worker],
        anon_by_pid={worker: 200 * MIB},
        clean_cache_bytes=52 * MIB,
    )
    memory.version = version
    try:
        config = make_config(root, policy=Policy.CONTAINER)
        async with running_agent(config, backend=backend) as (_, collect):
            model.create(path, memory)
            if isinstance(backend, KernelOomDuringFlush):
                oom = await reported(collect, path, ReportKind.KERNEL_OOM)
                status = await reaped(worker, "the worker killed by the fake kernel")
                assert os.WIFSIGNALED(status)
                return [oom, *collect.reports]
            flush = await reported(collect, path, ReportKind.FLUSH)
            return [flush, *collect.reports]
    finally:
        tree.kill_and_reap([worker])


async def test_a_kernel_oom_kill_during_a_flush_is_not_credited_to_it(
    tmp_path: pathlib.Path, version: int
) -> None:
    oom, *reports = await _flush_outcome(tmp_path, version, KernelOomDuringFlush(version))
    assert "during a flush" in oom.reason
    assert oom.oom_kills == 1
    assert ReportKind.FLUSH not in [report.kind for report in reports]


async def test_a_flush_that_brought_usage_down_is_credited(
    tmp_path: pathlib.Path, version: int
) -> None:
    flush, *reports = await _flush_outcome(tmp_path, version, FakeBackend(version))
    assert flush.reason == "usage back under the threshold"
    assert flush.cache_before_bytes == 52 * MIB
    assert flush.cache_after_bytes is not None
    assert flush.cache_after_bytes < flush.cache_before_bytes
    assert ReportKind.KERNEL_OOM not in [report.kind for report in reports]
