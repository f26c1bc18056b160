"""The status socket: /status (and /healthz) on a unix socket, so `memguard status`
works on a node without --listen. The HTTP server is the --listen one
(memguard.reports.http), on a unix listener.

--status-socket auto|off|PATH (default auto):
  auto  the first of CANDIDATES this agent can claim: /run/memguard/status.sock
        (the DaemonSet mounts /run/memguard from the node, so the node sees the
        socket at the same path), then $XDG_RUNTIME_DIR/memguard/status.sock
        (a user's own agent on a fake tree); a candidate that cannot be had is
        skipped (named in the one log line that says where the socket is, or
        that there is none).
  PATH  that absolute path; one that cannot be used is exit 2, one line.
  off   no socket.

Rules (what is at a path and whose it is: memguard.cli.statuspath):
- Nothing is created before the path is known to be usable: /dev/null, a
  directory, a missing directory are refused with nothing made. Only `auto`
  makes a directory, the last component (/run/memguard,
  $XDG_RUNTIME_DIR/memguard).
- A socket is never taken from whoever serves it: another memguard ("another
  memguard serves PATH": its lock, PATH.lock, is held while it runs) or any
  other program ("in use by another program": it accepts a connect()). Only a
  socket that refuses the connection is stale - what a killed agent leaves -
  and replaced: asked again under the lock, and only that inode is unlinked.
- A refusal leaves nothing behind: a lock file this agent made is removed
  (while still locked, and only if it is still that file), and so is the
  directory `auto` made for a candidate it then skipped.
The socket is mode 0600 (the agent's user: root on a node) and removed when the
agent stops. `memguard status` looks at the same candidates (memguard.cli.status).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from memguard.cli.status import socket_candidates
from memguard.cli.statuspath import (
    Inode,
    Unusable,
    check_path,
    held_by_another_agent,
    same_inode,
    shown,
    stale_socket,
    why,
)
from memguard.errors import ConfigError
from memguard.reports.http import AsyncHandler, Handler, HealthServer, HttpCounters

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # viewers at once; the agent keeps this many fds (+2) for them
RESERVED_FDS = MAX_CONNECTIONS + 2  # connections, the listening socket, the lock
BACKLOG = 16
LOCK_TRIES = 3  # a lock file removed under us (by an agent that refused it): open it anew


@dataclass
class Claim:
    """A socket path this agent owns: its lock is held (until the process ends)."""

    path: str
    lock_fd: int
    created_lock: bool = False  # this agent made PATH.lock (removed if it lets go)
    _bound: Inode | None = field(default=None)  # our socket

    async def listen(self) -> list[trio.SocketListener]:
        """Bind the socket (replacing a stale one) and listen; Unusable or
        OSError if it cannot."""
        stale = await stale_socket(self.path)  # again, under the lock
        if stale is not None and same_inode(self.path, stale):
            os.unlink(self.path)  # we hold the lock and nobody answers: whoever bound it is gone
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

    def remove_socket(self) -> None:
        """Unlink the socket if it is still the one this agent bound."""
        bound, self._bound = self._bound, None
        with contextlib.suppress(OSError, Unusable):
            if bound is not None and same_inode(self.path, bound):
                os.unlink(self.path)

    def let_go(self) -> None:
        """Give the path up (a refusal): the socket, the lock file if this agent
        made it (while still locked, and only that inode), the lock."""
        self.remove_socket()
        with contextlib.suppress(OSError, Unusable):
            held = os.fstat(self.lock_fd)
            if self.created_lock and same_inode(f"{self.path}.lock", (held.st_dev, held.st_ino)):
                os.unlink(f"{self.path}.lock")
        os.close(self.lock_fd)


def _open_lock(lock: str) -> tuple[int, bool]:
    """(fd, created) of the lock file; made only when it is not there."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:
        return os.open(lock, flags), False


def _claim(path: str) -> Claim:
    """Lock path's lock file; Unusable or OSError when it cannot be had. A lock
    file removed after it was opened (by an agent that made it, then refused
    the path) is a lock on nothing: opened anew."""
    lock = f"{path}.lock"
    for _ in range(LOCK_TRIES):
        fd, created = _open_lock(lock)
        claim = Claim(path, fd, created)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Unusable(f"{shown(lock)} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Unusable(f"another memguard serves {shown(path)}") from None
        except BaseException:
            claim.let_go()
            raise
        held = os.fstat(fd)
        if same_inode(lock, (held.st_dev, held.st_ino)):
            return claim
        os.close(fd)
    raise Unusable(f"{shown(lock)} keeps being replaced")


async def _preflight(path: str, *, explicit: bool) -> None:
    """Every check that creates nothing (module docstring); Unusable if one fails."""
    check_path(path, explicit=explicit)
    if held_by_another_agent(path):
        raise Unusable(f"another memguard serves {shown(path)}")
    await stale_socket(path)


async def _claim_and_listen(
    path: str, *, explicit: bool
) -> tuple[Claim, list[trio.SocketListener]]:
    await _preflight(path, explicit=explicit)
    made_dir = not explicit and _make_dir(os.path.dirname(path))
    try:
        claim = _claim(path)
        try:
            return claim, await claim.listen()
        except BaseException:
            claim.let_go()
            raise
    except BaseException:
        if made_dir:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))  # only when empty: nothing else was put there
        raise


def _make_dir(directory: str) -> bool:
    """Make auto's directory (its last component only); whether it was made."""
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        return False
    return True


async def check_status_socket(setting: str) -> None:
    """ConfigError (exit 2) when an explicit --status-socket path cannot be used,
    found before anything is made or logged (the composition root asks first);
    open_status_socket checks again when it claims the path."""
    if setting in ("auto", "off"):
        return
    try:
        await _preflight(setting, explicit=True)
    except (OSError, Unusable) as error:
        raise ConfigError(f"--status-socket {shown(setting)}: {why(error)}") from None


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
    paths = [setting] if explicit else socket_candidates(environ)
    skipped = []
    for path in paths:
        try:
            claim, listeners = await _claim_and_listen(path, explicit=explicit)
        except (OSError, Unusable) as error:
            reason = why(error)
            if explicit:
                raise ConfigError(f"--status-socket {shown(path)}: {reason}") from None
            skipped.append(f"not {shown(path)}: {reason}")
            continue
        counters = HttpCounters()
        server = HealthServer(listeners, routes, MAX_CONNECTIONS, counters, rebind=claim.listen)
        log.info(
            "status on unix socket %s (memguard status)%s",
            shown(path),
            f" ({'; '.join(skipped)})" if skipped else "",
        )
        return StatusEndpoint(claim, server)
    log.info("no status socket (%s); `memguard status` can use --listen", "; ".join(skipped))
    return None
