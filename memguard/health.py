"""A tiny HTTP endpoint on trio: /healthz, /readyz and /metrics.

It runs on the same trio loop as the guards, so a loop that is stuck cannot
answer /healthz: the kubelet's liveness probe then restarts the agent.
/readyz answers 200 once discovery has run and every guard found has armed
its notification. One request per connection; requests are bounded in size
and time so a slow client cannot hold anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

REQUEST_MAX_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
Handler = Callable[[], tuple[int, str, bytes]]


class HealthServer:
    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self._host = host
        self._port = port
        self._routes = routes
        self.bound_port: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        self.bound_port = listeners[0].socket.getsockname()[1]
        log.info("health and metrics on http://%s:%d", self._host, self.bound_port)
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                request = await self._read_head(stream)
                status, content_type, body = self._answer(request)
                head = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                await stream.send_all(head.encode() + body)

    async def _read_head(self, stream: trio.SocketStream) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < REQUEST_MAX_BYTES:
            chunk = await stream.receive_some(REQUEST_MAX_BYTES)
            if not chunk:
                break
            data += chunk
        return data

    def _answer(self, request: bytes) -> tuple[int, str, bytes]:
        parts = request.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET\n"
        handler = self._routes.get(parts[1].split(b"?")[0].decode("ascii", "replace"))
        if handler is None:
            return 404, "text/plain", b"not found\n"
        return handler()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
