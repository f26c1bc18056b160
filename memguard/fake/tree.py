"""`memguard fake init`: a realistic fake kubepods tree with real processes.

Both kubelet cgroup drivers, pods in every QoS class, a pause-like unlimited
container, a crio-conmon scope that is not a container, and in each container
real sleeping processes listed in cgroup.procs, so policies kill real
processes. Their oom_score_adj follows the kubelet's QoS rule where the user
may set it (Guaranteed -997, Burstable 500, BestEffort 1000); the second
process of a container (the "worker", which the fake driver charges memory
to) gets 10 points more, so it is the one the kernel - and memguard's process
policy - would pick. The tree root holds a marker file listing every process
started, with its start time, so `memguard fake clean` kills only those.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from memguard.errors import ConfigError
from memguard.fake import model
from memguard.kernel.procfs import start_time_ticks
from memguard.policy.model import MIB
from memguard.policy.paths import ContainerRef, parse_container_path

SLEEP_ARGV = ["sleep", "infinity"]
QOS_OOM_SCORE_ADJ = {"Guaranteed": -997, "Burstable": 500, "BestEffort": 1000}


@dataclass(frozen=True)
class PodSpec:
    name: str
    qos: str  # Guaranteed | Burstable | BestEffort
    driver: str  # cgroupfs | systemd
    runtime: str  # cri-containerd | crio | docker (systemd scope prefix)
    limit_bytes: int | None
    processes: int = 2


DEFAULT_PODS = (
    PodSpec("web", "Guaranteed", "cgroupfs", "cri-containerd", 256 * MIB),
    PodSpec("cache", "Burstable", "cgroupfs", "cri-containerd", 256 * MIB),
    PodSpec("batch", "BestEffort", "cgroupfs", "cri-containerd", None, processes=1),
    PodSpec("api", "Guaranteed", "systemd", "cri-containerd", 256 * MIB),
    PodSpec("db", "Burstable", "systemd", "crio", 384 * MIB),
    PodSpec("tools", "BestEffort", "systemd", "docker", None, processes=1),
)


@dataclass(frozen=True)
class FakeContainer:
    name: str
    path: str
    ref: ContainerRef
    limit_bytes: int | None
    pids: tuple[int, ...]


def _pod_uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.memguard.fake"))


def _container_id(name: str) -> str:
    return hashlib.sha256(f"container {name}".encode()).hexdigest()


def _container_dir(root: str, pod: PodSpec) -> str:
    uid, cid = _pod_uid(pod.name), _container_id(pod.name)
    qos = pod.qos.lower()
    if pod.driver == "cgroupfs":
        qos_dir = "" if pod.qos == "Guaranteed" else qos
        return os.path.join(root, "kubepods", qos_dir, f"pod{uid}", cid)
    slice_uid = uid.replace("-", "_")
    if pod.qos == "Guaranteed":
        pod_dir = os.path.join(root, "kubepods.slice", f"kubepods-pod{slice_uid}.slice")
    else:
        pod_dir = os.path.join(
            root, "kubepods.slice", f"kubepods-{qos}.slice", f"kubepods-{qos}-pod{slice_uid}.slice"
        )
    return os.path.join(pod_dir, f"{pod.runtime}-{cid}.scope")


def spawn_sleeper(oom_score_adj: int | None = None) -> int:
    """Start a detached sleeping process; the caller owns (and must reap) it."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)]
        path = shutil.which(SLEEP_ARGV[0]) or "/bin/sleep"
        pid = os.posix_spawn(path, SLEEP_ARGV, os.environ, file_actions=actions, setsid=True)
    finally:
        os.close(devnull)
    if oom_score_adj is not None:
        try:
            with open(f"/proc/{pid}/oom_score_adj", "w") as file:
                file.write(str(oom_score_adj))
        except PermissionError:
            pass  # lowering needs CAP_SYS_RESOURCE: keep the inherited value
    return pid


def _ancestors_with_files(
    root: str, container_dir: str, limit_bytes: int | None, version: int
) -> None:
    """Give pod and QoS directories cgroup files too, as on a real tree."""
    current = os.path.dirname(container_dir)
    while len(current) > len(root):
        if not os.path.exists(os.path.join(current, model.STATE_FILE)):
            model.create(current, model.FakeMemory(limit_bytes=limit_bytes, version=version))
        current = os.path.dirname(current)


def build(
    root: str, pods: tuple[PodSpec, ...] = DEFAULT_PODS, cgroup_version: int = 1
) -> list[FakeContainer]:
    """Create the tree under root (which must be empty or absent) and its processes.

    The marker comes first and is rewritten after every process started, so
    `memguard fake clean` can remove whatever a build stopped half way left (a
    SIGKILL can still fall between a spawn and its record); a build that fails
    kills and reaps the processes it started. ConfigError when root cannot be
    made a tree root (empty path, not empty, not a directory, not creatable).
    cgroup_version 2 writes v2 files (memory.current, memory.max, memory.events, ...).
    """
    _claim_root(root, cgroup_version)
    record = _Record(root, cgroup_version)
    try:
        for pod in pods:
            _build_container(root, pod, cgroup_version, record)
        _build_conmon(root, pods, record.containers, cgroup_version)
    except BaseException:
        kill_and_reap(record.pids)
        raise
    return record.containers


def _claim_root(root: str, cgroup_version: int) -> None:
    """Make root (absent or empty) a tree root holding only its marker."""
    if not root:
        raise ConfigError("DIR is an empty path: name the directory to create")
    try:
        os.makedirs(root, exist_ok=True)
        if os.listdir(root):
            raise ConfigError(f"{root} is not empty")
        model.make_root(root, cgroup_version)
    except FileExistsError:
        raise ConfigError(f"{root} exists and is not a directory") from None
    except OSError as error:
        raise ConfigError(f"cannot create {root}: {error.strerror or error}") from None


class _Record:
    """The marker of a tree being built: every process, as soon as it is started."""

    def __init__(self, root: str, cgroup_version: int) -> None:
        self.root = root
        self.cgroup_version = cgroup_version
        self.pids: list[int] = []
        self._start_times: list[int | None] = []  # with the pid, a process's identity
        self.containers: list[FakeContainer] = []

    def started(self, pid: int) -> None:
        self.pids.append(pid)
        self._start_times.append(start_time_ticks(pid))
        self.write()

    def write(self) -> None:
        processes = [
            {"pid": pid, "start_time": start}
            for pid, start in zip(self.pids, self._start_times, strict=True)
        ]
        listing = [{"name": c.name, "path": c.path, "pids": list(c.pids)} for c in self.containers]
        marker = {
            "version": 1,
            "cgroup_version": self.cgroup_version,
            "processes": processes,
            "containers": listing,
        }
        model.write_marker(self.root, marker)


def _build_container(root: str, pod: PodSpec, cgroup_version: int, record: _Record) -> None:
    """One container: its processes (each recorded as started), its cgroup files,
    its ancestors' files, then its entry in the marker."""
    path = _container_dir(root, pod)
    adj = QOS_OOM_SCORE_ADJ[pod.qos]
    pids = []
    for index in range(pod.processes):
        pids.append(spawn_sleeper(min(adj + 10 * index, 1000)))
        record.started(pids[-1])
    memory = model.FakeMemory(limit_bytes=pod.limit_bytes, pids=list(pids), version=cgroup_version)
    memory.anon_by_pid = dict.fromkeys(pids, 4 * MIB)
    model.create(path, memory)
    _ancestors_with_files(root, path, None, cgroup_version)
    ref = parse_container_path(path)
    assert ref is not None, path
    record.containers.append(FakeContainer(pod.name, path, ref, pod.limit_bytes, tuple(pids)))
    record.write()


def _build_conmon(
    root: str, pods: tuple[PodSpec, ...], containers: list[FakeContainer], cgroup_version: int
) -> None:
    """A crio-conmon scope beside the crio container (systemd driver): not a container."""
    if not any(pod.runtime == "crio" and pod.driver == "systemd" for pod in pods):
        return
    crio = next(c for c, p in zip(containers, pods, strict=True) if p.runtime == "crio")
    conmon = os.path.join(os.path.dirname(crio.path), f"crio-conmon-{crio.ref.container_id}.scope")
    model.create(conmon, model.FakeMemory(version=cgroup_version))


def load_containers(root: str) -> list[FakeContainer]:
    """The containers a fake tree was built with (from its marker)."""
    with open(os.path.join(root, model.MARKER_FILE)) as file:
        marker = json.load(file)
    containers = []
    for entry in marker["containers"]:
        ref = parse_container_path(entry["path"])
        memory = model.read(entry["path"])
        if ref is None or memory is None:
            continue
        containers.append(
            FakeContainer(
                entry["name"], entry["path"], ref, memory.limit_bytes, tuple(entry["pids"])
            )
        )
    return containers


def started_here(root: str, pid: int) -> bool:
    """True when pid is a process this tree's `fake init` started (pid + start time)."""
    with open(os.path.join(root, model.MARKER_FILE)) as file:
        processes = json.load(file)["processes"]
    return any(p["pid"] == pid and p["start_time"] == start_time_ticks(pid) for p in processes)


def kill_and_reap(pids: Iterable[int]) -> None:
    """SIGKILL and reap processes this process started (by pid); gone ones are fine."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def clean(root: str) -> int:
    """Kill the tree's own processes and remove it; the number of processes killed."""
    if model.find_marker(root) != os.path.abspath(root):
        raise FileNotFoundError(f"{root} is not the root of a memguard fake tree")
    with open(os.path.join(root, model.MARKER_FILE)) as file:
        processes = json.load(file)["processes"]
    killed = 0
    for process in processes:
        pid, start_time = process["pid"], process["start_time"]
        if start_time is None or start_time_ticks(pid) != start_time:
            continue  # gone (or gone before it was recorded): its pid may be another's now
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # exited meanwhile
        killed += 1
    shutil.rmtree(root)
    return killed
