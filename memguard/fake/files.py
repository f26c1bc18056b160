"""The kernel files of a fake cgroup, v1 or v2, derived from its FakeMemory.

Written in an order that ends with the usage file (memory.usage_in_bytes or
memory.current), so a reader woken by that write sees consistent numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memguard.kernel import cgroup_v2, cgroupfs, names

if TYPE_CHECKING:
    from memguard.fake.model import FakeMemory

UNLIMITED_V1_TEXT = "9223372036854771712"
_CONTROLS = {
    1: (names.FORCE_EMPTY_FILE, names.EVENT_CONTROL_FILE),
    2: (names.RECLAIM_FILE, names.KILL_FILE, names.PRESSURE_FILE),
}


def limit_file(version: int) -> str:
    return names.LIMIT_FILE if version == 1 else names.MAX_FILE


def usage_file(version: int) -> str:
    return names.USAGE_FILE if version == 1 else names.CURRENT_FILE


def parse_limit_text(version: int, text: str, path: str) -> int | None:
    if version == 1:
        return cgroupfs.parse_limit(cgroupfs.parse_int(text, path))
    return cgroup_v2.parse_max(text, path)


def control_files(version: int) -> tuple[str, ...]:
    """Files a real cgroup has that the fake only needs to exist."""
    return _CONTROLS[version]


def _v1(memory: FakeMemory) -> dict[str, str]:
    local = {
        "cache": memory.cache_bytes, "rss": memory.anon_bytes, "shmem": memory.shmem_bytes,
        "dirty": memory.dirty_cache_bytes, "writeback": 0,
        "inactive_file": memory.clean_cache_bytes, "active_file": memory.dirty_cache_bytes,
        "inactive_anon": memory.anon_bytes + memory.shmem_bytes, "active_anon": 0,
        "swap": memory.swap_bytes,
    }  # fmt: skip
    limit = UNLIMITED_V1_TEXT if memory.limit_bytes is None else str(memory.limit_bytes)
    stat = [f"{key} {value}" for key, value in local.items()]
    stat.append(f"hierarchical_memory_limit {limit}")
    stat += [f"total_{key} {value}" for key, value in local.items()]
    return {
        names.LIMIT_FILE: limit + "\n",
        names.STAT_FILE: "\n".join(stat) + "\n",
        names.OOM_CONTROL_FILE: (f"oom_kill_disable 0\nunder_oom 0\noom_kill {memory.oom_kills}\n"),
        names.PROCS_FILE: "".join(f"{pid}\n" for pid in memory.pids),
        names.USAGE_FILE: f"{memory.usage_bytes}\n",
    }


def _v2(memory: FakeMemory) -> dict[str, str]:
    stat = {
        "anon": memory.anon_bytes, "file": memory.cache_bytes, "shmem": memory.shmem_bytes,
        "file_dirty": memory.dirty_cache_bytes, "file_writeback": 0,
        "inactive_file": memory.clean_cache_bytes, "active_file": memory.dirty_cache_bytes,
        "inactive_anon": memory.anon_bytes + memory.shmem_bytes, "active_anon": 0,
    }  # fmt: skip
    events = {
        "low": 0,
        "high": 0,
        "max": memory.limit_hits,
        "oom": memory.oom_kills,
        "oom_kill": memory.oom_kills,
        "oom_group_kill": 0,
    }
    limit = "max" if memory.limit_bytes is None else str(memory.limit_bytes)
    populated = 1 if memory.pids else 0
    return {
        names.MAX_FILE: limit + "\n",
        names.HIGH_FILE: "max\n",
        names.STAT_FILE: "".join(f"{key} {value}\n" for key, value in stat.items()),
        names.EVENTS_FILE: "".join(f"{key} {value}\n" for key, value in events.items()),
        names.CGROUP_EVENTS_FILE: f"populated {populated}\nfrozen 0\n",
        names.SWAP_CURRENT_FILE: f"{memory.swap_bytes}\n",
        names.PROCS_FILE: "".join(f"{pid}\n" for pid in memory.pids),
        names.CURRENT_FILE: f"{memory.usage_bytes}\n",
    }


def kernel_files(memory: FakeMemory) -> dict[str, str]:
    """name -> content, the usage file last."""
    return _v1(memory) if memory.version == 1 else _v2(memory)
