"""Reports flow from guards to sinks without ever blocking a guard.

Each sink has its own bounded queue and its own delivery task: a slow or dead
sink (an API server that hangs) fills only its own queue; when full, reports
for that sink are dropped and counted. One delivery may take at most
DELIVERY_TIMEOUT_S; a sink that raises or overruns is counted and logged,
never allowed to stop the agent, and each delivery task runs under
memguard.components.supervise (restarted if it ever fails itself).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import trio

from memguard.components import Changes, ComponentStatus, describe, supervise
from memguard.reports.report import Report

log = logging.getLogger(__name__)

DEFAULT_QUEUE_CAPACITY = 1024
# Longer than any sink needs when its peer answers (Events: 5 attempts of at
# most 5 s plus 7.5 s of backoff); a delivery that takes longer is abandoned.
DELIVERY_TIMEOUT_S = 60.0


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
        self.changes = Changes()  # moves after every delivery (the observation API)
        self._logged_failures: set[tuple[str, str]] = set()

    @property
    def sink_names(self) -> tuple[str, ...]:
        return tuple(sink.name for sink, _, _ in self._queues)

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

    async def run(self, status: ComponentStatus | None = None) -> None:
        """Deliver until close() and the queues are drained (each sink on its own)."""
        status = status or ComponentStatus()
        async with trio.open_nursery() as nursery:
            for sink, _, receive in self._queues:
                pump = functools.partial(self._pump, sink, receive)
                nursery.start_soon(supervise, f"sink:{sink.name}", pump, status)

    async def _pump(
        self,
        sink: Sink,
        receive: trio.MemoryReceiveChannel[Report],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for report in receive:
            with trio.move_on_after(DELIVERY_TIMEOUT_S) as scope:
                try:
                    await sink.deliver(report)
                except Exception as error:
                    self.failed[sink.name] += 1
                    self._log_failure(sink.name, report, error)
                else:
                    self.delivered[sink.name] += 1
            if scope.cancelled_caught:
                self.failed[sink.name] += 1
                log.warning(
                    "sink %s took more than %.0fs to deliver %s: abandoned",
                    sink.name,
                    DELIVERY_TIMEOUT_S,
                    report.kind.value,
                )
            self.changes.notify()

    def _log_failure(self, sink_name: str, report: Report, error: Exception) -> None:
        """A traceback the first time a sink fails with an error type, one line after."""
        key = (sink_name, type(error).__name__)
        first = key not in self._logged_failures and len(self._logged_failures) < 256
        if first:
            self._logged_failures.add(key)
        log.error(
            "sink %s failed to deliver %s: %s",
            sink_name,
            report.kind.value,
            describe(error),
            exc_info=error if first else None,
        )

    def handled(self, sink_name: str) -> int:
        """Reports sink_name has delivered or failed to deliver so far."""
        return self.delivered[sink_name] + self.failed[sink_name]
