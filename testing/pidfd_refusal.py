"""pidfd syscalls refused at the cffi boundary, as a seccomp profile without them
(an older container runtime's RuntimeDefault) refuses them: the named native
calls return -1 with errno set, without entering the kernel. Only those calls
are replaced - in memguard.kernel.pidfd, the one module that makes them -
everything above them is memguard's own code, the processes and kills are real.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import memguard.kernel.pidfd as pidfd_module
from memguard.kernel.native import ffi

OPEN = "memguard_pidfd_open"
SEND_SIGNAL = "memguard_pidfd_send_signal"
MRELEASE = "memguard_process_mrelease"


class RefusingLib:
    """The compiled module's lib, with the calls in `refused` failing with their errno."""

    def __init__(self, real: Any, refused: Mapping[str, int]) -> None:
        self._real = real
        self._refused = dict(refused)
        self.calls: Counter[str] = Counter()  # refused calls made, by name

    def __getattr__(self, name: str) -> Any:
        if name not in self._refused:
            return getattr(self._real, name)
        code = self._refused[name]

        def refuse(*args: object) -> int:
            self.calls[name] += 1
            ffi.errno = code
            return -1

        return refuse


@contextmanager
def pidfds_refused(refused: Mapping[str, int]) -> Iterator[RefusingLib]:
    """While the block runs, memguard's native pidfd calls named in refused (OPEN,
    SEND_SIGNAL, MRELEASE) fail with their errno. Waits with real pidfds (a test's
    PidFd.open) belong after the block."""
    namespace = vars(pidfd_module)
    real = namespace["lib"]
    refusing = RefusingLib(real, refused)
    namespace["lib"] = refusing
    try:
        yield refusing
    finally:
        namespace["lib"] = real
