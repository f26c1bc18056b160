"""mlockall(2): keep the agent's own memory resident - never reclaimed, never swapped.

Kernel facts (mm/mlock.c):
- MCL_CURRENT locks every mapping there is now and faults all of it in (the
  whole of libpython and every shared library, every thread stack, all of
  them); MCL_FUTURE marks the process so that every later mapping is locked
  too - a new thread's stack (8 MiB by default) is then faulted in whole.
- MCL_ONFAULT (Linux 4.4) with either: lock pages only once they are touched.
  Pages already resident are locked at once; nothing is faulted in ahead, so
  untouched stack and arena reserve cost nothing.
- Each call first clears what the last one asked of later mappings; a call
  with MCL_FUTURE but without MCL_CURRENT leaves the current mappings as they
  are (still locked after an earlier MCL_CURRENT): MCL_CURRENT, then
  MCL_FUTURE | MCL_ONFAULT locks all of now whole and the future as touched.
- Without CAP_IPC_LOCK the call fails with EPERM when RLIMIT_MEMLOCK is 0, and
  with ENOMEM (MCL_CURRENT) when the process's whole address space (total_vm,
  not its RSS) is larger than RLIMIT_MEMLOCK; a failed call changes nothing.
  With the capability there is no limit. An unknown flag is EINVAL.
- Locked pages stay charged to the process's memory cgroup and cannot be
  reclaimed: its limit must hold them.
"""

from __future__ import annotations

from memguard.kernel.native import check, lib

__all__ = ["ON_FAULT_AVAILABLE", "lock_all", "locked_bytes"]

# 0 when the build headers lacked MCL_ONFAULT (the kernel may still have it).
ON_FAULT_AVAILABLE = lib.MEMGUARD_MCL_ONFAULT != 0


def lock_all(*, current: bool, future: bool, on_fault: bool) -> None:
    """mlockall with the chosen flags; KernelError (errno) when refused."""
    flags = (lib.MCL_CURRENT if current else 0) | (lib.MCL_FUTURE if future else 0)
    if on_fault:
        if not ON_FAULT_AVAILABLE:
            raise ValueError("MCL_ONFAULT is not in this build's headers")
        flags |= lib.MEMGUARD_MCL_ONFAULT
    if not flags & (lib.MCL_CURRENT | lib.MCL_FUTURE):
        raise ValueError("mlockall needs current or future")
    check(lib.mlockall(flags), "mlockall")


def locked_bytes(smaps_rollup_path: str = "/proc/self/smaps_rollup") -> int | None:
    """Resident memory a process has locked ("Locked:", proportional to sharing), or
    None when not readable. (VmLck in /proc/PID/status counts the size of locked
    mappings, resident or not: with MCL_ONFAULT most of it is not.)"""
    try:
        with open(smaps_rollup_path) as file:
            for line in file:
                if line.startswith("Locked:"):
                    return int(line.split()[1]) * 1024  # "Locked:   1234 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None
