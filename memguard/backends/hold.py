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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass

from memguard.errors import ConfigError, KernelError
from memguard.kernel import cgroup_v1

log = logging.getLogger(__name__)

DEFAULT_LEDGER_DIR = "/run/memguard/held"
MAX_RECORD_BYTES = 4096


@dataclass(frozen=True)
class HoldSettings:
    at_limit: bool = False  # --hold-at-limit (cgroup v1)
    ledger_dir: str = DEFAULT_LEDGER_DIR  # --hold-ledger


def _record_name(cgroup_dir: str) -> str:
    return hashlib.sha256(cgroup_dir.encode()).hexdigest()[:32] + ".held"


class HoldLedger:
    def __init__(self, directory: str, memory_root: str) -> None:
        self.directory = directory
        self._memory_root = os.path.normpath(memory_root)
        self._inherited: set[str] = set()  # held by a previous run, parked at the limit

    def open(self, holding: bool) -> None:
        """Settle the previous run's records (see the module docstring). Holding,
        the directory is created first: ConfigError when memguard cannot write
        there. Not holding, a directory that is not there has nothing to settle."""
        if not holding and not os.path.isdir(self.directory):
            return
        try:
            if holding:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                probe = os.path.join(self.directory, ".writable")
                with open(probe, "w"):
                    pass
                os.unlink(probe)
            records = sorted(os.listdir(self.directory))
        except OSError as error:
            message = (
                f"--hold-ledger {self.directory}: {error.strerror}: memguard records there "
                "which cgroups it holds at the limit, so that a restart can release them"
            )
            if holding:
                raise ConfigError(message) from error
            log.warning("%s", message)
            return
        for name in records:
            if name.endswith(".held"):
                self._settle(os.path.join(self.directory, name), holding)

    def _settle(self, record: str, holding: bool) -> None:
        cgroup_dir = _read_record(record)
        if cgroup_dir is not None and not self._under_root(cgroup_dir):
            log.warning(
                "ignored %s: it names %s, not a cgroup under %s",
                record,
                cgroup_dir,
                self._memory_root,
            )
            cgroup_dir = None
        control = None if cgroup_dir is None else cgroup_v1.read_oom_control(cgroup_dir)
        if cgroup_dir is None or control is None:
            _unlink(record)
            return
        if holding and control.get("under_oom", 0) == 1:
            self._inherited.add(cgroup_dir)
            log.info("taking over the hold on %s (parked at its limit)", cgroup_dir)
            return
        self.release(cgroup_dir)
        log.info("released the hold a previous run left on %s", cgroup_dir)

    def _under_root(self, cgroup_dir: str) -> bool:
        normal = os.path.normpath(cgroup_dir)
        return normal == cgroup_dir and normal.startswith(self._memory_root + "/")

    def inherited(self, cgroup_dir: str) -> bool:
        """Did a previous run set this cgroup's oom_kill_disable (and leave it set)?"""
        return cgroup_dir in self._inherited

    def taken(self, cgroup_dir: str) -> bool:
        """Record cgroup_dir before its oom_kill_disable is set; False (logged) when
        the record cannot be written: then memguard must not hold it."""
        path = os.path.join(self.directory, _record_name(cgroup_dir))
        try:
            with open(path, "w") as file:
                file.write(cgroup_dir)
        except OSError as error:
            log.warning("not holding %s at its limit: %s: %s", cgroup_dir, path, error.strerror)
            _unlink(path)
            return False
        self._inherited.discard(cgroup_dir)
        return True

    def release(self, cgroup_dir: str) -> None:
        """oom_kill_disable back to 0, then the record goes (best effort: leaving)."""
        with contextlib.suppress(KernelError):
            cgroup_v1.set_oom_kill_disable(cgroup_dir, False)
        self._inherited.discard(cgroup_dir)
        _unlink(os.path.join(self.directory, _record_name(cgroup_dir)))


def _read_record(record: str) -> str | None:
    try:
        with open(record, "rb") as file:
            data = file.read(MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    text = data.decode("utf-8", "replace")
    if len(data) > MAX_RECORD_BYTES or not text.startswith("/") or "\n" in text:
        return None
    return text


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
