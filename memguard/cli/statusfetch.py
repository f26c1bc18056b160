"""One GET of an agent's /status for `memguard status`, every step of it within
one deadline: resolving the host, connecting, sending, the status line, the
headers and the body. http.client parses; the socket under it gives each
blocking call only the time left (a server that trickles its headers or a
body of 100 MB a byte at a time is cut off at the deadline, not kept waiting
on). At most MAX_PAGE_BYTES are read. Standard library only.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from memguard.cli import statusanswer

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

MAX_PAGE_BYTES = 64 << 20  # far above MAX_CONTAINERS rows: a bound, not a limit
NOT_STATUS = "the answer is not memguard's status"


class _Refused(http.client.HTTPException):
    """An HTTP answer that is not a page: another status than 200, too large."""


class _DeadlineSocket(socket.socket):
    """A socket whose every blocking call ends by one deadline (time.monotonic()
    seconds): each gets the time left as its timeout, and none starts after it.
    http.client reads through it (SocketIO calls recv_into), so a server that
    trickles its headers or its body cannot hold the fetch past the deadline."""

    deadline_s = 0.0

    def _time_left(self) -> None:
        left_s = self.deadline_s - time.monotonic()
        if left_s <= 0:
            raise TimeoutError("the deadline passed")
        self.settimeout(left_s)

    def connect(self, address: Any) -> None:
        self._time_left()
        super().connect(address)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._time_left()
        super().sendall(data, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self._time_left()
        return super().recv_into(buffer, nbytes, flags)


def _opened(family: int, address: Any, deadline_s: float) -> socket.socket:
    sock = _DeadlineSocket(family, socket.SOCK_STREAM)
    sock.deadline_s = deadline_s
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _addresses(host: str, port: int, deadline_s: float) -> list[tuple[int, Any]]:
    """(family, address) of host, resolved by the deadline: an IP address at once,
    a name on a thread (getaddrinfo takes no timeout) waited for until then."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        answer: list[Any] = []

        def resolve() -> None:
            try:
                answer.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as error:
                answer.append(error)

        thread = threading.Thread(target=resolve, name="memguard-resolve", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline_s - time.monotonic()))
        if thread.is_alive():
            raise TimeoutError(f"resolving {host}") from None
        if answer and isinstance(answer[0], OSError):
            raise answer[0] from None
        found = answer
    return [(family, address) for family, _, _, _, address in found]


class _Connection(http.client.HTTPConnection):
    """One GET, every step of it (resolve, connect, send, headers, body) within
    one deadline: over a unix socket (path) or TCP (host, port)."""

    def __init__(self, path: str | None, host: str, port: int, deadline_s: float) -> None:
        super().__init__(host, port)
        self._path, self._deadline_s = path, deadline_s

    def connect(self) -> None:
        if self._path is not None:
            self.sock = _opened(socket.AF_UNIX, self._path, self._deadline_s)
            return
        problem: OSError = OSError(f"no address for {self.host}")
        for family, address in _addresses(self.host, self.port, self._deadline_s):
            try:
                self.sock = _opened(family, address, self._deadline_s)
                return
            except TimeoutError:
                raise
            except OSError as error:
                problem = error
        raise problem


def get(unix_path: str | None, host: str, port: int, path: str, deadline_s: float) -> bytes:
    """The body of a 200 answer to GET path, over the unix socket unix_path or
    TCP to (host, port), by deadline_s (time.monotonic()); OSError (TimeoutError
    at the deadline) or http.client.HTTPException otherwise."""
    connection = _Connection(unix_path, host, port, deadline_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise _Refused(f"HTTP {response.status} for {path}")
        if response.length is not None and response.length > MAX_PAGE_BYTES:
            raise _Refused(f"an answer larger than {MAX_PAGE_BYTES} bytes")
        # Its Content-Length, all of it (IncompleteRead when it ends early), else
        # (chunked, or up to the close) at most one byte more than a page may be.
        body = response.read() if response.length is not None else response.read(MAX_PAGE_BYTES + 1)
    finally:
        connection.close()
    if len(body) > MAX_PAGE_BYTES:
        raise _Refused(f"an answer larger than {MAX_PAGE_BYTES} bytes")
    return body


def reason(error: BaseException) -> str:
    """Why a fetch failed, in words (escaped by the caller)."""
    if isinstance(error, statusanswer.NotStatus):
        return f"{NOT_STATUS} ({error})"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the connection closed without an answer"
    if isinstance(error, http.client.BadStatusLine):  # its line: the bytes, read as latin-1
        line = str(error.args[0] if error.args else "").rstrip("\r\n")[:60]
        shown = line.encode("iso-8859-1", "replace").decode("utf-8", "backslashreplace")
        return f"{NOT_STATUS} (not HTTP: {shown})"
    if isinstance(error, _Refused):
        return str(error)
    if isinstance(error, http.client.IncompleteRead):
        return f"the answer ended early ({len(error.partial)} bytes of it came)"
    if isinstance(error, http.client.HTTPException):
        return f"{NOT_STATUS} ({error or type(error).__name__})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
