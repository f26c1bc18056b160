"""Access to the compiled cffi module and errno translation."""

from __future__ import annotations

import errno as errno_mod
import os

from memguard._native import ffi, lib
from memguard.errors import KernelError, Unsupported

__all__ = ["check", "ffi", "lib", "os_error"]


def os_error(operation: str) -> KernelError:
    """The KernelError for the errno the last native call left behind."""
    code = ffi.errno
    if code == errno_mod.ENOSYS:
        return Unsupported(operation, code, os.strerror(code))
    return KernelError(operation, code, os.strerror(code))


def check(result: int, operation: str) -> int:
    """Return result, or raise the KernelError for errno when it is -1."""
    if result == -1:
        raise os_error(operation)
    return result
