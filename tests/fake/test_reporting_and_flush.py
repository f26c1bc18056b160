"""The report bus never blocks a guard; flushes are bounded and never doubled."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

import trio
import trio.testing

from memguard.backends.base import NamedService, Notifier
from memguard.backends.inotify_hub import InotifyHub
from memguard.guarding.flusher import Flusher
from memguard.policy.model import MemorySnapshot
from memguard.policy.paths import ContainerRef
from memguard.reports.bus import ReportBus
from memguard.reports.report import Report, ReportKind
from testing.agents import until
from testing.waits import within


def _report(index: int) -> Report:
    ref = ContainerRef(None, None, None, None, "leaf")
    return Report(ReportKind.FLUSH, f"/cg/{index}", ref, 1, 2, 1, "noop", "flushed")


class StuckSink:
    name = "stuck"

    def __init__(self) -> None:
        self.started = trio.Event()

    async def deliver(self, report: Report) -> None:
        self.started.set()
        await trio.sleep_forever()


class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def deliver(self, report: Report) -> None:
        self.reports.append(report)


class FailingSink:
    name = "failing"

    async def deliver(self, report: Report) -> None:
        raise RuntimeError("the API server is on fire")


async def test_a_stuck_sink_drops_and_counts_without_blocking_anyone() -> None:
    stuck, healthy = StuckSink(), ListSink()
    bus = ReportBus([stuck, healthy], capacity=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        bus.publish(_report(0))
        with within("the stuck sink taking report 0"):
            await stuck.started.wait()  # the stuck sink holds report 0 in its hands
        for burst in ((1, 2, 3, 4), (5, 6, 7, 8), (9,)):
            for index in burst:
                bus.publish(_report(index))  # synchronous: returns at once, always
            await trio.testing.wait_all_tasks_blocked()  # the healthy sink catches up
        assert bus.dropped["stuck"] == 9 - 4  # its queue holds 4, the rest is dropped
        assert bus.dropped["list"] == 0
        bus.close()
        nursery.cancel_scope.cancel()  # the stuck sink never drains
    assert [r.cgroup for r in healthy.reports] == [f"/cg/{i}" for i in range(10)]
    assert bus.published == 10


async def test_a_failing_sink_is_counted_and_the_bus_goes_on() -> None:
    failing, healthy = FailingSink(), ListSink()
    bus = ReportBus([failing, healthy])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        for index in range(3):
            bus.publish(_report(index))
        bus.close()
    assert bus.failed["failing"] == 3
    assert len(healthy.reports) == 3


class BlockingFlushBackend:
    """A backend whose flush blocks in a worker thread until released."""

    name = "blocking"
    flush_blocks = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    fds_per_guard = 0

    def exists(self, cgroup_dir: str) -> bool:
        return True

    def mounted(self, path: str) -> bool:
        return True

    def freezer_for(self, cgroup_dir: str) -> str | None:
        return None

    def snapshot(self, cgroup_dir: str) -> MemorySnapshot | None:
        return None

    def pids(self, cgroup_dir: str) -> list[int] | None:
        return []

    def flush(self, cgroup_dir: str, request_bytes: int) -> bool:
        self.calls += 1
        self.entered.set()
        return self.release.wait(timeout=60)

    def kill_all(self, cgroup_dir: str) -> bool | None:
        return None

    def services(self) -> list[NamedService]:
        return []

    unified_settings = False

    def read_setting(self, cgroup_dir: str, file: str) -> str | None:
        return None

    def write_setting(self, cgroup_dir: str, file: str, value: str) -> bool:
        return False

    def notifier(self, cgroup_dir: str, hub: InotifyHub) -> AbstractContextManager[Notifier]:
        raise NotImplementedError


async def test_flush_is_bounded_in_time_and_never_doubled() -> None:
    backend = BlockingFlushBackend()
    flusher = Flusher(backend, timeout_s=0.2, max_parallel=2)
    first = await flusher.flush("/cg/a", 1)
    assert not first.completed  # gave up waiting after 0.2 s; the thread still runs
    second = await flusher.flush("/cg/a", 1)
    assert second.busy
    assert backend.calls == 1  # never twice at once on one cgroup
    other = await flusher.flush("/cg/b", 1)  # other cgroups are not held up
    assert other.busy is False
    backend.release.set()
    await until(
        flusher.changes, lambda: not flusher.busy("/cg/a"), "the abandoned flush returned"
    )  # the abandoned thread has returned
    third = await flusher.flush("/cg/a", 1)
    assert third.completed
    assert backend.calls == 3
