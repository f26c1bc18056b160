"""`memguard run --priority auto|off`: don't be starved (earlyoom's `-p`).

At start, before any thread exists, `auto` raises the agent's own standing,
each step where permitted, and says in one log line per step what it did or
why it could not:

1. nice -10. Linux keeps the nice value per thread (per task):
   setpriority(PRIO_PROCESS, 0) changes the calling thread only, and a new
   thread inherits its creator's value. So this runs before the log writer,
   trio's workers and the Kubernetes thread start (every thread already there
   is set too). Lowering nice needs CAP_SYS_NICE (or RLIMIT_NICE); an agent
   already at -10 or below is left alone. Inside a CPU cgroup nice only ranks
   the agent against its own cgroup's tasks: against other pods its CPU
   request (its weight) is what counts.
2. oom_score_adj -1000 (per process): the kernel's OOM killer never picks the
   agent. Going below the lowest value a privileged writer set before
   (oom_score_adj_min: the kubelet's -997 for a Guaranteed pod) needs
   CAP_SYS_RESOURCE; otherwise EACCES and the value stays.
3. mlockall(MCL_CURRENT), then mlockall(MCL_FUTURE | MCL_ONFAULT): all that
   is mapped at start (the interpreter, its libraries, every module memguard
   imported - the kill path included, before it ever ran) is faulted in and
   locked: never reclaimed, never swapped, so the first kill does not wait
   for a page of code read back from disk on a node short of memory. Later
   mappings are locked page by page when first touched: MCL_FUTURE alone
   would fault each one in whole (8 MiB per thread stack, malloc arenas):
   95.7 MiB RSS instead of 37.6 MiB for 200 guarded cgroups (README,
   "Deploying"). Needs CAP_IPC_LOCK (or an RLIMIT_MEMLOCK larger than the
   whole address space).

4. The interpreter's switch interval 0.5 ms (was 5 ms): a thread that
   wants the GIL waits for whoever holds it until this interval passes. The
   trio thread (every guard, the kill path) shares the GIL with the workers:
   the /metrics renderer, the cache flusher, the log writer, the Kubernetes
   thread. Each syscall on the kill path lets go of the GIL and takes it back,
   so a busy worker cost the kill path up to 5 ms per syscall. Measured with
   1,000 guarded containers, 8 clients scraping /metrics in a loop and a
   1 GiB/s hog in 128 MiB, before /metrics cached its rendering: the kernel
   won 2/12 (twice; wake -> SIGKILL up to 9.1 ms) at 5 ms, 0/12 at 0.5 ms.
   With the cache (bench.scrape_storm, 12 and 30 trials a cell): storm 0/12
   and 2/30 lost at 5 ms, 1/12 and 0/30 at 0.5 ms - small, and free.

`off` touches nothing. The decisions (what each outcome says, at which level)
are pure functions of what was found, so they are tested without privileges.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import sys
import threading
from dataclasses import dataclass

from memguard.errors import KernelError
from memguard.kernel import memlock
from memguard.units import format_size

log = logging.getLogger(__name__)

NICE = -10
OOM_SCORE_ADJ = -1000
MLOCK_FLAGS_TEXT = "MCL_CURRENT, then MCL_FUTURE|MCL_ONFAULT"
SWITCH_INTERVAL_S = 0.0005
_PERMISSION = (errno.EPERM, errno.EACCES)


@dataclass(frozen=True)
class Step:
    """One start-up step's outcome: one log line, a warning when refused."""

    name: str
    done: bool
    line: str

    @property
    def level(self) -> int:
        return logging.INFO if self.done else logging.WARNING


def raise_priority(mode: str, proc_self: str = "/proc/self") -> tuple[Step, ...]:
    """Carry out --priority (call it before any thread starts); log with report()."""
    if mode == "off":
        return (Step("priority", True, "priority: left as it is (--priority off)"),)
    return (
        lower_nice(proc_self),
        protect_from_oom_killer(proc_self),
        lock_memory(proc_self),
        shorten_switch_interval(),
    )


def report(steps: tuple[Step, ...]) -> None:
    for step in steps:
        log.log(step.level, "%s", step.line)


# -- nice ---------------------------------------------------------------------------------


def lower_nice(proc_self: str = "/proc/self", target: int = NICE) -> Step:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    if before <= target:
        return nice_step(before, target, None, already=True)
    code = None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, target)  # this thread first: the others follow it
        for tid in _other_threads(proc_self):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, target)
            except ProcessLookupError:
                continue  # the thread ended meanwhile
    except OSError as error:
        code = error.errno or 0
    return nice_step(before, target, code, already=False)


def _other_threads(proc_self: str) -> list[int]:
    me = threading.get_native_id()
    try:
        return [int(tid) for tid in os.listdir(os.path.join(proc_self, "task")) if int(tid) != me]
    except (OSError, ValueError):
        return []


def nice_step(before: int, target: int, code: int | None, *, already: bool) -> Step:
    if already:
        return Step("nice", True, f"priority: nice already {before} (at or below {target})")
    if code is None:
        return Step("nice", True, f"priority: nice {target} (was {before})")
    why = _why(code, "CAP_SYS_NICE or RLIMIT_NICE")
    return Step(
        "nice", False, f"priority: could not lower nice to {target}: {why}; it stays {before}"
    )


# -- oom_score_adj ------------------------------------------------------------------------


def protect_from_oom_killer(proc_self: str = "/proc/self", target: int = OOM_SCORE_ADJ) -> Step:
    path = os.path.join(proc_self, "oom_score_adj")
    before = _read_int(path)
    if before is not None and before <= target:
        return oom_step(before, target, None, already=True)
    code = None
    try:
        with open(path, "w") as file:
            file.write(str(target))
    except OSError as error:
        code = error.errno or 0
    return oom_step(before, target, code, already=False)


def oom_step(before: int | None, target: int, code: int | None, *, already: bool) -> Step:
    was = "unknown" if before is None else str(before)
    if already:
        return Step("oom_score_adj", True, f"priority: oom_score_adj already {was}")
    if code is None:
        return Step(
            "oom_score_adj",
            True,
            f"priority: oom_score_adj {target} (was {was}): the kernel's OOM killer never "
            "picks memguard",
        )
    why = _why(code, "CAP_SYS_RESOURCE to go below the lowest value set for it before")
    return Step(
        "oom_score_adj",
        False,
        f"priority: could not lower oom_score_adj to {target}: {why}; it stays {was}",
    )


def _read_int(path: str) -> int | None:
    try:
        with open(path) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


# -- the GIL's switch interval ----------------------------------------------------------


def shorten_switch_interval(target_s: float = SWITCH_INTERVAL_S) -> Step:
    """The trio thread waits at most target_s for a worker thread to hand over the GIL."""
    before_s = sys.getswitchinterval()
    if before_s <= target_s:
        line = f"priority: GIL switch interval already {before_s * 1000:g} ms"
        return Step("switch_interval", True, line)
    sys.setswitchinterval(target_s)
    return Step(
        "switch_interval",
        True,
        f"priority: GIL switch interval {target_s * 1000:g} ms (was {before_s * 1000:g} ms): "
        "a busy worker thread hands the kill path the GIL sooner",
    )


# -- mlockall -----------------------------------------------------------------------------


def lock_memory(proc_self: str = "/proc/self") -> Step:
    """Everything mapped now, resident and locked; later mappings locked as touched."""
    if not memlock.ON_FAULT_AVAILABLE:
        return Step(
            "mlockall",
            False,
            "priority: memory not locked: this build's headers have no MCL_ONFAULT "
            "(locking every later mapping whole would cost 8 MiB per thread stack)",
        )
    try:
        memlock.lock_all(current=True, future=False, on_fault=False)
    except KernelError as error:
        limit_bytes = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        return mlock_step(error.errno, limit_bytes, _address_space_bytes(proc_self), None)
    try:
        memlock.lock_all(current=False, future=True, on_fault=True)
    except KernelError as error:
        return mlock_step(error.errno, None, None, None, current_locked=True)
    return mlock_step(
        None, None, None, memlock.locked_bytes(os.path.join(proc_self, "smaps_rollup"))
    )


def mlock_step(
    code: int | None,
    limit_bytes: int | None,
    address_space_bytes: int | None,
    locked_bytes: int | None,
    *,
    current_locked: bool = False,
) -> Step:
    if code is None:
        now = "" if locked_bytes is None else f" ({format_size(locked_bytes)} now)"
        return Step(
            "mlockall",
            True,
            f"priority: memory locked{now}: never reclaimed or swapped; later pages are "
            f"locked when first touched (mlockall {MLOCK_FLAGS_TEXT})",
        )
    if code == errno.ENOMEM:
        limit = "unlimited" if limit_bytes in (None, resource.RLIM_INFINITY) else (
            format_size(limit_bytes)
        )  # fmt: skip
        space = "" if address_space_bytes is None else f" {format_size(address_space_bytes)}"
        why = (
            f"{os.strerror(code).lower()} (needs CAP_IPC_LOCK: RLIMIT_MEMLOCK {limit} is "
            f"less than the address space{space})"
        )
    elif code == errno.EINVAL:
        why = "this kernel does not take MCL_ONFAULT (Linux 4.4 or later)"
    else:
        why = _why(code, "CAP_IPC_LOCK")
    if current_locked:
        return Step(
            "mlockall",
            False,
            f"priority: memory mapped now is locked, later mappings are not "
            f"(mlockall MCL_FUTURE|MCL_ONFAULT): {why}",
        )
    return Step("mlockall", False, f"priority: could not lock memory (mlockall): {why}")


def _address_space_bytes(proc_self: str) -> int | None:
    try:
        with open(os.path.join(proc_self, "status")) as file:
            for line in file:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _why(code: int, needs: str) -> str:
    text = os.strerror(code).lower() if code else "failed"
    return f"{text} (needs {needs})" if code in _PERMISSION else text
