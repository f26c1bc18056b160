"""Reports flow from guards to sinks without ever blocking a guard.

Each sink has its own bounded queue and its own delivery task: a slow or dead
sink (an API server that hangs) fills only its own queue; when full, reports
for that sink are dropped and counted. A sink that raises is logged, never
allowed to stop the agent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import trio

from memguard.report import Report

log = logging.getLogger(__name__)

DEFAULT_QUEUE_CAPACITY = 1024


class Sink(Protocol):
    name: str

    async def deliver(self, report: Report) -> None: ...


class ReportBus:
    def __init__(self, sinks: Sequence[Sink], capacity: int = DEFAULT_QUEUE_CAPACITY) -> None:
        self._queues = []
        for sink in sinks:
            send, receive = trio.open_memory_channel[Report](capacity)
            self._queues.append((sink, send, receive))
        self.published = 0
        self.dropped: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._progress = trio.Event()

    def publish(self, report: Report) -> None:
        """Queue report for every sink; never blocks (drops and counts when full)."""
        self.published += 1
        for sink, send, _ in self._queues:
            try:
                send.send_nowait(report)
            except trio.WouldBlock:
                self.dropped[sink.name] += 1
                if self.dropped[sink.name] in (1, 10, 100) or self.dropped[sink.name] % 1000 == 0:
                    log.warning(
                        "sink %s is behind: %d reports dropped so far",
                        sink.name,
                        self.dropped[sink.name],
                    )
            except trio.ClosedResourceError:
                self.dropped[sink.name] += 1

    def close(self) -> None:
        """No more reports: delivery tasks finish once their queues are drained."""
        for _, send, _ in self._queues:
            send.close()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for sink, _, receive in self._queues:
                nursery.start_soon(self._pump, sink, receive)

    async def _pump(self, sink: Sink, receive: trio.MemoryReceiveChannel[Report]) -> None:
        async with receive:
            async for report in receive:
                try:
                    await sink.deliver(report)
                except Exception:
                    self.failed[sink.name] += 1
                    log.exception("sink %s failed to deliver %s", sink.name, report.kind.value)
                else:
                    self.delivered[sink.name] += 1
                self._progress.set()
                self._progress = trio.Event()

    async def wait_handled(self, sink_name: str, count: int) -> None:
        """Park until sink_name has handled (delivered or failed) count reports."""
        while self.delivered[sink_name] + self.failed[sink_name] < count:
            await self._progress.wait()
