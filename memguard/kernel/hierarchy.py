"""Where the host's memory hierarchy is, under a cgroupfs root (--cgroup-root).

The DaemonSet mounts the host's /sys/fs/cgroup at /host/sys/fs/cgroup. What
is mounted there tells the layout - not this container's own
/proc/self/mountinfo, which shows the container's cgroup namespace and its
own /sys/fs/cgroup. statfs(2) of the root and of <root>/memory says it all:

- the root is cgroup2 (CGROUP2_SUPER_MAGIC): a pure v2 host, memory in the
  root's cgroup.controllers; the kubelet's tree is <root>/kubepods.slice
  (systemd driver, the norm on v2) or <root>/kubepods (cgroupfs driver).
- the root is another filesystem (a tmpfs) and <root>/memory is a cgroup v1
  hierarchy (CGROUP_SUPER_MAGIC): v1 - or hybrid when <root>/unified is
  cgroup2 (systemd's hybrid mode: cgroup2 without controllers beside the v1
  ones, so memory is v1 all the same); the tree is <root>/memory/kubepods
  (cgroupfs driver) or <root>/memory/kubepods.slice. <root>/freezer, when it
  is a v1 hierarchy, is where a container kill freezes (kernel.freezer).
- a root that is itself a v1 hierarchy, or a tmpfs without a v1 memory
  hierarchy in it, or nothing at all: no memory controller to guard there.

choose_layout() is the rule, pure (a table of what statfs saw -> the layout,
or why there is none); probe() is the statfs shell. A fake tree (memguard
fake init) is seen by the caller (only cli/ knows fakes) and passed in Seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from memguard.errors import ConfigError
from memguard.kernel import cgroupfs
from memguard.kernel.fstype import FsKind, fs_kind
from memguard.kernel.mounts import HostMode
from memguard.kernel.names import CONTROLLERS_FILE

KUBEPODS = ("kubepods", "kubepods.slice")  # the kubelet's cgroupfs / systemd driver
MEMORY_DIR, FREEZER_DIR, UNIFIED_DIR = "memory", "freezer", "unified"


@dataclass(frozen=True)
class Seen:
    """What statfs saw under a root (None: nothing there)."""

    root: FsKind | None
    memory: FsKind | None = None  # <root>/memory
    unified: FsKind | None = None  # <root>/unified
    freezer: FsKind | None = None  # <root>/freezer
    v2_controllers: str | None = None  # the root's cgroup.controllers, when cgroup2
    directory: bool = True  # the root is a directory
    fake_version: int | None = None  # the root is (inside) a fake tree of this version


@dataclass(frozen=True)
class CgroupLayout:
    root: str
    mode: HostMode  # V1, HYBRID or V2
    memory_root: str  # top of the memory hierarchy: <root>/memory (v1) or <root> (v2)
    freezer_root: str | None = None  # the v1 freezer hierarchy, when mounted
    fake: bool = False

    @property
    def version(self) -> str:
        return "2" if self.mode is HostMode.V2 else "1"

    def describe(self) -> str:
        """E.g. 'cgroup v1 (hybrid), memory hierarchy /host/sys/fs/cgroup/memory'."""
        kind = {HostMode.HYBRID: " (hybrid)", HostMode.V2: " (unified)"}.get(self.mode, "")
        fake = ", a fake tree" if self.fake else ""
        return f"cgroup v{self.version}{kind}{fake}, memory hierarchy {self.memory_root}"

    def holds(self, path: str) -> bool:
        """path is in this layout's memory hierarchy."""
        return is_under(os.path.abspath(path), self.memory_root)

    def kubepods_candidates(self) -> tuple[str, ...]:
        """The kubelet's tree, the usual driver first (v2: systemd; v1: cgroupfs)."""
        names = KUBEPODS[::-1] if self.mode is HostMode.V2 else KUBEPODS
        return tuple(os.path.join(self.memory_root, name) for name in names)


def is_under(path: str, top: str) -> bool:
    """path is top or below it (both absolute and normal)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def choose_layout(root: str, seen: Seen) -> CgroupLayout:
    """The layout under root from what statfs saw; ConfigError (one line) if none."""
    where = f"--cgroup-root {root}"
    if seen.root is None:
        raise ConfigError(f"{where} does not exist")
    if not seen.directory:
        raise ConfigError(f"{where} is not a directory")
    if seen.root is FsKind.CGROUP_V2:
        controllers = (seen.v2_controllers or "").split()
        if seen.v2_controllers is not None and "memory" not in controllers:
            raise ConfigError(
                f"{where} is cgroup v2 without the memory controller "
                f"(cgroup.controllers: {' '.join(controllers) or 'none'})"
            )
        return CgroupLayout(root, HostMode.V2, root)
    if seen.root is FsKind.CGROUP_V1:
        raise ConfigError(
            f"{where} is itself one cgroup v1 hierarchy: give the directory the "
            f"hierarchies are mounted in (here {os.path.dirname(root) or '/'}?)"
        )
    if seen.fake_version is not None:
        mode = HostMode.V2 if seen.fake_version == 2 else HostMode.V1
        return CgroupLayout(root, mode, root, fake=True)
    if seen.memory is FsKind.CGROUP_V1:
        mode = HostMode.HYBRID if seen.unified is FsKind.CGROUP_V2 else HostMode.V1
        freezer = os.path.join(root, FREEZER_DIR) if seen.freezer is FsKind.CGROUP_V1 else None
        return CgroupLayout(root, mode, os.path.join(root, MEMORY_DIR), freezer)
    found = {
        None: f"there is no {MEMORY_DIR}/",
        FsKind.CGROUP_V2: f"{MEMORY_DIR}/ is cgroup2",
        FsKind.OTHER: f"{MEMORY_DIR}/ is not a cgroup filesystem",
    }
    raise ConfigError(
        f"{where} is not a cgroup filesystem: neither cgroup2 nor a directory holding "
        f"the cgroup v1 memory hierarchy ({found[seen.memory]})"
    )


def missing_parent_hint(
    parent: str,
    auto: bool,
    layout: CgroupLayout | None,
    ancestor: str,
    ancestor_kind: FsKind | None,
    fake: bool = False,
) -> str:
    """The likely cause of a missing --parent, for /readyz and the Node Event.

    ancestor: the parent's nearest existing ancestor; ancestor_kind: its
    filesystem; fake: it is inside a fake tree."""
    if auto and layout is not None:
        return (
            f"no {' or '.join(KUBEPODS)} under {layout.memory_root} ({layout.describe()}): "
            "the kubelet makes one when it starts - is it running on this node, with "
            "cgroupsPerQOS (the default)? Otherwise set --parent"
        )
    below = os.path.relpath(parent, ancestor).split("/")[0]
    missing = f"no {below} under {ancestor}"
    if fake:
        return f"{missing} (a fake tree): make it, or point --parent at the tree"
    if ancestor_kind is FsKind.CGROUP_V2 and below == MEMORY_DIR:
        return (
            f"{missing}, which is cgroup v2: is this a cgroup v2 node? "
            f"set --cgroup-root {ancestor} and --parent auto"
        )
    if ancestor_kind in (FsKind.CGROUP_V1, FsKind.CGROUP_V2):
        version = "1" if ancestor_kind is FsKind.CGROUP_V1 else "2"
        return (
            f"{missing} (cgroup v{version}): is what makes it running? The kubelet makes "
            "kubepods (cgroupfs driver) or kubepods.slice (systemd driver): --parent auto "
            "finds either under --cgroup-root"
        )
    return (
        f"{missing}, which is not a cgroup filesystem: set --cgroup-root to where the "
        "host's cgroup filesystems are mounted, and --parent auto"
    )


def probe(root: str) -> Seen:
    """statfs the root and what may be mounted in it (KernelError: statfs failed)."""
    kind = fs_kind(root)
    if kind is None:
        return Seen(None)
    if not os.path.isdir(root):
        return Seen(kind, directory=False)
    if kind is FsKind.CGROUP_V2:
        return Seen(kind, v2_controllers=cgroupfs.read_text(os.path.join(root, CONTROLLERS_FILE)))
    if kind is FsKind.CGROUP_V1:
        return Seen(kind)
    return Seen(
        kind,
        memory=fs_kind(os.path.join(root, MEMORY_DIR)),
        unified=fs_kind(os.path.join(root, UNIFIED_DIR)),
        freezer=fs_kind(os.path.join(root, FREEZER_DIR)),
    )
