"""Log output that never blocks the caller: one line per record, text or JSON.

A stuck reader of stderr (a stalled container-runtime log pipe, a full
journald) must not stall the guards: records are formatted on the caller's
thread, queued (bounded) and written by one writer thread. When the queue is
full, records are dropped and counted; once the writer moves again it writes
one line saying how many were dropped, where they would have been.

Records may carry `fields` (a dict) via `extra=`: JSON output merges them into
the object; text output shows the message alone (reports put their numbers in
it). Text output escapes control characters, so a cgroup or process name with
a newline cannot forge a log line.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import sys
import threading
import time
from typing import Any, TextIO

from memguard.text import escape_controls, printable

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_QUEUE_LINES = 4096
CLOSE_WAIT_S = 2.0  # at exit, give a stuck writer this long, then drop the rest


def _timestamp(created_s: float, msecs: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created_s))
    return f"{seconds}.{int(msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = escape_controls(record.getMessage())
        line = f"{_timestamp(record.created, record.msecs)} {record.levelname:<7} {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(_printable_values(data), default=str)


def _printable_values(value: Any) -> Any:
    """Strings made encodable (memguard.text.printable), in dicts and lists too."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_values(v) for v in value]
    return value


def _write_fd(fd: int, data: bytes) -> None:
    """Write all of data to fd (blocking; waits out EAGAIN on a non-blocking fd)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


class NonBlockingHandler(logging.Handler):
    """Queues formatted lines for a writer thread; never blocks emit().

    `dropped` counts lines lost to a full queue or a failing write;
    `write_errors` counts the failing writes among them.
    """

    def __init__(
        self, stream: TextIO, capacity: int = LOG_QUEUE_LINES, close_wait_s: float = CLOSE_WAIT_S
    ) -> None:
        super().__init__()
        self._close_wait_s = close_wait_s
        self._stream = stream
        self._fd = self._own_fd(stream)
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._sequence = 0  # lines queued so far
        self._drops_after: int | None = None  # drops happened after this queued line
        self._unreported_drops = 0
        self.dropped = 0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._write_loop, name="memguard-log", daemon=True)
        self._thread.start()

    @staticmethod
    def _own_fd(stream: TextIO) -> int | None:
        """A private dup of the stream's fd: a writer stuck in write(2) then holds
        no lock that other code writing to the same stream would wait on."""
        try:
            return os.dup(stream.fileno())
        except (OSError, ValueError, AttributeError):
            return None  # an in-memory stream (tests): written through its own API

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad format string in a log call: count, never raise
            self._count_drop()
            return
        with self._lock:
            try:
                self._queue.put_nowait((self._sequence + 1, line))
            except queue.Full:
                self._count_drop_locked()
                return
            self._sequence += 1

    def _count_drop(self) -> None:
        with self._lock:
            self._count_drop_locked()

    def _count_drop_locked(self) -> None:
        self.dropped += 1
        self._unreported_drops += 1
        if self._drops_after is None:
            self._drops_after = self._sequence

    def _take_drop_notice(self, written_sequence: int) -> int:
        """Drops to report now that line written_sequence is out (0: none yet)."""
        with self._lock:
            if self._drops_after is None or written_sequence < self._drops_after:
                return 0
            count, self._unreported_drops = self._unreported_drops, 0
            self._drops_after = None
            return count

    def _notice(self, count: int) -> str:
        record = logging.LogRecord(
            "memguard.log",
            logging.WARNING,
            __file__,
            0,
            "%d log lines were dropped: the log output was blocked",
            (count,),
            None,
        )
        return self.format(record)

    def _write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            if self._fd is not None:
                _write_fd(self._fd, data)
            else:
                self._stream.write(data.decode("utf-8"))
                self._stream.flush()
        except (OSError, ValueError):
            with self._lock:
                self.write_errors += 1
                self._count_drop_locked()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sequence, line = item
            self._write_line(line)
            dropped = self._take_drop_notice(sequence)
            if dropped:
                self._write_line(self._notice(dropped))

    def flush(self) -> None:
        """Nothing to do here: the writer thread writes as soon as it can."""

    def close(self) -> None:
        """Let the writer finish what is queued (at most close_wait_s), then stop it."""
        try:
            self._queue.put(None, timeout=self._close_wait_s)
        except queue.Full:
            pass
        else:
            self._thread.join(self._close_wait_s)
            if not self._thread.is_alive() and self._drops_after is not None:
                self._write_line(self._notice(self._take_drop_notice(self._sequence)))
        if self._fd is not None and not self._thread.is_alive():
            os.close(self._fd)
            self._fd = None
        super().close()


def configure(
    log_format: str,
    level: str,
    stream: TextIO | None = None,
    queue_lines: int = LOG_QUEUE_LINES,
) -> NonBlockingHandler:
    """Route every record through one NonBlockingHandler (replacing any before)."""
    handler = NonBlockingHandler(stream or sys.stderr, queue_lines)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
