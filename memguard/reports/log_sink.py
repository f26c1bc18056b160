"""The log sink: every report as one log line (text) or one JSON object."""

from __future__ import annotations

import logging

from memguard.reports.report import Report, ReportKind

_LEVELS = {
    ReportKind.FLUSH: logging.INFO,
    ReportKind.SKIP: logging.WARNING,
    ReportKind.KILL_PROCESS: logging.WARNING,
    ReportKind.KILL_CONTAINER: logging.WARNING,
    ReportKind.TERMINATE: logging.WARNING,
    ReportKind.EVICT: logging.WARNING,
    ReportKind.DELETE: logging.WARNING,
    ReportKind.PROTECTED: logging.WARNING,
    ReportKind.NOOP: logging.WARNING,
    ReportKind.NO_VICTIM: logging.WARNING,
    ReportKind.KERNEL_OOM: logging.WARNING,
    ReportKind.QOS_APPLIED: logging.INFO,
    ReportKind.QOS_INVALID: logging.WARNING,
    ReportKind.QOS_UNSUPPORTED: logging.WARNING,
    ReportKind.PARENT_MISSING: logging.WARNING,
    ReportKind.BAD_ANNOTATION: logging.WARNING,
}


class LogSink:
    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("memguard.report")

    async def deliver(self, report: Report) -> None:
        self._log.log(
            _LEVELS.get(report.kind, logging.WARNING),  # a kind without a level still logs
            "%s %s",
            report.kind.value,
            report.message(),
            extra={"fields": report.fields()},
        )
