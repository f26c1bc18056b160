"""A sink that keeps reports in memory and lets a task wait for one.

Used by `memguard demo`, the tests and the benchmarks to see what the agent
decided without parsing logs.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from memguard.reports.report import Report, ReportKind


class CollectSink:
    name = "collect"

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self._arrived = trio.Event()

    async def deliver(self, report: Report) -> None:
        self.reports.append(report)
        self._arrived.set()
        self._arrived = trio.Event()

    async def wait_for(self, predicate: Callable[[Report], bool]) -> Report:
        """The first report (already here or still to come) matching predicate."""
        checked = 0
        while True:
            for report in self.reports[checked:]:
                if predicate(report):
                    return report
            checked = len(self.reports)
            await self._arrived.wait()

    async def wait_for_kind(self, cgroup: str, kind: ReportKind) -> Report:
        """The first report of kind about cgroup."""
        return await self.wait_for(lambda report: report.cgroup == cgroup and report.kind is kind)
