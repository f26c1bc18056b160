"""Fault matrix, file descriptors: an agent whose RLIMIT_NOFILE is too small for
every container on the node, then lowered below what it holds, mid-churn. It
never crashes: containers beyond the budget wait (not ready, said why, counted),
the guarded ones stay protected (a hog is killed by memguard, the kernel's
oom_kill stays 0), and when fds are freed or the limit raised, the waiting
containers are guarded (real kernel)."""

from __future__ import annotations

import os
import pathlib
import resource
import signal
from collections.abc import Callable

import pytest

from memguard.policy.model import MIB
from testing.agentproc import AgentProcess, agent_process, metric, wait_until
from testing.cgroups import CgroupTree
from testing.waits import within

pytestmark = pytest.mark.kernel

FD_LIMIT = 200
EXTRA_CONTAINERS = 240  # more than FD_LIMIT allows guards for


def limit_fds(count: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return apply


async def waiting(agent: AgentProcess) -> float:
    return metric(await agent.metrics(), "memguard_containers_waiting_for_fds")


async def kill_hog_in(cgroups: CgroupTree, cgroup: str) -> None:
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=100)
    hog.go()
    with within(f"memguard killing the hog in {cgroup}", 30):
        assert await hog.exited() == -signal.SIGKILL
    assert cgroups.oom_kills(cgroup) == 0


async def test_guarding_goes_on_when_file_descriptors_run_out(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    first = cgroups.container(limit_bytes=128 * MIB)
    second = cgroups.container(limit_bytes=128 * MIB, index=1)
    args = ["--parent", cgroups.parent, "--kubernetes", "off"]
    log = tmp_path / "agent.log"
    with agent_process(args, stderr=log, preexec_fn=limit_fds(FD_LIMIT)) as agent:
        await agent.wait_ready()
        extra = [
            cgroups.container(limit_bytes=64 * MIB, index=10 + index)
            for index in range(EXTRA_CONTAINERS)
        ]

        async def some_wait() -> bool:
            return await waiting(agent) > 0

        await wait_until(some_wait, 60, "no container waited for fds: the budget is not applied")
        status, body = await agent.get("/readyz")
        assert status == 503
        assert "out of file descriptors" in body
        await kill_hog_in(cgroups, first)
        # Churn: containers go (their guards' fds come back) and others come.
        for cgroup in extra[:100]:
            cgroups.remove(cgroup)
        extra = extra[100:] + [
            cgroups.container(limit_bytes=64 * MIB, index=1000 + index) for index in range(50)
        ]
        # Mid-churn the limit drops below what the agent holds: every new fd fails.
        held = len(os.listdir(f"/proc/{agent.process.pid}/fd"))
        resource.prlimit(agent.process.pid, resource.RLIMIT_NOFILE, (held + 8, FD_LIMIT))
        for index in range(20):
            cgroups.container(limit_bytes=64 * MIB, index=2000 + index)
        assert (await agent.get("/healthz", 1.0))[0] == 200
        await kill_hog_in(cgroups, second)
        assert agent.alive
        # The limit is back and containers went: every container is guarded again.
        resource.prlimit(agent.process.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
        for cgroup in extra:
            cgroups.remove(cgroup)

        async def none_wait() -> bool:
            return await waiting(agent) == 0

        await wait_until(none_wait, 60, "containers still wait for fds after the limit was raised")
        await agent.wait_ready()
        text = await agent.metrics()
        assert agent.stop() == 0
    assert metric(text, "memguard_component_failures_total", 'component="discovery"') == 0
    lines = log.read_text().splitlines()
    assert any("out of file descriptors" in line for line in lines)
    assert not any("Traceback" in line for line in lines)
