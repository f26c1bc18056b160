"""The one failure that stops the agent: the parent's filesystem is gone, so
nothing can be guarded anywhere. One clear line, exit 1 - not a traceback, not
an agent that reports ready while guarding nothing."""

from __future__ import annotations

import pathlib
import shutil

from testing.agentproc import agent_process, wait_until


async def test_the_parent_filesystem_gone_is_one_line_and_exit_1(
    empty_fake_root: str, tmp_path: pathlib.Path
) -> None:
    log = tmp_path / "agent.log"
    args = ["--parent", empty_fake_root, "--kubernetes", "off", "--rescan-interval", "1s"]
    with agent_process(args, stderr=log) as agent:
        await agent.wait_ready()
        shutil.rmtree(empty_fake_root)  # the whole fake filesystem: marker included
        await wait_until(lambda: not agent.alive, 30, "memguard kept running with no parent")
        assert agent.process.returncode == 1
    lines = log.read_text().splitlines()
    assert not any("Traceback" in line for line in lines)
    assert lines[-1] == (
        f"memguard run: error: the cgroup filesystem of --parent {empty_fake_root} is gone "
        "(unmounted?): nothing can be guarded"
    )
