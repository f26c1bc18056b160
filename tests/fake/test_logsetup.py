"""Log output never blocks the caller: a stuck reader costs dropped (and counted)
lines, reported where they were lost once the reader moves again; text lines
cannot be forged with control characters."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator

import pytest

from memguard.cli.logsetup import JsonFormatter, NonBlockingHandler, TextFormatter

PIPE_BYTES = 4096
QUEUE_LINES = 16
RECORDS = 2000
BOUND_S = 30.0  # a blocked emit() would hang the thread past this


@pytest.fixture
def stuck_pipe() -> Iterator[tuple[int, int]]:
    """A 4 KiB pipe that nobody reads (yet): (read end, write end)."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def logger_with(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test.{id(handler)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger


def read_all(fd: int) -> str:
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    return data.decode()


def test_a_stuck_reader_never_blocks_logging_and_drops_are_reported(
    stuck_pipe: tuple[int, int],
) -> None:
    read_fd, write_fd = stuck_pipe
    with os.fdopen(os.dup(write_fd), "w") as stream:
        # close() waits for the writer as long as the reader needs (it reads, here)
        handler = NonBlockingHandler(stream, capacity=QUEUE_LINES, close_wait_s=BOUND_S)
    os.close(write_fd)  # the handler writes to its own duplicate
    handler.setFormatter(TextFormatter())
    logger = logger_with(handler)

    def log_many() -> None:
        for index in range(RECORDS):
            logger.info("line %d %s", index, "x" * 100)

    thread = threading.Thread(target=log_many)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), "logging blocked on a stuck reader"
    assert handler.dropped > 0
    reader = threading.Thread(target=lambda: output.append(read_all(read_fd)))
    output: list[str] = []
    reader.start()  # the reader moves again
    logger.info("after the stall")
    handler.close()
    reader.join(BOUND_S)
    assert not reader.is_alive(), "the log pipe never reached end of file after close()"
    lines = output[0].splitlines()
    dropped = handler.dropped
    notices = [line for line in lines if "log lines were dropped" in line]
    assert sum(int(line.split()[2]) for line in notices) == dropped  # every loss is told
    numbered = [(at, int(line.split()[3])) for at, line in enumerate(lines) if " line " in line]
    written = [number for _, number in numbered]
    assert len(written) + dropped in (RECORDS, RECORDS + 1)  # "after the stall" may be lost
    assert written == sorted(written)
    # a notice stands where lines were lost: the numbers around it have a gap
    for notice in notices:
        at = lines.index(notice)
        before = [number for where, number in numbered if where < at]
        after = [number for where, number in numbered if where > at]
        if before and after:
            assert after[0] > before[-1] + 1
    # the line logged once the reader moved again is written, or counted as dropped
    after_the_stall = sum(line.endswith("after the stall") for line in lines)
    assert len(written) + after_the_stall + dropped == RECORDS + 1


def test_close_gives_up_on_a_writer_that_stays_stuck(stuck_pipe: tuple[int, int]) -> None:
    _, write_fd = stuck_pipe
    with os.fdopen(os.dup(write_fd), "w") as stream:
        handler = NonBlockingHandler(stream, capacity=QUEUE_LINES)
    handler.setFormatter(TextFormatter())
    logger = logger_with(handler)
    for index in range(RECORDS):
        logger.info("line %d %s", index, "x" * 100)
    closer = threading.Thread(target=handler.close)
    closer.start()
    closer.join(BOUND_S)
    assert not closer.is_alive(), "close() hung on a stuck writer"


def test_a_write_error_is_counted_not_raised() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # EPIPE on every write
    with os.fdopen(write_fd, "w") as stream:
        handler = NonBlockingHandler(stream)
        handler.setFormatter(TextFormatter())
        logger_with(handler).warning("nobody reads this")
        handler.close()
    assert handler.write_errors >= 1
    assert handler.dropped >= 1


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("memguard", logging.INFO, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    "name", ["a\nb", "a\r\n2026-11-30T00:00:00Z ERROR forged", "x\x1b[31m", "\u2028"]
)
def test_control_characters_cannot_forge_a_text_line(name: str) -> None:
    line = TextFormatter().format(record("guarding %s: limit 1", name))
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "\u2028" not in line
    assert line.endswith(": limit 1")


def test_json_lines_stay_one_line_with_the_name_intact() -> None:
    line = JsonFormatter().format(record("guarding %s", "a\nb"))
    assert "\n" not in line
    assert json.loads(line)["msg"] == "guarding a\nb"
