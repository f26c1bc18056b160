"""/proc/<pid> readers: what the process policy needs to rank and to spare.

A process can exit between any two reads: every reader returns None then.
Zombies are dead for memguard's purposes (they hold no memory and cannot be
signalled usefully): is_alive() says False for state Z and X.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from memguard.policy.model import ProcInfo

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_DEAD_STATES = frozenset("ZX")


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        # ESRCH while the task exits, EACCES on hidepid mounts: not readable now.
        return None


def proc_state(pid: int, proc_root: str = "/proc") -> str | None:
    """The one-letter state from /proc/<pid>/stat, None when gone."""
    text = _read(f"{proc_root}/{pid}/stat")
    if text is None:
        return None
    # comm is in parentheses and may contain spaces or ')': split on the last ')'.
    tail = text.rpartition(")")[2].split()
    return tail[0] if tail else None


def start_time_ticks(pid: int, proc_root: str = "/proc") -> int | None:
    """Field 22 of /proc/<pid>/stat: with the pid, a process's unique identity."""
    text = _read(f"{proc_root}/{pid}/stat")
    if text is None:
        return None
    tail = text.rpartition(")")[2].split()
    return int(tail[19]) if len(tail) > 19 and tail[19].isdigit() else None


def is_alive(pid: int, proc_root: str = "/proc") -> bool:
    state = proc_state(pid, proc_root)
    return state is not None and state not in _DEAD_STATES


def read_oom_score_adj(pid: int, proc_root: str = "/proc") -> int | None:
    """/proc/<pid>/oom_score_adj, None when gone (one small read)."""
    text = _read(f"{proc_root}/{pid}/oom_score_adj")
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def read_proc(pid: int, proc_root: str = "/proc") -> ProcInfo | None:
    """Ranking data for one live process, or None when it is gone or a zombie."""
    base = f"{proc_root}/{pid}"
    comm = _read(f"{base}/comm")
    score = _read(f"{base}/oom_score")
    adj = _read(f"{base}/oom_score_adj")
    statm = _read(f"{base}/statm")
    stat = _read(f"{base}/stat")
    if comm is None or score is None or adj is None or statm is None or stat is None:
        return None
    # comm is in parentheses and may contain spaces or ')': split on the last ')'.
    tail = stat.rpartition(")")[2].split()
    if not tail or tail[0] in _DEAD_STATES:
        return None
    ppid = int(tail[1]) if len(tail) > 1 and tail[1].isdigit() else 0
    fields = statm.split()
    rss_pages = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    try:
        return ProcInfo(pid, comm.strip(), int(score), int(adj), rss_pages * PAGE_BYTES, ppid)
    except ValueError:
        return None


def read_procs_info(pids: Iterable[int], proc_root: str = "/proc") -> list[ProcInfo]:
    infos = (read_proc(pid, proc_root) for pid in pids)
    return [info for info in infos if info is not None]
