"""The kill path's real-time burst (memguard.kernel.sched): SCHED_FIFO while a
container is signalled, back to SCHED_OTHER with the thread's nice value after;
refused once without CAP_SYS_NICE, then not tried again. Needs root (CI)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from memguard.kernel.sched import RealtimeBurst

pytestmark = pytest.mark.kernel


def _in_thread(body: object) -> dict[str, object]:
    """Run body(seen) in a fresh thread (scheduling policy and nice are per thread)."""
    seen: dict[str, object] = {}
    thread = threading.Thread(target=body, args=(seen,))  # type: ignore[arg-type]
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return seen


def test_the_burst_runs_in_sched_fifo_and_restores_the_nice_value() -> None:
    refusals: list[OSError] = []

    def body(seen: dict[str, object]) -> None:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, 7)
        burst = RealtimeBurst(on_refused=refusals.append)
        with burst as realtime:
            seen["realtime"] = realtime
            seen["inside"] = os.sched_getscheduler(0)
            with burst as nested:
                seen["nested"] = nested
            seen["after_nested"] = os.sched_getscheduler(0)
        seen["after"] = os.sched_getscheduler(0)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)

    seen = _in_thread(body)
    assert refusals == []
    assert seen["realtime"] is True
    assert seen["inside"] == os.SCHED_FIFO
    assert seen["nested"] is True
    assert seen["after_nested"] == os.SCHED_FIFO  # the outer block still runs
    assert seen["after"] == os.SCHED_OTHER
    assert seen["nice"] == 7


def test_the_burst_restores_the_policy_when_the_block_raises() -> None:
    def body(seen: dict[str, object]) -> None:
        burst = RealtimeBurst(on_refused=lambda error: None)
        try:
            with burst:
                raise ValueError("in the block")
        except ValueError:
            seen["after"] = os.sched_getscheduler(0)

    assert _in_thread(body)["after"] == os.SCHED_OTHER


REFUSED = """
import os
from memguard.kernel.sched import RealtimeBurst
calls = []
burst = RealtimeBurst(on_refused=calls.append)
with burst as first:
    pass
with burst as second:
    pass
print(first, second, burst.refused, len(calls), calls[0].errno, os.sched_getscheduler(0))
"""


def test_without_cap_sys_nice_it_is_refused_once_and_not_tried_again() -> None:
    command = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]
    result = subprocess.run(
        [*command, "--", sys.executable, "-c", REFUSED],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second, refused, calls, code, policy = result.stdout.split()
    assert (first, second, refused, calls) == ("False", "False", "True", "1")
    assert int(code) == 1  # EPERM
    assert int(policy) == os.SCHED_OTHER
