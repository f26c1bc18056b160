"""Fault matrix, log sink: stderr is a pipe whose reader has stopped (a stalled
container-runtime log pipe, a full journald). While nobody reads it, 600
container cgroups appear and a hog runs in a guarded one: memguard kills the
hog before the kernel does, /healthz keeps answering, and the log lines it had
to drop are counted and reported once the reader moves again (real kernel)."""

from __future__ import annotations

import fcntl
import os
import signal

import pytest
import trio

from memguard.policy.model import MIB
from testing.agentproc import agent_process, metric, wait_until
from testing.cgroups import CgroupTree
from testing.waits import within

pytestmark = pytest.mark.kernel

CONTAINERS = 600
PIPE_BYTES = 4096  # the smallest pipe: the stall starts after a few lines
LOG_QUEUE = "64"  # log lines memguard queues while its output is blocked


async def read_until_eof(stream: trio.lowlevel.FdStream, into: bytearray) -> None:
    while chunk := await stream.receive_some():
        into += chunk


async def test_a_stalled_log_reader_never_stalls_guarding(cgroups: CgroupTree) -> None:
    target = cgroups.container(limit_bytes=128 * MIB)
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    args = ["--parent", cgroups.parent, "--kubernetes", "off", "--log-queue", LOG_QUEUE]
    log = bytearray()
    try:
        with agent_process(args, stderr=write_fd) as agent:
            os.close(write_fd)
            write_fd = -1
            await agent.wait_ready()
            for index in range(CONTAINERS):
                cgroups.container(limit_bytes=64 * MIB, index=index + 1)
                if index % 100 == 0:
                    assert (await agent.get("/healthz", 1.0))[0] == 200

            async def all_guarded() -> bool:
                text = await agent.metrics()
                return metric(text, "memguard_guarded_cgroups") == CONTAINERS + 1

            await wait_until(all_guarded, 60, f"memguard never guarded {CONTAINERS + 1} cgroups")
            await agent.wait_ready()
            text = await agent.metrics()
            assert metric(text, "memguard_log_drops_total") > 0  # the log output is stuck
            hog = cgroups.hog(target, target_mib=256, rate_mib_s=100)
            hog.go()
            with within("memguard killing the hog while its log output is stuck", 30):
                assert await hog.exited() == -signal.SIGKILL
            assert cgroups.oom_kills(target) == 0
            assert (await agent.get("/healthz", 1.0))[0] == 200

            async def kills() -> float:
                text = await agent.metrics()
                return metric(text, "memguard_reports_total", 'reason="OomGuardKillContainer"')

            async def counted() -> bool:
                return await kills() >= 1

            # the report follows the kill once the container is empty, not the hog's exit
            await wait_until(counted, 30, "the kill counted in memguard_reports_total")
            assert await kills() == 1
            reader = trio.lowlevel.FdStream(read_fd)  # the reader moves again
            read_fd = -1
            with within("memguard stopping and its log ending once the reader moved again"):
                async with reader, trio.open_nursery() as nursery:
                    nursery.start_soon(read_until_eof, reader, log)
                    assert await trio.to_thread.run_sync(agent.stop) == 0
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    text_log = log.decode(errors="replace")
    assert "log lines were dropped: the log output was blocked" in text_log
    assert text_log.rstrip().endswith("memguard stopped")  # nothing lost after the stall
