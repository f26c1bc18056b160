"""What the race benchmark needs from cgroups, on either version.

Each container is made as the kubelet (cgroupfs driver) makes it:
`<agent>/kubepods/burstable/pod<uid>/<64 hex>` under the bench's own
memguard-bench-<id> directory, so memguard finds it (its --parent is
`<bench root>/<agent>`) and every agent sees only its own trials' containers.
bench/race_cgroups_v1.py (this host) and bench/race_cgroups_v2.py (the test
VM) implement it. Only directories the bench made are removed, and only
processes found in them are signalled.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

PIDS_MAX = 4096  # a safety bound on the fork bomb, far above what 128 MiB holds
CPU_PERIOD_US = 100_000
CPU_QUOTA_US = 50_000  # 500m
KILL_BOUND_S = 10.0
RMDIR_BOUND_S = 2.0
POLL_S = 0.005


@dataclass(frozen=True)
class Container:
    """One container cgroup: its path in each hierarchy ("memory" is always there)."""

    agent: str
    relative: str  # <agent>/kubepods/burstable/pod<uid>/<id>
    paths: dict[str, str]

    @property
    def memory(self) -> str:
        return self.paths["memory"]


class OomWatch(Protocol):
    """The kernel telling the bench about OOM in one container (no polling)."""

    async def notified(self) -> None:
        """Park until the kernel says the container is at OOM (before it kills)."""
        ...

    def close(self) -> None: ...


class Cgroups(Protocol):
    version: int

    def agent_parent(self, agent: str) -> str:
        """The tree an agent guards (memguard --parent)."""
        ...

    def container(self, agent: str, limit_bytes: int) -> Container: ...

    def join(self, container: Container, pid: int) -> None:
        """Move pid (waiting to be told to go) into the container."""
        ...

    def cpu_procs_file(self, agent: str) -> str:
        """cgroup.procs of the agent's 500m CPU cgroup."""
        ...

    def oom_kills(self, container: Container) -> int: ...

    def members(self, container: Container) -> list[int]: ...

    def oom_watch(self, container: Container) -> OomWatch: ...

    def kill_all(self, container: Container) -> None:
        """SIGKILL everything in the container, until it is empty."""
        ...

    def remove(self, container: Container) -> None: ...

    def close(self) -> None:
        """Kill what is left in the containers, remove every directory made."""
        ...


def bench_name() -> str:
    return f"memguard-bench-{uuid.uuid4().hex[:12]}"


def container_relative(agent: str) -> str:
    """A new kubelet-style container path (cgroupfs driver, burstable) in agent's tree."""
    return f"{agent}/kubepods/burstable/pod{uuid.uuid4()}/{uuid.uuid4().hex * 2}"


def write_file(cgroup: str, name: str, value: str) -> None:
    with open(os.path.join(cgroup, name), "w") as file:
        file.write(value)


def rmdir(path: str) -> None:
    """rmdir, retried while the kernel finishes the exits of killed tasks (EBUSY)."""
    deadline = time.monotonic() + RMDIR_BOUND_S
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(POLL_S)
