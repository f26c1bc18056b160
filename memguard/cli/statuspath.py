"""Whose is a status socket path (memguard.cli.statussocket): what is there,
whether it can be the socket, and whether anyone answers on it - all looked
at, nothing created.

- A path is usable when it is absolute and fits sun_path, its directory exists
  (for `auto` it may be missing: the caller makes it), nothing but a socket is
  there and the lock's path holds nothing but a regular file.
- Another memguard holds the path's lock (flock on PATH.lock); any other
  program is asked with a connect(): a socket that accepts, whose backlog is
  full, or that is a live socket of another type (EPROTOTYPE: a datagram
  socket such as /dev/log) belongs to someone. Only ECONNREFUSED - nobody has
  it open - makes a socket stale.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat

import trio

from memguard.cli.values import SUN_PATH_MAX_BYTES
from memguard.text import escape_controls

PROBE_TIMEOUT_S = 1.0  # a connect() to a unix socket answers at once, or its owner is busy
IN_USE = "in use by another program"


class Unusable(Exception):
    """This path cannot be the status socket (the message says why)."""


Inode = tuple[int, int]  # (st_dev, st_ino)


def lstat(path: str) -> os.stat_result | None:
    """What is at path (None: nothing); Unusable when it cannot be looked at."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise Unusable(why(error)) from None


def check_path(path: str, *, explicit: bool) -> None:
    """Unusable, having created nothing, when path cannot be the status socket."""
    if not os.path.isabs(path):
        raise Unusable("not an absolute path (give auto, off or /PATH)")
    if len(os.fsencode(path)) > SUN_PATH_MAX_BYTES:
        raise Unusable(f"longer than a unix socket path may be ({SUN_PATH_MAX_BYTES} bytes)")
    directory = os.path.dirname(path)
    try:
        mode: int | None = os.stat(directory).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as error:
        raise Unusable(why(error)) from None
    if mode is None and explicit:
        raise Unusable(f"no directory {shown(directory)}")
    if mode is not None and not stat.S_ISDIR(mode):
        raise Unusable(f"{shown(directory)} is not a directory")
    there = lstat(path)
    if there is not None and not stat.S_ISSOCK(there.st_mode):
        raise Unusable("exists and is not a socket")
    lock = lstat(f"{path}.lock")
    if lock is not None and not stat.S_ISREG(lock.st_mode):
        raise Unusable(f"{shown(path)}.lock exists and is not a regular file")


def held_by_another_agent(path: str) -> bool:
    """Whether another memguard holds path's lock (looked at, not created)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # none (or not ours to open): the connect will tell
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of the shared lock
    return False


async def stale_socket(path: str) -> Inode | None:
    """The socket at path when nobody answers on it (stale: ours to replace),
    None when nothing is there; Unusable when it belongs to someone."""
    there = lstat(path)
    if there is None:
        return None
    if not stat.S_ISSOCK(there.st_mode):
        raise Unusable("exists and is not a socket")
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe, trio.move_on_after(PROBE_TIMEOUT_S):
        try:
            await probe.connect(path)
        except FileNotFoundError:
            return None  # gone meanwhile
        except ConnectionRefusedError:
            return there.st_dev, there.st_ino
        except BlockingIOError:
            raise Unusable(IN_USE) from None  # its backlog is full: someone listens
        except OSError as error:
            if error.errno == errno.EPROTOTYPE:
                raise Unusable(IN_USE) from None  # a live socket of another kind
            raise Unusable(f"cannot tell whether it is in use: {why(error)}") from None
    raise Unusable(IN_USE)  # it accepted (or is too busy to, within PROBE_TIMEOUT_S)


def same_inode(path: str, inode: Inode) -> bool:
    info = lstat(path)
    return info is not None and (info.st_dev, info.st_ino) == inode


def shown(text: str) -> str:
    return escape_controls(text)


def why(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({shown(os.fsdecode(error.filename))})" if error.filename else ""
        return f"{error.strerror.lower()}{where}"
    return str(error)
