"""--hold-at-limit's ledger: which cgroups' oom_kill_disable memguard set.

A record is a file in the ledger directory (default /run/memguard/held, a
hostPath in the DaemonSet: it outlives the agent's container, and like the
cgroups it describes it is gone after a reboot). Its name is a hash of the
cgroup path, its content the path. It is written before memguard sets
oom_kill_disable and removed after memguard puts 0 back, so after a crash the
next run knows which holds are its own (and not an operator's) and can take
them over or release them:
- a recorded cgroup that is gone: the record is dropped;
- holds off now, or the cgroup is not at its limit (under_oom 0): released
  (oom_kill_disable 0) at once; a guard that holds takes it again when it arms;
- holds on and the cgroup parked at its limit (under_oom 1): kept for its
  guard, which finds its OOM eventfd signalled at registration and acts.

One agent at a time: the ledger is claimed with a lock file in it (LOCK_FILE,
flock held while the agent runs, its pid written in it), so a second agent
never settles (releases) the holds of a live one. A holding agent that finds
the ledger locked is a ConfigError (exit 2); one that is not holding (it came
to release leftovers) leaves the ledger to its owner, said in one log line,
and lets go of the lock once it has settled the records.

The directory's contents are not trusted: the ledger must itself be a
directory (a symbolic link to one is refused: the records would be wherever it
points), owned by memguard's user and writable by nobody else. It is opened
once and every entry is reached through that descriptor, never followed if it
is a link. A `*.held` entry that is not a record memguard wrote (not a regular
file, too large, unreadable, a name that is not its content's hash, a cgroup
outside the memory hierarchy) is left where it is, with one warning: never
deleted, never followed, never opened if it is not a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass

from memguard.errors import ConfigError, KernelError
from memguard.kernel import cgroup_v1

log = logging.getLogger(__name__)

DEFAULT_LEDGER_DIR = "/run/memguard/held"
MAX_RECORD_BYTES = 4096
LOCK_FILE = ".lock"  # in the ledger: flock held by the agent that owns it
PROBE_FILE = ".writable"
RECORD_NAME = re.compile(r"[0-9a-f]{32}\.held")
MAX_FOREIGN_WARNINGS = 16  # entries left alone, one warning each; beyond, one sum
_NOT_FOLLOWED = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


@dataclass(frozen=True)
class HoldSettings:
    at_limit: bool = False  # --hold-at-limit (cgroup v1)
    ledger_dir: str = DEFAULT_LEDGER_DIR  # --hold-ledger


class _Unusable(Exception):
    """The ledger cannot be used (the message says why)."""


class _Locked(Exception):
    """Another agent holds the ledger's lock (the message names it if known)."""


class _Foreign(Exception):
    """A `*.held` entry that is not a record memguard wrote (the message says why)."""


def record_name(cgroup_dir: str) -> str:
    return hashlib.sha256(os.fsencode(cgroup_dir)).hexdigest()[:32] + ".held"


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class HoldLedger:
    def __init__(self, directory: str, memory_root: str) -> None:
        self.directory = directory
        self._memory_root = os.path.normpath(memory_root)
        self._inherited: set[str] = set()  # held by a previous run, parked at the limit
        self._dir_fd: int | None = None  # the ledger, opened once (entries are relative)
        self._lock_fd: int | None = None  # LOCK_FILE, flock'ed while this agent owns it
        self._foreign = 0  # entries left alone at open (warned about)

    @property
    def locked(self) -> bool:
        """This agent owns the ledger (holding: from open() until close())."""
        return self._lock_fd is not None

    def open(self, holding: bool) -> None:
        """Claim the ledger and settle the previous run's records (see the module
        docstring). Holding, the directory is created first, and it must be usable
        and free: else ConfigError (exit 2). Not holding, a ledger that is not
        there has nothing to settle, one that cannot be used or is another agent's
        is left alone (logged), and the lock is let go once the records are settled."""
        try:
            self._claim(holding)
        except _Unusable as problem:
            message = (
                f"--hold-ledger {self.directory}: {problem}: memguard records there which "
                "cgroups it holds at the limit, so that a restart can release them"
            )
            if holding:
                raise ConfigError(message) from None
            log.warning("%s", message)
            return
        except _Locked as owner:
            if holding:
                raise ConfigError(
                    f"--hold-ledger {self.directory} is in use by another memguard ({owner}): "
                    "stop it, or give each agent its own --hold-ledger"
                ) from None
            log.info("left --hold-ledger %s to the memguard using it (%s)", self.directory, owner)
            return
        if self._dir_fd is None:
            return  # not holding, and no ledger: nothing to settle
        try:
            self._settle_all(holding)
        except BaseException:
            self.close()
            raise
        if not holding:
            self.close()  # it came to release leftovers: the ledger is free again

    def close(self) -> None:
        """Let go of the ledger (the lock goes with the process too)."""
        for fd in (self._lock_fd, self._dir_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._dir_fd = None

    def _claim(self, holding: bool) -> None:
        """Open the ledger directory (holding: made first) and lock it; _Unusable,
        _Locked. Not holding and no directory: nothing opened."""
        if holding:
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
            except OSError as error:
                raise _Unusable(_not_a_directory(self.directory) or _why(error)) from None
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            dir_fd = os.open(self.directory, flags)
        except FileNotFoundError:
            if holding:
                raise _Unusable("it vanished while memguard made it") from None
            return
        except OSError as error:
            raise _Unusable(_not_a_directory(self.directory) or _why(error)) from None
        try:
            _check_owner(os.fstat(dir_fd))
            self._lock_fd = _lock(dir_fd)
            if holding:
                _probe_writable(dir_fd)
        except BaseException:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            os.close(dir_fd)
            raise
        self._dir_fd = dir_fd

    def _settle_all(self, holding: bool) -> None:
        assert self._dir_fd is not None
        try:
            names = sorted(os.listdir(self._dir_fd))
        except OSError as error:
            raise ConfigError(f"--hold-ledger {self.directory}: {_why(error)}") from None
        self._foreign = 0
        for name in names:
            if name.endswith(".held"):
                self._settle(name, holding)
        if self._foreign > MAX_FOREIGN_WARNINGS:
            log.warning(
                "%s: %d more entries left alone (not records memguard wrote)",
                self.directory,
                self._foreign - MAX_FOREIGN_WARNINGS,
            )

    def _settle(self, name: str, holding: bool) -> None:
        try:
            cgroup_dir = self._read_record(name)
            control = cgroup_v1.read_oom_control(cgroup_dir)
        except _Foreign as why:
            self._leave(name, str(why))
            return
        except KernelError as error:
            self._leave(name, f"its cgroup cannot be read: {error}")
            return
        except FileNotFoundError:
            return  # gone since the listing
        if control is None:
            self._unlink(name)  # the cgroup is gone: so is the hold
            return
        if holding and control.get("under_oom", 0) == 1:
            self._inherited.add(cgroup_dir)
            log.info("taking over the hold on %s (parked at its limit)", cgroup_dir)
            return
        self.release(cgroup_dir)
        log.info("released the hold a previous run left on %s", cgroup_dir)

    def _leave(self, name: str, why: str) -> None:
        self._foreign += 1
        if self._foreign <= MAX_FOREIGN_WARNINGS:
            path = os.path.join(self.directory, name)
            log.warning("left %s alone: %s (not a record memguard wrote)", path, why)

    def _read_record(self, name: str) -> str:
        """The cgroup a record names; _Foreign when name is not memguard's record."""
        assert self._dir_fd is not None
        info = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)  # gone: raises
        if not stat.S_ISREG(info.st_mode):
            raise _Foreign(_kind(info.st_mode))  # never opened: a FIFO would block
        if not RECORD_NAME.fullmatch(name):
            raise _Foreign("its name is not a record's")
        data = _read_regular(self._dir_fd, name, info.st_size)
        text = os.fsdecode(data)
        if not text.startswith("/") or "\n" in text or "\0" in text:
            raise _Foreign("it holds no cgroup path")
        if record_name(text) != name:
            raise _Foreign("its name is not its content's hash")
        normal = os.path.normpath(text)
        if normal != text or not normal.startswith(self._memory_root + "/"):
            raise _Foreign(f"it names {text}, not a cgroup under {self._memory_root}")
        return text

    def inherited(self, cgroup_dir: str) -> bool:
        """Did a previous run set this cgroup's oom_kill_disable (and leave it set)?"""
        return cgroup_dir in self._inherited

    def taken(self, cgroup_dir: str) -> bool:
        """Record cgroup_dir before its oom_kill_disable is set; False (logged) when
        the record cannot be written: then memguard must not hold it."""
        name = record_name(cgroup_dir)
        try:
            _write_record(self._dir_fd, name, os.fsencode(cgroup_dir))
        except OSError as error:
            path = os.path.join(self.directory, name)
            log.warning("not holding %s at its limit: %s: %s", cgroup_dir, path, _why(error))
            return False
        self._inherited.discard(cgroup_dir)
        return True

    def release(self, cgroup_dir: str) -> None:
        """oom_kill_disable back to 0, then the record goes (best effort: leaving)."""
        with contextlib.suppress(KernelError):
            cgroup_v1.set_oom_kill_disable(cgroup_dir, False)
        self._inherited.discard(cgroup_dir)
        self._unlink(record_name(cgroup_dir))

    def _unlink(self, name: str) -> None:
        """Remove one of memguard's records (never followed: an unlink is of the entry)."""
        if self._dir_fd is None:
            return
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("%s: %s", os.path.join(self.directory, name), _why(error))


def _why(error: OSError) -> str:
    return error.strerror or str(error)


def _not_a_directory(path: str) -> str | None:
    """Why path cannot be the ledger when it is there but no directory; else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link (the ledger must be a directory itself, not a link to one)"
    if not stat.S_ISDIR(info.st_mode):
        return f"{_kind(info.st_mode)}, not a directory"
    return None


def _check_owner(info: os.stat_result) -> None:
    """The records steer oom_kill_disable: only memguard's user may write them."""
    if info.st_uid != os.geteuid():
        raise _Unusable(f"owned by uid {info.st_uid}, not by memguard's (uid {os.geteuid()})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise _Unusable(f"writable by others (mode {mode:04o}): not memguard's own directory")


def _lock(dir_fd: int) -> int:
    """LOCK_FILE in the ledger, flock'ed (its pid written in it); _Locked, _Unusable."""
    flags = os.O_RDWR | os.O_CREAT | _NOT_FOLLOWED
    try:
        lock_fd = os.open(LOCK_FILE, flags, 0o600, dir_fd=dir_fd)
    except OSError as error:
        raise _Unusable(f"{LOCK_FILE}: {_why(error)}") from None
    try:
        info = os.fstat(lock_fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Unusable(f"{LOCK_FILE} is {_kind(info.st_mode)}, not a regular file")
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Locked(_holder(lock_fd)) from None
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as error:
        os.close(lock_fd)
        raise _Unusable(f"{LOCK_FILE}: {_why(error)}") from None
    except BaseException:
        os.close(lock_fd)
        raise
    return lock_fd


def _holder(lock_fd: int) -> str:
    """Who holds the lock on lock_fd's file: /proc/locks (pids as this process sees
    them), else the pid the holder wrote in the file."""
    info = os.fstat(lock_fd)
    key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with contextlib.suppress(OSError), open("/proc/locks") as locks:
        for line in locks:  # 1: FLOCK  ADVISORY  WRITE 24646 fe:00:2146382 0 EOF
            fields = line.split()
            mine = len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key
            if mine and fields[4].isdigit() and int(fields[4]) > 0:
                return f"pid {int(fields[4])}"
    with contextlib.suppress(OSError):
        written = os.pread(lock_fd, 32, 0).strip()
        if written.isdigit():
            return f"pid {int(written)} in its own pid namespace, as its {LOCK_FILE} says"
    return "its pid unknown"


def _probe_writable(dir_fd: int) -> None:
    """Holding, the ledger must take a new file (a hold not recorded is not taken)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOT_FOLLOWED
    try:
        os.close(os.open(PROBE_FILE, flags, 0o600, dir_fd=dir_fd))
        os.unlink(PROBE_FILE, dir_fd=dir_fd)
    except OSError as error:
        raise _Unusable(f"{PROBE_FILE}: {_why(error)}") from None


def _read_regular(dir_fd: int, name: str, size: int) -> bytes:
    """A record's bytes (lstat said: a regular file of size bytes): never followed,
    never waited for, at most MAX_RECORD_BYTES; else _Foreign."""
    if size > MAX_RECORD_BYTES:
        raise _Foreign(f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        fd = os.open(name, os.O_RDONLY | _NOT_FOLLOWED, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _Foreign(f"unreadable ({_why(error)})") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # replaced since the stat
            raise _Foreign(_kind(opened.st_mode))
        data = os.read(fd, MAX_RECORD_BYTES + 1)
    except OSError as error:
        raise _Foreign(f"unreadable ({_why(error)})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_RECORD_BYTES:
        raise _Foreign(f"larger than {MAX_RECORD_BYTES} bytes")
    return data


def _write_record(dir_fd: int | None, name: str, data: bytes) -> None:
    """Write a record: a regular file with one link (a planted link or hard link
    is not written through); OSError when it cannot be (a record cut short is
    removed: it would not be one)."""
    if dir_fd is None:
        raise OSError(errno.EBADF, "the ledger is closed")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | _NOT_FOLLOWED, 0o600, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EEXIST, f"{_kind(info.st_mode)} of that name is in the way")
        if info.st_nlink != 1:
            raise OSError(errno.EEXIST, "a file of that name with other links is in the way")
        try:
            os.ftruncate(fd, 0)
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "the record was cut short")
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
            raise
    finally:
        os.close(fd)
