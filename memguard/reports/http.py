"""A small HTTP endpoint on trio: /healthz, /readyz, /metrics, /status (h11 parses HTTP).

The same server answers on TCP (--listen) and on a unix socket (the status
socket): the listeners are the caller's, and so is binding them again.

It runs on the same trio loop as the guards, so a loop that is stuck cannot
answer /healthz: the kubelet's liveness probe then restarts the agent.

Every connection is its own error boundary: a reset, garbage bytes, a client
that never finishes its request (slowloris) or one that reads slowly end that
connection only, and are counted by outcome. Each connection has one deadline
for reading the request and writing the answer. At most `max_connections` are
open at once; a new connection beyond that closes the oldest one that has not
sent a whole request yet, so idle or hostile clients cannot lock out the
kubelet's probe. Running out of file descriptors in accept() waits for one to
come back (every ACCEPT_RETRY_S) instead of failing.
"""

from __future__ import annotations

import errno
import inspect
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import h11
import trio

log = logging.getLogger(__name__)

REQUEST_MAX_BYTES = 8192
RECEIVE_BYTES = 4096
CONNECTION_DEADLINE_S = 5.0
DEFAULT_MAX_CONNECTIONS = 1024
ACCEPT_RETRY_S = 0.05
_ACCEPT_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
OUTCOMES = ("answered", "bad_request", "reset", "timeout", "evicted", "error")

Answer = tuple[int, str, bytes]  # status, content type, body
Handler = Callable[[], Answer]
AsyncHandler = Callable[[], Awaitable[Answer]]  # a route that waits (/metrics reads in a thread)


@dataclass(eq=False)
class _Connection:
    scope: trio.CancelScope
    request_seen: bool = False
    evicted: bool = False


@dataclass
class HttpCounters:
    """Connections by how they ended (memguard_http_connections_total)."""

    outcomes: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(OUTCOMES, 0)))
    accept_errors: int = 0


class HealthServer:
    def __init__(
        self,
        listeners: list[trio.SocketListener],
        routes: Mapping[str, Handler | AsyncHandler],
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        counters: HttpCounters | None = None,
        rebind: Callable[[], Awaitable[list[trio.SocketListener]]] | None = None,
    ) -> None:
        """listeners: bound by the caller (so a bad address fails before anything
        starts); they are closed when run() ends, and bound again if run() is
        started again (a restart after a failure): by rebind() when given (a unix
        socket), else to the same TCP address."""
        self._listeners = listeners
        name = listeners[0].socket.getsockname()
        self._address: tuple[str, int] = name[:2] if isinstance(name, tuple) else (name, 0)
        self._rebind = rebind or (lambda: bind(self._address[0], self._address[1]))
        self._routes = routes
        self._max_connections = max(1, max_connections)
        self.counters = counters or HttpCounters()
        self._open: dict[int, _Connection] = {}  # insertion order: oldest first
        self._next_id = 0

    @property
    def bound_port(self) -> int:
        """The TCP port (0 on a unix socket)."""
        port: int = self._address[1]
        return port

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._listeners:
            self._listeners = await self._rebind()
        try:
            async with trio.open_nursery() as nursery:
                for listener in self._listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            listeners, self._listeners = self._listeners, []
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                if error.errno not in _ACCEPT_OUT_OF_RESOURCES:
                    raise
                # Out of fds (the kernel says so before looking for a pending
                # connection): wait for one to come back. Closing our own idle
                # connections would not help - with at most max_connections of
                # them, it is others that hold the fds.
                self.counters.accept_errors += 1
                await trio.sleep(ACCEPT_RETRY_S)
                continue
            if len(self._open) >= self._max_connections:
                self._evict_oldest_idle()
            self._next_id += 1
            connection = _Connection(trio.CancelScope())
            self._open[self._next_id] = connection
            nursery.start_soon(self._serve, stream, self._next_id, connection)

    def _evict_oldest_idle(self) -> None:
        for connection in self._open.values():
            if not connection.request_seen and not connection.evicted:
                connection.evicted = True
                connection.scope.cancel()
                return

    async def _serve(self, stream: trio.SocketStream, key: int, connection: _Connection) -> None:
        outcome = "error"
        try:
            with connection.scope:
                connection.scope.deadline = trio.current_time() + CONNECTION_DEADLINE_S
                outcome = await self._exchange(stream, connection)
            if connection.scope.cancelled_caught:
                outcome = "evicted" if connection.evicted else "timeout"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            outcome = "reset"
        except Exception:  # a bug in a route: this connection only
            log.exception("HTTP connection failed")
        finally:
            del self._open[key]
            self.counters.outcomes[outcome] += 1
            await trio.aclose_forcefully(stream)

    async def _exchange(self, stream: trio.SocketStream, connection: _Connection) -> str:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=REQUEST_MAX_BYTES)
        try:
            request = await _read_request(stream, http)
        except h11.RemoteProtocolError as error:
            connection.request_seen = True
            status = error.error_status_hint
            if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _respond(stream, http, status, "text/plain", b"bad request\n", "GET")
            return "bad_request"
        if request is None:
            return "reset"  # closed before sending a request
        connection.request_seen = True
        status, content_type, body = await self._answer(request)
        await _respond(stream, http, status, content_type, body, request.method.decode())
        return "answered"

    async def _answer(self, request: h11.Request) -> Answer:
        if request.method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET\n"
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        handler = self._routes.get(path)
        if handler is None:
            return 404, "text/plain", b"not found\n"
        answer = handler()
        return await answer if inspect.isawaitable(answer) else answer


async def _read_request(stream: trio.SocketStream, http: h11.Connection) -> h11.Request | None:
    """The request head, or None when the client closed first."""
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await stream.receive_some(RECEIVE_BYTES))
        elif isinstance(event, h11.Request):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _respond(
    stream: trio.SocketStream,
    http: h11.Connection,
    status: int,
    content_type: str,
    body: bytes,
    method: str,
) -> None:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    data = http.send(h11.Response(status_code=status, headers=headers)) or b""
    if method != "HEAD":
        data += http.send(h11.Data(data=body)) or b""
    data += http.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def bind(host: str, port: int) -> list[trio.SocketListener]:
    """Listen on host:port; OSError (socket.gaierror included) when it cannot.

    A host the resolver cannot even encode ('.', 'a..b', a label of 64
    characters) raises UnicodeError inside getaddrinfo(), not socket.gaierror:
    it becomes one (EAI_NONAME), as for any name that cannot be resolved, so the
    caller's one-line error covers it (memguard.cli.values.host_problem refuses
    such a --listen before; this holds for any caller)."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except UnicodeError:
        raise socket.gaierror(socket.EAI_NONAME, "not a valid host name") from None
