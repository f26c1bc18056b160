"""The race benchmark's cgroups on cgroup v2 (inside the test VM).

One hierarchy: every directory that gets children first gets +memory +pids
+cpu in its cgroup.subtree_control, and processes live only in leaves - the
containers, and the agents' 500m CPU cgroups under `<bench root>/cpu/`, which
is outside every agent's --parent. The bench's own OOM notification is inotify
on the container's memory.events (the kernel modifies it when a counter moves:
high, max, oom, oom_kill); it waits until `oom` or `oom_kill` is non-zero.

Cleanup: cgroup.kill (the kernel SIGKILLs every task, forks in flight
included), until cgroup.procs is empty; then rmdir deepest first.
"""

from __future__ import annotations

import os
import time

from bench.race_cgroups import (
    CPU_PERIOD_US,
    CPU_QUOTA_US,
    KILL_BOUND_S,
    PIDS_MAX,
    POLL_S,
    Container,
    bench_name,
    container_relative,
    rmdir,
    write_file,
)
from memguard.kernel import cgroupfs, names
from memguard.kernel.inotify import IN_MODIFY, Inotify

V2_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "pids", "cpu")


class V2OomWatch:
    """inotify on the container's memory.events, until it counts an OOM."""

    def __init__(self, memory_cgroup: str) -> None:
        self._events_file = os.path.join(memory_cgroup, names.EVENTS_FILE)
        self._inotify = Inotify()
        if self._inotify.add_watch(self._events_file, IN_MODIFY) is None:
            self._inotify.close()
            raise FileNotFoundError(self._events_file)

    async def notified(self) -> None:
        while not self._at_oom():
            await self._inotify.read()

    def _at_oom(self) -> bool:
        text = cgroupfs.read_text(self._events_file)
        counters = cgroupfs.parse_flat_keyed(text or "")
        return counters.get("oom", 0) > 0 or counters.get("oom_kill", 0) > 0

    def close(self) -> None:
        self._inotify.close()


class V2Cgroups:
    version = 2

    def __init__(self, root: str = V2_ROOT) -> None:
        self._root = root
        self._made: list[str] = []
        self._containers: list[Container] = []  # made and not yet removed
        self._delegate(root)
        self.name = bench_name()
        self._bench = os.path.join(root, self.name)
        self._mkdirs(self.name)

    def _delegate(self, path: str) -> None:
        """Enable the controllers for path's children (before they are made)."""
        control = os.path.join(path, names.SUBTREE_CONTROL_FILE)
        with open(control) as file:
            enabled = file.read().split()
        missing = [f"+{c}" for c in CONTROLLERS if c not in enabled]
        if missing:
            write_file(path, names.SUBTREE_CONTROL_FILE, " ".join(missing))

    def _mkdirs(self, relative: str) -> str:
        path = self._root
        for part in relative.split("/"):
            self._delegate(path)
            path = os.path.join(path, part)
            if not os.path.isdir(path):
                os.mkdir(path)
                self._made.append(path)
        return path

    def agent_parent(self, agent: str) -> str:
        return self._mkdirs(f"{self.name}/{agent}")

    def container(self, agent: str, limit_bytes: int) -> Container:
        relative = container_relative(agent)
        path = self._mkdirs(f"{self.name}/{relative}")
        write_file(path, names.MAX_FILE, str(limit_bytes))
        write_file(path, "pids.max", str(PIDS_MAX))
        container = Container(agent, relative, {"memory": path})
        self._containers.append(container)
        return container

    def join(self, container: Container, pid: int) -> None:
        write_file(container.memory, names.PROCS_FILE, str(pid))

    def cpu_procs_file(self, agent: str) -> str:
        path = self._mkdirs(f"{self.name}/cpu/{agent}")
        write_file(path, "cpu.max", f"{CPU_QUOTA_US} {CPU_PERIOD_US}")
        return os.path.join(path, names.PROCS_FILE)

    def oom_kills(self, container: Container) -> int:
        text = cgroupfs.read_text(os.path.join(container.memory, names.EVENTS_FILE))
        return 0 if text is None else cgroupfs.parse_flat_keyed(text).get("oom_kill", 0)

    def members(self, container: Container) -> list[int]:
        return cgroupfs.read_procs(container.memory) or []

    def oom_watch(self, container: Container) -> V2OomWatch:
        return V2OomWatch(container.memory)

    def kill_all(self, container: Container) -> None:
        deadline = time.monotonic() + KILL_BOUND_S
        while pids := cgroupfs.read_procs(container.memory):
            cgroupfs.write(os.path.join(container.memory, names.KILL_FILE), b"1")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{container.memory}: {len(pids)} processes survive SIGKILL")
            time.sleep(POLL_S)  # the killed are exiting

    def remove(self, container: Container) -> None:
        path = container.memory
        for directory in (path, os.path.dirname(path)):  # the container, its pod
            rmdir(directory)
            self._made.remove(directory)
        self._containers.remove(container)

    def close(self) -> None:
        for container in list(self._containers):
            self.kill_all(container)
        for path in sorted(self._made, key=len, reverse=True):
            rmdir(path)
        self._made.clear()
        self._containers.clear()
