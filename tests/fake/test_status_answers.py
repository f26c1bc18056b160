"""`memguard status` against answers that are not memguard's: servers that
trickle (the whole fetch has one deadline), bodies of the wrong shape, replies
that are not HTTP - each one line on stderr, escaped, exit 1, no traceback.
Names with escape sequences are shown escaped in the plain table and on a
terminal (a pty: --once and the live view). stdout closed or full: one line,
exit 1. The servers run in the test, on 127.0.0.1 or a unix socket in tmp_path."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import pty
import signal
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from memguard.cli.statusfetch import MAX_PAGE_BYTES
from testing.waits import within

MEMGUARD = [sys.executable, "-m", "memguard.cli"]
Handler = Callable[[trio.abc.Stream], Awaitable[None]]
DEADLINE_BOUND_S = 15.0  # the fetch's own deadline is 5 s; the old one was 20 s or never
OVER = ["tcp", "unix"]


async def read_request(stream: trio.abc.Stream) -> None:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        data += chunk


@contextlib.asynccontextmanager
async def serving(handler: Handler, over: str, tmp_path: pathlib.Path) -> AsyncIterator[list[str]]:
    """handler answers each connection (after its request); yields `memguard
    status`'s arguments to reach it."""
    if over == "tcp":
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        where = ["--url", f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"]
    else:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(tmp_path / "status.sock"))
        sock.listen(8)
        listeners = [trio.SocketListener(sock)]
        where = ["--socket", str(tmp_path / "status.sock")]

    async def answer(stream: trio.abc.Stream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await read_request(stream)
                await handler(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, answer, listeners)
        yield where
        nursery.cancel_scope.cancel()


def replying(raw: bytes) -> Handler:
    async def handler(stream: trio.abc.Stream) -> None:
        await stream.send_all(raw)

    return handler


def json_reply(body: bytes) -> Handler:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return replying(head.encode() + b"Connection: close\r\n\r\n" + body)


async def status(
    *args: str, bound_s: float = 60.0, **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    with within(f"memguard status {' '.join(args)} exiting", bound_s):
        return await trio.run_process(
            [*MEMGUARD, "status", *args], capture_stderr=True, check=False, **kwargs
        )


def one_line(result: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    """The one line on stderr: printable ASCII only (anything else escaped)."""
    error = result.stderr
    assert result.returncode == code, error
    assert b"Traceback" not in error, error
    assert error.endswith(b"\n"), error
    assert error.count(b"\n") == 1, error
    assert all(32 <= byte < 127 for byte in error[:-1]), error
    return error.decode().strip()


def agent(**overrides: Any) -> dict[str, Any]:
    return {
        "pid": 4242,
        "parent": "/tree",
        "backend": "fake-v1",
        "policy": "noop",
        "dry_run": False,
        "started_at": 1.0,
        "guarded": 1,
        "armed": 1,
        "waiting_for_fds": 0,
        "ready": True,
        "not_ready": [],
        **overrides,
    }


def row(cgroup: str, **overrides: Any) -> dict[str, Any]:
    return {
        "cgroup": cgroup,
        "namespace": None,
        "pod": None,
        "container": None,
        "pod_uid": None,
        "container_id": None,
        "qos_class": None,
        "armed": True,
        "usage_bytes": 64 << 20,
        "limit_bytes": 256 << 20,
        "threshold_bytes": 250 << 20,
        "cache_bytes": 0,
        "reclaimable_cache_bytes": 0,
        "fill_rate_bytes_s": None,
        "read_age_s": 0.5,
        "last_action": None,
        **overrides,
    }


def page(rows: list[Any], **fields: Any) -> bytes:
    whole = {"version": 1, "generated_at": 1.0, "agent": agent(), "containers": rows}
    return json.dumps({**whole, "omitted": 0, **fields}).encode()


# ---- the whole fetch has one deadline ----------------------------------------


async def trickled_body(stream: trio.abc.Stream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
    while True:
        await stream.send_all(b"x")
        await trio.sleep(0.5)  # the server's pace (what is tested), not a wait


async def trickled_headers(stream: trio.abc.Stream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\n")
    for byte in b"X-Slow: " + b"y" * 1000:
        await stream.send_all(bytes([byte]))
        await trio.sleep(0.5)


@pytest.mark.parametrize("over", OVER)
@pytest.mark.parametrize("handler", [trickled_body, trickled_headers])
async def test_a_trickling_server_is_given_up_on_at_the_deadline(
    tmp_path: pathlib.Path, over: str, handler: Handler
) -> None:
    async with serving(handler, over, tmp_path) as where:
        result = await status(*where, "--once", bound_s=DEADLINE_BOUND_S)
    assert one_line(result).endswith(": no answer in time (5s for the whole answer)")


# ---- answers that are not memguard's status ----------------------------------

NOT_STATUS = "the answer is not memguard's status"
SHAPES = [
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested deeper than 16"),
    (b'{"version":1,"containers":[1,2]}', "no agent"),
    (b'{"version":1,"agent":5,"containers":[]}', "agent is the number 5, not an object"),
    (b'{"version":1,"containers":[{}]}', "no agent"),
    (page([1, 2]), "containers[0] is the number 1, not an object"),
    (page([{}]), "no containers[0].cgroup"),
    (page([], containers=None), "no containers"),
    (page([], agent=agent(guarded=True)), "agent.guarded is a boolean"),
    (page([], agent=agent(not_ready=[1])), "agent.not_ready is a list"),
    (page([row("/a", usage_bytes="12")]), "containers[0].usage_bytes is text"),
    (page([row("/a", usage_bytes=-1)]), "containers[0].usage_bytes is the number -1"),
    (page([row("/a", fill_rate_bytes_s=float("nan"))]), "NaN in the JSON"),
    (
        page([row("/a")]).replace(b'"read_age_s": 0.5', b'"read_age_s": 1e400'),
        "containers[0].read_age_s is not a finite number",
    ),
    (page([row("/a", last_action={"kind": 5})]), "containers[0].last_action.kind is the number 5"),
    (page([row("x" * 5000)]), "containers[0].cgroup is text of 5000 characters"),
    (page([], version=2), "version 2; this memguard status reads version 1"),
    (page([], version="1"), "version is text; this memguard status reads version 1"),
    (b"<html>\x1b[31m\xff</html>", "not JSON"),
]


@pytest.mark.parametrize("over", OVER)
@pytest.mark.parametrize(("body", "why"), SHAPES, ids=[why for _, why in SHAPES])
async def test_an_answer_of_another_shape_is_one_line(
    tmp_path: pathlib.Path, over: str, body: bytes, why: str
) -> None:
    async with serving(json_reply(body), over, tmp_path) as where:
        result = await status(*where, "--once")
    assert result.stdout is None or result.stdout == b""
    line = one_line(result)
    assert f": {NOT_STATUS} ({why}" in line, line


RAW = [
    (b"\x00\xff garbage\r\n\r\n", f"{NOT_STATUS} (not HTTP: \\x00\\xff garbage)"),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "HTTP 404 for /status"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "the answer ended early (3 bytes"),
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n",
        f"an answer larger than {MAX_PAGE_BYTES} bytes",
    ),
    (b"HTTP/1.1 200 OK\r\nX-\x1b[31m: \x07\r\n" * 200 + b"\r\n", NOT_STATUS),  # > 100 headers
    (b"", "the connection closed without an answer"),
]


@pytest.mark.parametrize(("raw", "why"), RAW, ids=[why[:30] for _, why in RAW])
async def test_a_reply_that_is_not_an_answer_is_one_escaped_line(
    tmp_path: pathlib.Path, raw: bytes, why: str
) -> None:
    async with serving(replying(raw), "tcp", tmp_path) as where:
        result = await status(*where, "--json")
    line = one_line(result)
    assert f"{where[1]}: {why}" in line, line


# ---- names with escape sequences, in both views ------------------------------

HOSTILE = {
    "esc": "esc\x1b[31mINJECTED",
    "title": "osc\x1b]0;pwned\x07",
    "cr": "cr\roverwrite",
    "nl": "nl\nforged line",
    "bel": "bel\x07",
    "rlo": "rlo\u202eevil",
    "markup": "mark[/x][bold]up",
}
SHOWN = {
    "esc": "esc\\x1b[31mINJECTED",
    "title": "osc\\x1b]0;pwned\\x07",
    "cr": "cr\\x0doverwrite",
    "nl": "nl\\x0aforged line",
    "bel": "bel\\x07",
    "rlo": "rlo\\u202eevil",
    "markup": "mark[/x][bold]up",
}
FORBIDDEN = [b"\x1b[31mINJECTED", b"\x1b]0;pwned", b"\x07", "\u202e".encode(), b"\rover"]


def hostile_page() -> bytes:
    rows = [row(f"/tree\x1b[2J/kubepods/{name}") for name in HOSTILE.values()]
    rows.append(row("/tree/x", namespace="ns\x1b[2J", pod="p\rod", container="c\u202e"))
    return page(rows, agent=agent(parent="/tree\x1b[2J", not_ready=[]))


async def test_names_are_escaped_in_the_plain_table(tmp_path: pathlib.Path) -> None:
    async with serving(json_reply(hostile_page()), "unix", tmp_path) as where:
        with within("memguard status --once (piped) exiting"):
            result = await trio.run_process(
                [*MEMGUARD, "status", "--once", *where], capture_stdout=True, check=False
            )
    assert result.returncode == 0
    text = result.stdout.decode()
    assert all(ch == "\n" or ch.isprintable() for ch in text), repr(text)
    assert "\u202e" not in text
    lines = text.splitlines()
    assert len(lines) == 2 + len(HOSTILE) + 1  # the headline, the header, one line a row
    assert lines[0].startswith("memguard pid 4242 on /tree\\x1b[2J (fake-v1)")
    for shown in SHOWN.values():
        assert any(line.startswith(f"kubepods/{shown} ") for line in lines), (shown, lines)
    assert lines[-1].startswith("ns\\x1b[2J/p\\x0dod/c\\u202e ")


class Screen:
    """What a process wrote to its terminal (the pty's master side)."""

    def __init__(self, master: trio.lowlevel.FdStream) -> None:
        self._master = master
        self.seen = b""

    async def _more(self) -> bool:
        try:
            chunk = await self._master.receive_some()
        except trio.BrokenResourceError:  # EIO: every slave side is closed
            return False
        self.seen += chunk
        return bool(chunk)

    async def until(self, marker: bytes) -> None:
        with within(f"{marker!r} on the terminal"):
            while marker not in self.seen:
                assert await self._more(), f"it ended before {marker!r}: {self.seen!r}"

    async def to_the_end(self) -> None:
        with within("the terminal's last output"):
            while await self._more():
                pass


@contextlib.asynccontextmanager
async def on_a_terminal(command: list[str]) -> AsyncIterator[tuple[Screen, trio.Process]]:
    """command with a pty (200x40) as stdin, stdout and stderr; the pty stays
    open until the process is gone (it is killed, by its pid, if still there)."""
    master, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "40"}
    try:
        process = await trio.lowlevel.open_process(
            command, stdin=child, stdout=child, stderr=child, env=env
        )
    finally:
        os.close(child)
    async with trio.lowlevel.FdStream(master) as stream:
        try:
            yield Screen(stream), process
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


@pytest.mark.parametrize("live", [False, True], ids=["once", "live"])
async def test_names_are_escaped_on_a_terminal(tmp_path: pathlib.Path, live: bool) -> None:
    async with serving(json_reply(hostile_page()), "unix", tmp_path) as where:
        command = [*MEMGUARD, "status", *where, *([] if live else ["--once"])]
        async with on_a_terminal(command) as (screen, process):
            await screen.until(b"bar: the limit")  # the table's last line: every row is out
            if live:
                process.send_signal(signal.SIGINT)  # Ctrl-C leaves
            await screen.to_the_end()
            with within("memguard status leaving"):
                assert await process.wait() == 0, screen.seen
    for raw in FORBIDDEN:
        assert raw not in screen.seen, (raw, screen.seen)
    for shown in SHOWN.values():
        assert shown.encode() in screen.seen, (shown, screen.seen)
    assert b"/tree\\x1b[2J" in screen.seen
    assert b"\x1b[2J" not in screen.seen


async def test_the_live_view_outlasts_a_trickling_answer(tmp_path: pathlib.Path) -> None:
    """First a page, then an answer that never ends, then a bad shape, then a
    new page: the view says what went wrong and shows the next page."""
    answers: list[Handler] = [
        json_reply(page([row("/tree/first")])),
        trickled_body,
        json_reply(b'{"version":1,"agent":5,"containers":[]}'),
    ]

    async def handler(stream: trio.abc.Stream) -> None:
        answer = answers.pop(0) if answers else json_reply(page([row("/tree/second")]))
        await answer(stream)

    async with serving(handler, "unix", tmp_path) as where:
        command = [*MEMGUARD, "status", *where, "--interval", "100ms"]
        async with on_a_terminal(command) as (screen, process):
            await screen.until(b"first")
            await screen.until(b"no answer in time (5s for the whole answer) (retrying)")
            await screen.until(b"agent is the number 5, not an object")
            await screen.until(b"second")
            process.send_signal(signal.SIGINT)
            await screen.to_the_end()
            with within("memguard status leaving"):
                assert await process.wait() == 0, screen.seen


# ---- stdout closed or full ---------------------------------------------------


async def test_closed_stdout_is_one_line_and_exit_1(tmp_path: pathlib.Path) -> None:
    async with serving(json_reply(page([row("/tree/a")])), "unix", tmp_path) as where:
        closed = ["sh", "-c", 'exec "$@" >&-', "sh", *MEMGUARD, "status", "--once", *where]
        with within("memguard status with stdout closed exiting"):
            result = await trio.run_process(closed, capture_stderr=True, check=False)
    assert (
        one_line(result) == "memguard status: error: stdout is closed: nowhere to show the status"
    )


async def test_full_stdout_is_one_line_and_exit_1(tmp_path: pathlib.Path) -> None:
    async with serving(json_reply(page([row("/tree/a")])), "unix", tmp_path) as where:
        with open("/dev/full", "wb") as full:  # noqa: ASYNC230 - a device, never blocks
            result = await status("--json", *where, stdout=full)
    line = one_line(result)
    assert line == "memguard status: error: cannot write to stdout: no space left on device"
