"""statfs(2) filesystem type: tells a real cgroupfs from a fake tree."""

from __future__ import annotations

import enum
import errno
import os

from memguard.errors import KernelError
from memguard.kernel.native import ffi, lib, os_error


class FsKind(enum.Enum):
    CGROUP_V1 = "cgroup-v1"
    CGROUP_V2 = "cgroup-v2"
    OTHER = "other"


def fs_kind(path: str) -> FsKind | None:
    """The filesystem kind holding path, or None when path does not exist."""
    buf = ffi.new("struct statfs *")
    if lib.statfs(os.fsencode(path), buf) == -1:
        if ffi.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise os_error(f"statfs {path}")
    magic = int(buf.f_type) & 0xFFFFFFFF
    if magic == lib.CGROUP_SUPER_MAGIC:
        return FsKind.CGROUP_V1
    if magic == lib.CGROUP2_SUPER_MAGIC:
        return FsKind.CGROUP_V2
    return FsKind.OTHER


def existing_ancestor(path: str) -> str:
    """path itself when it exists, else its nearest existing ancestor."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        current = os.path.dirname(current)
    return current


def still_on(path: str, kind: FsKind) -> bool:
    """path (or its nearest existing ancestor) is on a filesystem of kind.

    A statfs that fails for another reason than absence counts as "still on":
    only a filesystem seen to be another one means it is gone."""
    try:
        found = fs_kind(existing_ancestor(path))
    except KernelError:
        return True
    return found is None or found is kind
