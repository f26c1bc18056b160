"""memguard's small exception tree.

errno becomes one of these at the kernel boundary (memguard.kernel). A vanished
cgroup or process is a normal result (None / False), never an exception.
"""

from __future__ import annotations


class MemguardError(Exception):
    """Base of every error memguard raises on purpose."""


class ConfigError(MemguardError):
    """A flag, environment variable or file holds a value memguard cannot use."""


class KernelError(MemguardError):
    """A kernel interface failed for a reason other than 'it is gone'."""

    def __init__(self, operation: str, errno: int, strerror: str) -> None:
        super().__init__(f"{operation}: {strerror} (errno {errno})")
        self.operation = operation
        self.errno = errno


class WatchError(KernelError):
    """inotify cannot watch one path (watch limit, name too long, no access):
    that path only; the caller falls back for it (rescans, re-reads)."""


class Unsupported(KernelError):
    """The running kernel or the build headers lack an interface (ENOSYS)."""


class CgroupFormatError(MemguardError):
    """A cgroup file held something memguard cannot parse."""


class FatalError(MemguardError):
    """Guarding has become impossible everywhere (the parent's filesystem is gone):
    the one failure that may stop the agent, with one clear line."""
