"""`memguard run --priority`: the real effects on a running agent, read from /proc.

The agent runs on a fake tree with this process's capabilities (CI is root; a
step is expected to succeed exactly when its capability is there: this sandbox
lacks CAP_SYS_RESOURCE, so oom_score_adj -1000 is refused here), and again
with CAP_SYS_NICE and CAP_IPC_LOCK dropped from its bounding set (setpriv),
where each refused step must be one line saying why.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from testing.agentproc import agent_process

CAP_IPC_LOCK, CAP_SYS_NICE, CAP_SYS_RESOURCE = 14, 23, 24
DROP_NICE_AND_LOCK = [
    "setpriv",
    "--inh-caps=-sys_nice,-ipc_lock",
    "--bounding-set=-sys_nice,-ipc_lock",
    "--",
]


def _has_capability(bit: int) -> bool:
    status = pathlib.Path("/proc/self/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("CapEff:")]
    return bool(int(line.split()[1], 16) >> bit & 1)


def _thread_nices(pid: int) -> dict[int, int]:
    nices = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = pathlib.Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        nices[int(tid)] = int(stat.rpartition(")")[2].split()[16])  # field 19: nice
    return nices


def _status_kib(pid: int, field: str) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith(f"{field}:")]
    return int(line.split()[1])


def _oom_score_adj(pid: int) -> int:
    return int(pathlib.Path(f"/proc/{pid}/oom_score_adj").read_text())


def _priority_lines(log: pathlib.Path) -> list[str]:
    lines = log.read_text().splitlines()
    return [line[line.index("priority:") :] for line in lines if "priority:" in line]


@pytest.fixture
def run_args(fake_tree: tuple[str, list[object]]) -> list[str]:
    root, _ = fake_tree
    return ["--parent", root, "--kubernetes", "off"]


async def test_auto_lowers_nice_on_every_thread_and_locks_memory(
    run_args: list[str], tmp_path: pathlib.Path
) -> None:
    log = tmp_path / "agent.log"
    nice_before = os.getpriority(os.PRIO_PROCESS, 0)
    adj_before = _oom_score_adj(os.getpid())
    with agent_process(run_args, stderr=log) as agent:
        await agent.wait_ready()
        pid = agent.process.pid
        nices = _thread_nices(pid)
        locked_kib = _status_kib(pid, "VmLck")
        rss_kib = _status_kib(pid, "VmRSS")
        adj = _oom_score_adj(pid)
        assert agent.stop() == 0
    lines = _priority_lines(log)
    assert len(lines) == 4, lines  # one line per step, once
    if _has_capability(CAP_SYS_NICE):
        # the log writer and any later thread inherited it from the main thread
        assert len(nices) >= 2
        assert set(nices.values()) == {min(nice_before, -10)}
        assert lines[0] == f"priority: nice -10 (was {nice_before})"
    else:
        assert set(nices.values()) == {nice_before}
    if _has_capability(CAP_SYS_RESOURCE):
        assert adj == -1000
        assert lines[1].startswith(f"priority: oom_score_adj -1000 (was {adj_before})")
    else:
        assert adj == adj_before
        assert lines[1] == (
            "priority: could not lower oom_score_adj to -1000: permission denied (needs "
            "CAP_SYS_RESOURCE to go below the lowest value set for it before); "
            f"it stays {adj_before}"
        )
    if _has_capability(CAP_IPC_LOCK):
        assert locked_kib >= rss_kib  # all that is resident is in locked mappings
        assert lines[2].startswith("priority: memory locked (")
    else:
        assert locked_kib == 0
        assert lines[2].startswith("priority: could not lock memory (mlockall): ")
    # no privilege needed: the kill path waits at most 0.5 ms for a busy worker's GIL
    assert lines[3].startswith("priority: GIL switch interval 0.5 ms (was 5 ms)")


async def test_without_the_capabilities_each_refusal_is_one_line(
    run_args: list[str], tmp_path: pathlib.Path
) -> None:
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop capabilities"
    log = tmp_path / "agent.log"
    nice_before = os.getpriority(os.PRIO_PROCESS, 0)
    prefix = DROP_NICE_AND_LOCK if os.geteuid() == 0 else []  # not root: none to drop
    with agent_process(run_args, stderr=log, prefix=prefix) as agent:
        await agent.wait_ready()
        pid = agent.process.pid
        nices = _thread_nices(pid)
        locked_kib = _status_kib(pid, "VmLck")
        assert agent.stop() == 0
    assert set(nices.values()) == {nice_before}
    assert locked_kib == 0
    lines = _priority_lines(log)
    assert lines[0] == (
        "priority: could not lower nice to -10: permission denied (needs CAP_SYS_NICE or "
        f"RLIMIT_NICE); it stays {nice_before}"
    )
    assert lines[2].startswith(
        "priority: could not lock memory (mlockall): cannot allocate memory (needs "
        "CAP_IPC_LOCK: RLIMIT_MEMLOCK "
    )
    assert lines[3].startswith("priority: GIL switch interval 0.5 ms")
    assert len(lines) == 4
    assert "Traceback" not in log.read_text()


async def test_off_touches_nothing(run_args: list[str], tmp_path: pathlib.Path) -> None:
    log = tmp_path / "agent.log"
    nice_before = os.getpriority(os.PRIO_PROCESS, 0)
    adj_before = _oom_score_adj(os.getpid())
    with agent_process([*run_args, "--priority", "off"], stderr=log) as agent:
        await agent.wait_ready()
        pid = agent.process.pid
        nices = _thread_nices(pid)
        locked_kib = _status_kib(pid, "VmLck")
        adj = _oom_score_adj(pid)
        assert agent.stop() == 0
    assert (set(nices.values()), locked_kib, adj) == ({nice_before}, 0, adj_before)
    assert _priority_lines(log) == ["priority: left as it is (--priority off)"]
