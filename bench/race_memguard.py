"""memguard as a contestant of the race benchmark: `memguard run`, followed through its log.

`memguard run --kubernetes off --policy container --parent <its own tree>
--log-format json [extra flags]` is started once per cell (a node agent runs
for long; its start-up is not part of the race) and stopped with SIGTERM after
it. Its stdout and stderr go to a file (bench/results/race-logs-v<N>/) that
the bench follows: "discovery done" (started), "guarding <container>: limit
..., threshold ..." (armed: the bench starts the workload only then), and the
reports about the container. latency = the kill report's latency_s (kernel
wake -> first SIGKILL issued, measured inside memguard); its wall_time_s is
the time of that SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import trio

from bench.race_agents import (
    ARM_TIMEOUT_S,
    REPORT_TIMEOUT_S,
    AgentError,
    AgentTrial,
    quota_wrapped,
)
from bench.race_cgroups import Cgroups, Container
from bench.race_procs import Process, Processes
from memguard.policy.kinds import ReportKind

START_TIMEOUT_S = 300.0  # QEMU TCG, a busy node and a 500m quota: a slow start is no failure
REPORT_GRACE_S = 0.1  # more lines about the same trial (a flush before, a CgroupOOM after)
FOLLOW_POLL_S = 0.005
KILL_KINDS = frozenset({ReportKind.KILL_CONTAINER.value, ReportKind.KILL_PROCESS.value})
# Report kinds that end memguard's part in a trial.
DECISIVE_KINDS = KILL_KINDS | {ReportKind.KERNEL_OOM.value, ReportKind.NO_VICTIM.value}


class LogFollower:
    """memguard's JSON log, read as it grows: what it guards and what it reported."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.messages: list[str] = []
        self.guarded: set[str] = set()
        self.reports: dict[str, list[dict[str, Any]]] = {}

    def poll(self) -> None:
        with open(self.path, "rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._take(line.decode(errors="replace"))

    def _take(self, line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            self.messages.append(line)  # not JSON: a traceback, a crash
            return
        if not isinstance(record, dict):
            return
        message = str(record.get("msg", ""))
        self.messages.append(message)
        if "kind" in record and "cgroup" in record:
            self.reports.setdefault(str(record["cgroup"]), []).append(record)
        elif _armed_message(message):
            self.guarded.add(message[len("guarding ") : message.index(": limit ")])

    async def wait(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        with trio.move_on_after(timeout_s):
            while True:
                self.poll()
                if condition():
                    return True
                await trio.sleep(FOLLOW_POLL_S)
        return False


def _armed_message(message: str) -> bool:
    """memguard's "guarding <cgroup>: limit L, threshold T" with a threshold (the line
    with "threshold unlimited" comes when it sees the cgroup before its limit is written)."""
    return (
        message.startswith("guarding ")
        and ": limit " in message
        and "threshold unlimited" not in message
    )


class MemguardAgent:
    """`memguard run` with default flags (but the bench's tree) and extra flags, per cell."""

    def __init__(
        self,
        name: str,
        extra_flags: Sequence[str],
        processes: Processes,
        cgroups: Cgroups,
        log_dir: str,
    ) -> None:
        self.name = name
        self._extra_flags = list(extra_flags)
        self._processes = processes
        self._cgroups = cgroups
        self._log_dir = log_dir
        self._process: Process | None = None
        self._log: LogFollower | None = None

    def command(self) -> list[str]:
        parent = self._cgroups.agent_parent(self.name)
        argv = [sys.executable, "-m", "memguard.cli", "run", "--kubernetes", "off"]
        argv += ["--policy", "container", "--parent", parent, "--log-format", "json"]
        return argv + self._extra_flags

    async def start_cell(self, cell: str, busy: bool) -> None:
        self._log = LogFollower(self._spawn(cell, busy))
        started = await self._log.wait(self._started, START_TIMEOUT_S)
        if not started:
            raise AgentError(f"{self.name} did not start: {self._tail()}")

    def _spawn(self, cell: str, busy: bool) -> str:
        """Start memguard for cell, stdout and stderr to a log file; the file's path."""
        cpu = self._cgroups.cpu_procs_file(self.name) if busy else None
        path = os.path.join(self._log_dir, f"{self.name}-{cell}.log")
        with open(path, "wb") as log:
            argv = quota_wrapped(self.command(), cpu)
            self._process = self._processes.start(argv, stdout=log.fileno(), stderr=log.fileno())
        return path

    def _started(self) -> bool:
        assert self._log is not None
        self._check_alive()
        return any(m.startswith("discovery done") for m in self._log.messages)

    def _check_alive(self) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            code = self._process.returncode
            raise AgentError(f"{self.name} exited with {code}: {self._tail()}")

    def _tail(self) -> str:
        if self._log is None or not self._log.messages:
            return "no log line yet"
        return " | ".join(self._log.messages[-5:])

    async def arm(self, container: Container) -> None:
        assert self._log is not None
        log = self._log

        def guarded() -> bool:
            self._check_alive()
            return container.memory in log.guarded

        if not await log.wait(guarded, ARM_TIMEOUT_S):
            raise AgentError(f"{self.name} did not guard {container.memory}: {self._tail()}")

    async def collect(self, container: Container) -> AgentTrial:
        assert self._log is not None
        log = self._log
        reports = log.reports.setdefault(container.memory, [])
        decided = await log.wait(
            lambda: any(r["kind"] in DECISIVE_KINDS for r in reports), REPORT_TIMEOUT_S
        )
        if decided:
            await trio.sleep(REPORT_GRACE_S)
            log.poll()
        kills = [r for r in reports if r["kind"] in KILL_KINDS]
        notes = tuple(f"{r['kind']}({r.get('woke_by', '')})" for r in reports)
        if not kills:
            return AgentTrial(notes=notes or ("no report",))
        latency = kills[0].get("latency_s")
        return AgentTrial(
            float(latency) if latency is not None else None,
            float(kills[0]["wall_time_s"]),
            notes,
        )

    def finish_trial(self) -> None:
        pass

    def stop_cell(self) -> None:
        """SIGTERM (by pid), as an operator stops it; a memguard that died is only reaped."""
        if self._process is not None:
            self._processes.stop(self._process, signal.SIGTERM)
        self._process = None


def hold_supported(extra_flags: Sequence[str]) -> str | None:
    """None when `memguard run --help` lists every --flag of extra_flags, else why not."""
    done = subprocess.run(
        [sys.executable, "-m", "memguard.cli", "run", "--help"], capture_output=True, text=True
    )
    names = [flag.split("=", 1)[0] for flag in extra_flags if flag.startswith("--")]
    missing = [name for name in names if not re.search(rf"{re.escape(name)}(?![\w-])", done.stdout)]
    if missing:
        return f"`memguard run --help` does not list {', '.join(missing)}"
    return None
