"""Reading and writing cgroupfs files: what cgroup v1 and v2 share.

Kernel facts: files of a removed cgroup vanish (ENOENT), fail with ENODEV, or
the directory is no longer one (ENOTDIR): all three mean "gone", a normal
result (None / False), never an exception. Anything else becomes KernelError.
cgroup.procs is the same on v1 and v2: one thread-group id per line.
"""

from __future__ import annotations

import errno
import os
import re

from memguard.errors import CgroupFormatError, KernelError
from memguard.kernel.names import PROCS_FILE

UNLIMITED_AT_BYTES = 2**62  # v1 prints PAGE_COUNTER_MAX pages: 9223372036854771712
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENOTDIR})
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)


def kernel_error(operation: str, error: OSError) -> KernelError:
    code = error.errno or 0
    return KernelError(operation, code, error.strerror or os.strerror(code))


def read_text(path: str) -> str | None:
    """A cgroup file's content, or None when the cgroup is gone."""
    try:
        with open(path, "rb") as file:
            return file.read().decode("ascii", "replace")
    except OSError as error:
        if error.errno in GONE_ERRNOS:
            return None
        raise kernel_error(f"read {path}", error) from error


def write(path: str, data: bytes, ok_errnos: frozenset[int] = frozenset()) -> bool:
    """Write a control file; False when the cgroup is gone (or the errno is in ok_errnos)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in GONE_ERRNOS:
            return False
        raise kernel_error(f"open {path}", error) from error
    try:
        os.write(fd, data)
    except OSError as error:
        if error.errno in GONE_ERRNOS or error.errno in ok_errnos:
            return error.errno in ok_errnos
        raise kernel_error(f"write {path}", error) from error
    finally:
        os.close(fd)
    return True


def parse_int(text: str, path: str) -> int:
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise CgroupFormatError(f"{path}: expected an integer, got {stripped[:40]!r}")
    return int(stripped)


def parse_limit(value: int) -> int | None:
    return None if value >= UNLIMITED_AT_BYTES else value


def parse_flat_keyed(text: str) -> dict[str, int]:
    """memory.stat / memory.oom_control / memory.events: 'key value' lines;
    malformed lines skipped."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and _INTEGER.fullmatch(parts[1]):
            fields[parts[0]] = int(parts[1])
    return fields


def read_procs(cgroup_dir: str) -> list[int] | None:
    """Thread-group ids in the cgroup, or None when it is gone; junk lines skipped."""
    text = read_text(os.path.join(cgroup_dir, PROCS_FILE))
    if text is None:
        return None
    return [int(line) for line in text.split() if line.isascii() and line.isdigit()]


def open_reading(path: str) -> int | None:
    """An fd on a counter file for cheap repeated reads (pread), or None when gone."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in GONE_ERRNOS:
            return None
        raise kernel_error(f"open {path}", error) from error


def pread_int(fd: int, what: str) -> int | None:
    """The integer in a counter file through its open fd (one syscall); None when gone."""
    try:
        data = os.pread(fd, 32, 0)
    except OSError as error:
        if error.errno in GONE_ERRNOS:
            return None
        raise kernel_error(f"pread {what}", error) from error
    stripped = data.strip()
    return int(stripped) if stripped.isdigit() else None
