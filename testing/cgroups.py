"""Real cgroup fixtures: a private tree under <memory root>/memguard-test-*.

cgroup v1 (this host: /sys/fs/cgroup/memory) or v2 (the test VM:
/sys/fs/cgroup, where every directory that gets children first gets +memory in
its cgroup.subtree_control, and processes live only in leaves).
Every cgroup and process a test creates is recorded here and removed by id at
teardown, even on failure: processes first (SIGKILL, reap), then the cgroups
deepest first. Nothing outside the test's own tree is ever touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

from memguard.fake.tree import kill_and_reap
from memguard.kernel import cgroupfs, names
from memguard.kernel.fstype import FsKind, fs_kind
from memguard.kernel.pidfd import PidFd
from testing.waits import WAIT_S, within

V1_MEMORY_ROOT = "/sys/fs/cgroup/memory"
V1_FREEZER_ROOT = "/sys/fs/cgroup/freezer"
V2_ROOT = "/sys/fs/cgroup"
# The real-kernel tier runs on this host's cgroup v1 and, inside the test VM
# (tests/vm/test_v2_tier.py sets this to 2), on cgroup v2.
TEST_CGROUP_VERSION = int(os.environ.get("MEMGUARD_TEST_CGROUP_VERSION", "1"))
# fds a guard holds: v1 one eventfd; v2 memory.current, memory.pressure and its epoll.
FDS_PER_GUARD = {1: 1, 2: 3}[TEST_CGROUP_VERSION]
HOG = os.path.join(os.path.dirname(__file__), "hog.py")


def missing_prerequisite(version: int = TEST_CGROUP_VERSION) -> str | None:
    """Why real cgroups of this version cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "not running as root"
    if version == 2:
        if fs_kind(V2_ROOT) is not FsKind.CGROUP_V2:
            return f"{V2_ROOT} is not a cgroup v2 mount"
        with open(os.path.join(V2_ROOT, "cgroup.controllers")) as file:
            if "memory" not in file.read().split():
                return "cgroup v2 without the memory controller"
        return None
    if fs_kind(V1_MEMORY_ROOT) is not FsKind.CGROUP_V1:
        return f"{V1_MEMORY_ROOT} is not a cgroup v1 mount"
    if not os.path.exists(os.path.join(V1_MEMORY_ROOT, "cgroup.event_control")):
        return f"{V1_MEMORY_ROOT} has no cgroup.event_control (not the memory controller)"
    return None


@dataclass
class Started:
    """A process started stopped (waiting for a line on stdin) inside a cgroup."""

    process: subprocess.Popen[bytes]
    name: str  # what it runs, for messages

    @property
    def pid(self) -> int:
        return self.process.pid

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    async def exited(self, timeout_s: float = WAIT_S) -> int:
        """Park until the process exits (pidfd), reap it, return its returncode;
        fail after timeout_s if it is still running."""
        pidfd = PidFd.open(self.pid)
        if pidfd is not None:
            with pidfd, within(f"{self.name} (pid {self.pid}) exited", timeout_s):
                await pidfd.wait_exit()
        return self.process.wait()


@dataclass
class CgroupTree:
    parent: str
    version: int = 1
    cgroups: list[str] = field(default_factory=list)
    processes: list[Started] = field(default_factory=list)
    freezers: list[str] = field(default_factory=list)  # v1 freezer mirrors made here

    def freezer_mirror(self, cgroup: str) -> str:
        """cgroup v1: the freezer cgroup mirroring cgroup (as the kubelet and runc
        make one); processes spawned into cgroup afterwards join it too."""
        assert self.version == 1
        relative = os.path.relpath(cgroup, V1_MEMORY_ROOT)
        path = V1_FREEZER_ROOT
        for part in relative.split("/"):
            path = os.path.join(path, part)
            if not os.path.isdir(path):
                os.mkdir(path)
                self.freezers.append(path)
        return path

    def _mirror_of(self, cgroup: str) -> str | None:
        if self.version != 1:
            return None
        path = os.path.join(V1_FREEZER_ROOT, os.path.relpath(cgroup, V1_MEMORY_ROOT))
        return path if path in self.freezers else None

    def mkdir(self, relative: str, limit_bytes: int | None = None) -> str:
        path = self.parent
        for part in relative.strip("/").split("/"):
            if self.version == 2:
                _enable_memory(path)  # path gets a child: delegate the controller
            path = os.path.join(path, part)
            if not os.path.isdir(path):
                os.mkdir(path)
                self.cgroups.append(path)
        if limit_bytes is not None:
            self.set_limit(path, limit_bytes)
        return path

    def set_limit(self, cgroup: str, limit_bytes: int) -> None:
        name = names.LIMIT_FILE if self.version == 1 else names.MAX_FILE
        with open(os.path.join(cgroup, name), "w") as file:
            file.write(str(limit_bytes))

    def container(
        self,
        limit_bytes: int | None,
        index: int = 0,
        pod_uid: str | None = None,
        container_id: str | None = None,
    ) -> str:
        """A container cgroup in the cgroupfs-driver layout (burstable QoS)."""
        uid = pod_uid or f"{index:08x}-{uuid.uuid4().hex[:4]}-4000-8000-{uuid.uuid4().hex[:12]}"
        cid = container_id or uuid.uuid4().hex * 2
        return self.mkdir(f"kubepods/burstable/pod{uid}/{cid}", limit_bytes)

    def spawn(
        self, cgroup: str, argv: list[str], stdout: int = subprocess.DEVNULL, name: str = ""
    ) -> Started:
        """Start argv stopped, move it into cgroup; call .go() to let it run."""
        script = "import os,sys; sys.stdin.readline(); os.execvp(sys.argv[1], sys.argv[1:])"
        wrapped = (
            argv if argv[:2] == [sys.executable, HOG] else [sys.executable, "-c", script, *argv]
        )
        process = subprocess.Popen(wrapped, stdin=subprocess.PIPE, stdout=stdout)
        started = Started(process, name or " ".join(argv))
        self.processes.append(started)
        for target in (cgroup, self._mirror_of(cgroup)):
            if target is not None:
                with open(os.path.join(target, names.PROCS_FILE), "w") as file:
                    file.write(str(process.pid))
        return started

    def hog(
        self, cgroup: str, target_mib: int, rate_mib_s: float, progress: bool = False
    ) -> Started:
        argv = [sys.executable, HOG, str(target_mib), str(rate_mib_s)]
        return self.spawn(
            cgroup,
            argv + (["--progress"] if progress else []),
            stdout=subprocess.PIPE if progress else subprocess.DEVNULL,
            name=f"the hog of {target_mib} MiB at {rate_mib_s:g} MiB/s",
        )

    def read(self, cgroup: str, file: str) -> str:
        """A control file's text, stripped."""
        with open(os.path.join(cgroup, file)) as handle:
            return handle.read().strip()

    def files(self, cgroup: str) -> list[str]:
        return os.listdir(cgroup)

    def oom_kills(self, cgroup: str) -> int:
        name = names.OOM_CONTROL_FILE if self.version == 1 else names.EVENTS_FILE
        text = cgroupfs.read_text(os.path.join(cgroup, name))
        assert text is not None
        return cgroupfs.parse_flat_keyed(text)["oom_kill"]

    def remove(self, cgroup: str) -> None:
        os.rmdir(cgroup)
        self.cgroups.remove(cgroup)

    def pids_in(self, cgroup: str) -> list[int]:
        """Every process in cgroup (the workloads' children included)."""
        return cgroupfs.read_procs(cgroup) or []

    def cleanup(self) -> None:
        for started in self.processes:
            for pipe in (started.process.stdin, started.process.stdout):
                if pipe is not None:
                    pipe.close()
        for path in self.freezers:  # a frozen task dies of SIGKILL only once thawed
            with (
                contextlib.suppress(FileNotFoundError),
                open(os.path.join(path, "freezer.state"), "w") as file,
            ):
                file.write("THAWED")
        kill_and_reap(started.pid for started in self.processes)
        # the workloads' children (forked inside these cgroups, so created by this test)
        for path in sorted(self.cgroups + self.freezers, key=len, reverse=True):
            _kill_members(path)
        for path in sorted(self.cgroups + self.freezers, key=len, reverse=True):
            _rmdir_when_empty(path)


def _kill_members(cgroup: str) -> None:
    """SIGKILL what is left in a cgroup this test made, until it is empty (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        pids = cgroupfs.read_procs(cgroup) or []
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)  # teardown only: the killed take a moment to leave


def _rmdir_when_empty(path: str) -> None:
    """rmdir; retried briefly while the kernel finishes reaped tasks' exit (EBUSY)."""
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
            time.sleep(0.01)  # teardown only, bounded to 1 s
    os.rmdir(path)


def _enable_memory(cgroup: str) -> None:
    control = os.path.join(cgroup, "cgroup.subtree_control")
    with open(control) as file:
        if "memory" in file.read().split():
            return
    with open(control, "w") as file:
        file.write("+memory")


def new_tree(version: int = 1) -> CgroupTree:
    root = V1_MEMORY_ROOT if version == 1 else V2_ROOT
    parent = os.path.join(root, f"memguard-test-{uuid.uuid4().hex[:12]}")
    if version == 2:
        _enable_memory(root)  # the VM's root: memguard-test-* gets memory files
    os.mkdir(parent)
    tree = CgroupTree(parent, version)
    tree.cgroups.append(parent)
    return tree
