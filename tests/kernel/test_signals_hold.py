"""A stop signal at `memguard run --hold-at-limit` on real cgroups (memguard.cli.signals).

SIGHUP (a closed ssh session) used to end memguard at once, by its default action:
every guarded container stayed at oom_kill_disable 1 - its tasks parked at the limit
with no one left to act - and the status socket stayed behind. Now it stops as SIGTERM
does: the holds released, the ledger emptied, the socket removed, exit 0.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal

import pytest

from memguard.kernel import cgroup_v1
from memguard.policy.model import MIB
from testing.agentproc import agent_process, wait_exit, wait_until
from testing.cgroups import CgroupTree
from testing.waits import WAIT_S

pytestmark = pytest.mark.kernel
LIMIT_BYTES = 128 * MIB


def oom_kill_disable(cgroup: str) -> int:
    control = cgroup_v1.read_oom_control(cgroup)
    assert control is not None, f"{cgroup} is gone"
    return control["oom_kill_disable"]


def records(ledger: pathlib.Path) -> list[str]:
    return [name for name in os.listdir(ledger) if name.endswith(".held")]


def sighup_at_its_default() -> None:
    """preexec_fn: started as from a terminal, whatever this test runner inherited (nohup)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.cgroup_v1_only  # oom_kill_disable
async def test_sighup_releases_every_hold_and_removes_the_status_socket(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    containers = [cgroups.container(limit_bytes=LIMIT_BYTES, index=i) for i in range(2)]
    ledger = tmp_path / "held"
    socket_path = tmp_path / "s.sock"
    log = tmp_path / "memguard.log"
    args = ["--parent", cgroups.parent, "--policy", "process", "--log-format", "json"]
    args += ["--hold-at-limit", "--hold-ledger", str(ledger), "--status-socket", str(socket_path)]
    with agent_process(args, stderr=log, preexec_fn=sighup_at_its_default) as agent:
        await agent.wait_ready()
        await wait_until(
            lambda: all(oom_kill_disable(c) == 1 for c in containers), WAIT_S, "both holds set"
        )
        assert len(records(ledger)) == 2
        assert socket_path.exists()
        agent.process.send_signal(signal.SIGHUP)
        await wait_exit(agent.process.pid, WAIT_S, "memguard exiting after SIGHUP")
        assert agent.process.wait() == 0
    assert [oom_kill_disable(c) for c in containers] == [0, 0]
    assert records(ledger) == []
    assert not socket_path.exists()
    said = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    assert "received SIGHUP: shutting down" in said
    assert said[-1] == "memguard stopped"
