"""Error boundaries: supervise() restarts a failing component with backoff, counts
it, says why it is down, and lets only FatalError through (virtual clock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from memguard.components import RESTART_BACKOFF_S, STABLE_S, ComponentStatus, supervise
from memguard.errors import FatalError
from testing.waits import within


class Flaky:
    """Fails its first `failures` runs (before or after starting), then runs."""

    def __init__(self, failures: int, before_start: bool = False) -> None:
        self.failures = failures
        self.before_start = before_start
        self.starts: list[float] = []
        self.running = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts.append(trio.current_time())
        if self.failures and self.before_start:
            self.failures -= 1
            raise OSError("broken before start")
        task_status.started()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("broken after start")
        self.running.set()
        await trio.sleep_forever()


async def test_a_failing_component_is_restarted_with_backoff_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    status = ComponentStatus()
    flaky = Flaky(failures=3)
    async with trio.open_nursery() as nursery:
        with within("supervise() started"):
            await nursery.start(supervise, "thing", flaky.run, status)
        with within("the component running after 3 failures"):
            await flaky.running.wait()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert gaps == pytest.approx(list(RESTART_BACKOFF_S[:3]))
    assert status.failures["thing"] == 3
    assert "thing" not in status.down  # running again


async def test_a_component_that_fails_before_starting_does_not_hold_up_the_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    status = ComponentStatus()
    flaky = Flaky(failures=2, before_start=True)
    async with trio.open_nursery() as nursery:
        with within("supervise() started though its component failed before starting"):
            await nursery.start(supervise, "early", flaky.run, status)
        assert status.down["early"] == "OSError: broken before start"  # started: not waited on
        with within("the component running after 2 failures"):
            await flaky.running.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert "early" not in status.down
        nursery.cancel_scope.cancel()
    assert status.failures["early"] == 2


async def test_the_backoff_starts_over_after_a_stable_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    status = ComponentStatus()
    starts: list[float] = []
    crashed: list[float] = []
    run_s = [0.1, 0.1, STABLE_S + 1, 0.1]  # quick, quick, stable, quick
    settled = trio.Event()

    async def crashes(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        if len(starts) > len(run_s):
            settled.set()
            await trio.sleep_forever()
        await trio.sleep(run_s[len(starts) - 1])
        crashed.append(trio.current_time())
        raise RuntimeError("crash")

    async with trio.open_nursery() as nursery:
        with within("supervise() started"):
            await nursery.start(supervise, "c", crashes, status)
        # virtual time: the stable run alone lasts STABLE_S
        with within("the fifth start of the component", 2 * STABLE_S + sum(RESTART_BACKOFF_S)):
            await settled.wait()
        nursery.cancel_scope.cancel()
    backoffs = [start - crash for crash, start in zip(crashed, starts[1:], strict=False)]
    # 1 s, then 2 s; after the stable run it starts over at 1 s, then 2 s
    expected = [RESTART_BACKOFF_S[0], RESTART_BACKOFF_S[1], RESTART_BACKOFF_S[0]]
    assert backoffs == pytest.approx([*expected, RESTART_BACKOFF_S[1]])


async def test_only_a_fatal_error_stops_everything() -> None:
    async def fatal(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raise FatalError("the cgroup filesystem is gone")

    with (
        within("the fatal error ending supervise()"),
        pytest.RaisesGroup(FatalError, flatten_subgroups=True),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "discovery", fatal, ComponentStatus())


async def test_a_component_that_returns_is_done() -> None:
    async def finishes(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    status = ComponentStatus()
    with within("supervise() returning after its component returned"):
        await supervise("once", finishes, status)
    assert status.failures["once"] == 0
