"""The status socket: /status (and /healthz) on a unix socket, so `memguard status`
works on a node without --listen. The HTTP server is the --listen one
(memguard.reports.http), on a unix listener.

--status-socket auto|off|PATH (default auto):
  auto  the first of CANDIDATES this agent can claim: /run/memguard/status.sock
        (the DaemonSet mounts /run/memguard from the node, so the node sees the
        socket at the same path), then $XDG_RUNTIME_DIR/memguard/status.sock
        (a user's own agent on a fake tree); none: off, said once in the log.
  PATH  that path; one that cannot be used (its directory cannot be made, it is
        not a socket, another agent serves it, too long) is exit 2.
  off   no socket.
A path is claimed with a lock file beside it (PATH.lock, flock held while the
agent runs): a socket left by a killed agent is replaced, a live agent's never
is, and two agents starting at once cannot both take it. The socket is mode
0600 (the agent's user: root on a node) and removed when the agent stops.
`memguard status` looks at the same candidates (memguard.cli.status).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio

from memguard.cli.status import socket_candidates
from memguard.errors import ConfigError
from memguard.reports.http import AsyncHandler, Handler, HealthServer, HttpCounters

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # viewers at once; the agent keeps this many fds (+2) for them
RESERVED_FDS = MAX_CONNECTIONS + 2  # connections, the listening socket, the lock
BACKLOG = 16


class _Unusable(Exception):
    """This path cannot be the status socket (the message says why)."""


@dataclass
class Claim:
    """A socket path this agent owns: its lock is held (until the process ends)."""

    path: str
    lock_fd: int
    _bound: tuple[int, int] | None = field(default=None)  # (st_dev, st_ino) of our socket

    async def listen(self) -> list[trio.SocketListener]:
        """Bind the socket (replacing a stale one) and listen; OSError if it cannot."""
        self._remove_stale()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(self.path)
            # Before listen(): nobody can connect while the mode is still the umask's.
            os.chmod(self.path, 0o600)
            sock.listen(BACKLOG)
            info = os.stat(self.path)
        except BaseException:
            sock.close()
            raise
        self._bound = (info.st_dev, info.st_ino)
        return [trio.SocketListener(sock)]

    def _remove_stale(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise _Unusable(f"{self.path} exists and is not a socket")
        os.unlink(self.path)  # we hold the lock: whoever bound it is gone

    def remove_socket(self) -> None:
        """Unlink the socket if it is still the one this agent bound."""
        bound, self._bound = self._bound, None
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if bound == (info.st_dev, info.st_ino):
                os.unlink(self.path)


def _claim(path: str) -> Claim:
    """Lock path's lock file; _Unusable or OSError when it cannot be had."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    lock_fd = os.open(f"{path}.lock", flags, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise _Unusable(f"another memguard serves {path}") from None
    except BaseException:
        os.close(lock_fd)
        raise
    return Claim(path, lock_fd)


async def _claim_and_listen(path: str) -> tuple[Claim, list[trio.SocketListener]]:
    claim = _claim(path)
    try:
        return claim, await claim.listen()
    except BaseException:
        os.close(claim.lock_fd)
        raise


def _why(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error)


@dataclass
class StatusEndpoint:
    """The status socket's HTTP server; run() under the agent's supervisor."""

    claim: Claim
    server: HealthServer

    @property
    def path(self) -> str:
        return self.claim.path

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.server.run(task_status=task_status)
        finally:
            self.claim.remove_socket()


async def open_status_socket(
    setting: str, status: AsyncHandler, environ: Mapping[str, str]
) -> StatusEndpoint | None:
    """The status socket per --status-socket (module docstring), serving status
    on /status (and /healthz); None when off. ConfigError (exit 2) when an
    explicit path cannot be used."""
    routes: dict[str, Handler | AsyncHandler] = {
        "/status": status,
        "/healthz": lambda: (200, "text/plain", b"ok\n"),
    }
    if setting == "off":
        return None
    explicit = setting != "auto"
    paths: Sequence[str] = [setting] if explicit else socket_candidates(environ)
    problems = []
    for path in paths:
        try:
            claim, listeners = await _claim_and_listen(path)
        except (OSError, _Unusable) as error:
            if explicit:
                raise ConfigError(f"--status-socket {path}: {_why(error)}") from None
            problems.append(f"{path}: {_why(error)}")
            continue
        counters = HttpCounters()
        server = HealthServer(listeners, routes, MAX_CONNECTIONS, counters, rebind=claim.listen)
        log.info("status on unix socket %s (memguard status)", path)
        return StatusEndpoint(claim, server)
    log.info("no status socket (%s); `memguard status` can use --listen", "; ".join(problems))
    return None
