"""The race benchmark's cgroups on this cgroup v1 host.

A container exists in the memory, freezer and pids hierarchies at the same
path, as the kubelet and runc make it on v1 (memguard may freeze it through
the freezer mirror); the agents' 500m CPU cgroups are in the cpu hierarchy.
The bench's own OOM notification is an eventfd on memory.oom_control.

Cleanup (after every trial and at exit): freeze the container, SIGKILL every
pid in it (frozen tasks cannot fork or exit, so no pid is reused under us),
thaw, until cgroup.procs is empty; then rmdir deepest first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import trio

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
from memguard.kernel import cgroup_v1, cgroupfs, freezer, names
from memguard.kernel.eventfd import EventFd

V1_ROOT = "/sys/fs/cgroup"
HIERARCHIES = ("memory", "freezer", "pids", "cpu")
CONTAINER_HIERARCHIES = ("memory", "freezer", "pids")


class V1OomWatch:
    """An eventfd registered on the container's memory.oom_control."""

    def __init__(self, memory_cgroup: str) -> None:
        self._efd = EventFd()
        if not cgroup_v1.register_oom(self._efd.fileno(), memory_cgroup):
            self._efd.close()
            raise FileNotFoundError(memory_cgroup)

    async def notified(self) -> None:
        await trio.lowlevel.wait_readable(self._efd.fileno())
        self._efd.read_nowait()

    def close(self) -> None:
        self._efd.close()


class V1Cgroups:
    version = 1

    def __init__(self, root: str = V1_ROOT) -> None:
        self.name = bench_name()
        self._roots = {h: os.path.join(root, h, self.name) for h in HIERARCHIES}
        self._made: list[str] = []
        self._containers: list[Container] = []  # made and not yet removed
        for path in self._roots.values():
            self._mkdir(path)

    def _mkdir(self, path: str) -> None:
        if not os.path.isdir(path):
            os.mkdir(path)
            self._made.append(path)

    def _mkdirs(self, hierarchy: str, relative: str) -> str:
        path = self._roots[hierarchy]
        for part in relative.split("/"):
            path = os.path.join(path, part)
            self._mkdir(path)
        return path

    def agent_parent(self, agent: str) -> str:
        return self._mkdirs("memory", agent)

    def container(self, agent: str, limit_bytes: int) -> Container:
        relative = container_relative(agent)
        paths = {h: self._mkdirs(h, relative) for h in CONTAINER_HIERARCHIES}
        write_file(paths["memory"], names.LIMIT_FILE, str(limit_bytes))
        write_file(paths["pids"], "pids.max", str(PIDS_MAX))
        container = Container(agent, relative, paths)
        self._containers.append(container)
        return container

    def join(self, container: Container, pid: int) -> None:
        for hierarchy in reversed(CONTAINER_HIERARCHIES):  # memory last
            write_file(container.paths[hierarchy], names.PROCS_FILE, str(pid))

    def cpu_procs_file(self, agent: str) -> str:
        path = self._mkdirs("cpu", agent)
        write_file(path, "cpu.cfs_period_us", str(CPU_PERIOD_US))
        write_file(path, "cpu.cfs_quota_us", str(CPU_QUOTA_US))
        return os.path.join(path, names.PROCS_FILE)

    def oom_kills(self, container: Container) -> int:
        text = cgroupfs.read_text(os.path.join(container.memory, names.OOM_CONTROL_FILE))
        return 0 if text is None else cgroupfs.parse_flat_keyed(text).get("oom_kill", 0)

    def members(self, container: Container) -> list[int]:
        return cgroupfs.read_procs(container.memory) or []

    def oom_watch(self, container: Container) -> V1OomWatch:
        return V1OomWatch(container.memory)

    def kill_all(self, container: Container) -> None:
        frozen = container.paths["freezer"]
        deadline = time.monotonic() + KILL_BOUND_S
        while pids := cgroupfs.read_procs(frozen):
            freezer.freeze(frozen)
            for pid in cgroupfs.read_procs(frozen) or []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            freezer.thaw(frozen)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{frozen}: {len(pids)} processes survive SIGKILL")
            time.sleep(POLL_S)  # the killed are exiting

    def remove(self, container: Container) -> None:
        for hierarchy in CONTAINER_HIERARCHIES:
            path = container.paths[hierarchy]
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
