"""`--priority auto`: what each start-up step says, done or refused (memguard.cli.priority).

The steps' effects are tested on a real `memguard run` in tests/fake/test_priority.py;
here, the one line each outcome becomes, without privileges.
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import resource
import subprocess
import sys

import pytest

from memguard.cli.priority import (
    Step,
    mlock_step,
    nice_step,
    oom_step,
    raise_priority,
    shorten_switch_interval,
)
from memguard.policy.model import MIB


@pytest.mark.parametrize(
    ("before", "code", "already", "done", "line"),
    [
        (0, None, False, True, "priority: nice -10 (was 0)"),
        (-15, None, True, True, "priority: nice already -15 (at or below -10)"),
        (
            0,
            errno.EACCES,
            False,
            False,
            "priority: could not lower nice to -10: permission denied "
            "(needs CAP_SYS_NICE or RLIMIT_NICE); it stays 0",
        ),
        (
            5,
            errno.EPERM,
            False,
            False,
            "priority: could not lower nice to -10: operation not permitted "
            "(needs CAP_SYS_NICE or RLIMIT_NICE); it stays 5",
        ),
    ],
)
def test_nice_step_says_what_happened(
    before: int, code: int | None, already: bool, done: bool, line: str
) -> None:
    step = nice_step(before, -10, code, already=already)
    assert (step.name, step.done, step.line) == ("nice", done, line)
    assert step.level == (logging.INFO if done else logging.WARNING)


@pytest.mark.parametrize(
    ("before", "code", "already", "done", "line"),
    [
        (
            -997,
            None,
            False,
            True,
            "priority: oom_score_adj -1000 (was -997): the kernel's OOM killer never "
            "picks memguard",
        ),
        (-1000, None, True, True, "priority: oom_score_adj already -1000"),
        (
            -997,
            errno.EACCES,
            False,
            False,
            "priority: could not lower oom_score_adj to -1000: permission denied (needs "
            "CAP_SYS_RESOURCE to go below the lowest value set for it before); it stays -997",
        ),
        (
            None,
            errno.ENOENT,
            False,
            False,
            "priority: could not lower oom_score_adj to -1000: no such file or directory; "
            "it stays unknown",
        ),
    ],
)
def test_oom_score_adj_step_says_what_happened(
    before: int | None, code: int | None, already: bool, done: bool, line: str
) -> None:
    step = oom_step(before, -1000, code, already=already)
    assert (step.name, step.done, step.line) == ("oom_score_adj", done, line)


def test_mlock_step_done_says_how_much_is_locked() -> None:
    step = mlock_step(None, None, None, 37 * MIB)
    assert step.done
    assert step.line == (
        "priority: memory locked (37.0MiB now): never reclaimed or swapped; later pages "
        "are locked when first touched (mlockall MCL_CURRENT, then MCL_FUTURE|MCL_ONFAULT)"
    )


@pytest.mark.parametrize(
    ("code", "limit", "space", "current_locked", "line"),
    [
        (
            errno.ENOMEM,
            8 * MIB,
            1024 * MIB,
            False,
            "priority: could not lock memory (mlockall): cannot allocate memory (needs "
            "CAP_IPC_LOCK: RLIMIT_MEMLOCK 8.0MiB is less than the address space 1.0GiB)",
        ),
        (
            errno.EPERM,
            0,
            None,
            False,
            "priority: could not lock memory (mlockall): operation not permitted "
            "(needs CAP_IPC_LOCK)",
        ),
        (
            errno.EINVAL,
            None,
            None,
            True,
            "priority: memory mapped now is locked, later mappings are not (mlockall "
            "MCL_FUTURE|MCL_ONFAULT): this kernel does not take MCL_ONFAULT (Linux 4.4 or later)",
        ),
        (
            errno.ENOMEM,
            resource.RLIM_INFINITY,
            None,
            False,
            "priority: could not lock memory (mlockall): cannot allocate memory (needs "
            "CAP_IPC_LOCK: RLIMIT_MEMLOCK unlimited is less than the address space)",
        ),
    ],
)
def test_mlock_step_says_why_it_was_refused(
    code: int, limit: int | None, space: int | None, current_locked: bool, line: str
) -> None:
    step = mlock_step(code, limit, space, None, current_locked=current_locked)
    assert (step.name, step.done, step.line) == ("mlockall", False, line)
    assert step.level == logging.WARNING


def test_off_touches_nothing_and_says_so() -> None:
    adj = pathlib.Path("/proc/self/oom_score_adj")
    before = (os.getpriority(os.PRIO_PROCESS, 0), adj.read_text())
    steps = raise_priority("off")
    assert steps == (Step("priority", True, "priority: left as it is (--priority off)"),)
    assert (os.getpriority(os.PRIO_PROCESS, 0), adj.read_text()) == before


def test_oom_score_adj_is_written_where_the_kernel_allows_it() -> None:
    """Raising oom_score_adj and lowering it back to where it was needs no privilege:
    the write path itself, in a child (the test process keeps its own value)."""
    script = (
        "import pathlib\n"
        "from memguard.cli.priority import protect_from_oom_killer\n"
        "adj = pathlib.Path('/proc/self/oom_score_adj')\n"
        "before = int(adj.read_text())\n"
        "adj.write_text(str(before + 100))\n"
        "step = protect_from_oom_killer(target=before)\n"
        "print(step.done, step.line, adj.read_text().strip(), before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    done, value, before = out[0], out[-2], out[-1]
    assert (done, value) == ("True", before)
    assert f"(was {int(before) + 100})" in " ".join(out)


def test_switch_interval_is_shortened_and_never_lengthened() -> None:
    before_s = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        step = shorten_switch_interval(0.0005)
        assert (step.name, step.done, sys.getswitchinterval()) == ("switch_interval", True, 0.0005)
        assert step.line.startswith("priority: GIL switch interval 0.5 ms (was 5 ms)")
        again = shorten_switch_interval(0.001)  # already shorter: left alone
        assert again.line == "priority: GIL switch interval already 0.5 ms"
        assert sys.getswitchinterval() == 0.0005
    finally:
        sys.setswitchinterval(before_s)


def test_off_keeps_the_switch_interval() -> None:
    before_s = sys.getswitchinterval()
    raise_priority("off")
    assert sys.getswitchinterval() == before_s
