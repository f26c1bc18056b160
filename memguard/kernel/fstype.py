"""statfs(2) filesystem type: tells a real cgroupfs from a fake tree."""

from __future__ import annotations

import enum
import errno
import os

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
