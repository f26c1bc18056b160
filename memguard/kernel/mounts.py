"""Where the memory controller lives: cgroup v1, hybrid or v2 (unified).

/proc/self/mountinfo lists the cgroup mounts: a v1 hierarchy with the memory
controller ("cgroup" with "memory" in its super options), and/or a "cgroup2"
mount. Hybrid hosts mount cgroup2 at /sys/fs/cgroup/unified without
controllers: memory is then v1. On a v2-only host memory is listed in the
root's cgroup.controllers.

This is what this process sees mounted, which in a container is its own cgroup
namespace: the host's layout comes from --cgroup-root (memguard.kernel.hierarchy);
mountinfo only places the v1 hierarchies of an explicit --parent outside it.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"


class HostMode(enum.Enum):
    V1 = "v1"
    HYBRID = "hybrid"  # v1 memory controller, cgroup2 mounted beside it
    V2 = "v2"
    NONE = "none"  # no memory controller mounted


@dataclass(frozen=True)
class CgroupMounts:
    v1_memory: str | None = None  # mount point of the v1 memory hierarchy
    v2: str | None = None  # mount point of cgroup2
    v1_freezer: str | None = None  # mount point of the v1 freezer hierarchy


def parse_mountinfo(text: str) -> CgroupMounts:
    v1_memory: str | None = None
    v2: str | None = None
    v1_freezer: str | None = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mount_point, fstype, options = fields[4], tail[0], tail[2].split(",")
        if fstype == "cgroup" and "memory" in options and v1_memory is None:
            v1_memory = mount_point
        elif fstype == "cgroup" and "freezer" in options and v1_freezer is None:
            v1_freezer = mount_point
        elif fstype == "cgroup2" and v2 is None:
            v2 = mount_point
    return CgroupMounts(v1_memory, v2, v1_freezer)


def host_mode(mounts: CgroupMounts, v2_controllers: str | None) -> HostMode:
    """v2_controllers: the cgroup2 root's cgroup.controllers (None if unreadable)."""
    v2_memory = mounts.v2 is not None and "memory" in (v2_controllers or "").split()
    if mounts.v1_memory is not None:
        return HostMode.HYBRID if mounts.v2 is not None else HostMode.V1
    return HostMode.V2 if v2_memory else HostMode.NONE


def read_host() -> tuple[HostMode, CgroupMounts]:
    with open(MOUNTINFO) as file:
        mounts = parse_mountinfo(file.read())
    controllers = None
    if mounts.v2 is not None:
        try:
            with open(os.path.join(mounts.v2, "cgroup.controllers")) as file:
                controllers = file.read()
        except OSError:
            controllers = None
    return host_mode(mounts, controllers), mounts
