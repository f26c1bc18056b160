"""The kernel files of a fake cgroup, v1 or v2, derived from its FakeMemory.

Written in an order that ends with the usage file (memory.usage_in_bytes or
memory.current), so a reader woken by that write sees consistent numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memguard.kernel import cgroup_v1, cgroup_v2

if TYPE_CHECKING:
    from memguard.fake.model import FakeMemory

UNLIMITED_V1_TEXT = "9223372036854771712"
_CONTROLS = {
    1: (cgroup_v1.FORCE_EMPTY_FILE, cgroup_v1.EVENT_CONTROL_FILE),
    2: (cgroup_v2.RECLAIM_FILE, cgroup_v2.KILL_FILE, cgroup_v2.PRESSURE_FILE),
}


def limit_file(version: int) -> str:
    return cgroup_v1.LIMIT_FILE if version == 1 else cgroup_v2.MAX_FILE


def usage_file(version: int) -> str:
    return cgroup_v1.USAGE_FILE if version == 1 else cgroup_v2.CURRENT_FILE


def parse_limit_text(version: int, text: str, path: str) -> int | None:
    if version == 1:
        return cgroup_v1.parse_limit(cgroup_v1.parse_int(text, path))
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
    }  # fmt: skip
    limit = UNLIMITED_V1_TEXT if memory.limit_bytes is None else str(memory.limit_bytes)
    stat = [f"{key} {value}" for key, value in local.items()]
    stat.append(f"hierarchical_memory_limit {limit}")
    stat += [f"total_{key} {value}" for key, value in local.items()]
    return {
        cgroup_v1.LIMIT_FILE: limit + "\n",
        cgroup_v1.STAT_FILE: "\n".join(stat) + "\n",
        cgroup_v1.OOM_CONTROL_FILE: (
            f"oom_kill_disable 0\nunder_oom 0\noom_kill {memory.oom_kills}\n"
        ),
        cgroup_v1.PROCS_FILE: "".join(f"{pid}\n" for pid in memory.pids),
        cgroup_v1.USAGE_FILE: f"{memory.usage_bytes}\n",
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
        cgroup_v2.MAX_FILE: limit + "\n",
        cgroup_v2.HIGH_FILE: "max\n",
        cgroup_v2.STAT_FILE: "".join(f"{key} {value}\n" for key, value in stat.items()),
        cgroup_v2.EVENTS_FILE: "".join(f"{key} {value}\n" for key, value in events.items()),
        cgroup_v2.CGROUP_EVENTS_FILE: f"populated {populated}\nfrozen 0\n",
        cgroup_v1.PROCS_FILE: "".join(f"{pid}\n" for pid in memory.pids),
        cgroup_v2.CURRENT_FILE: f"{memory.usage_bytes}\n",
    }


def kernel_files(memory: FakeMemory) -> dict[str, str]:
    """name -> content, the usage file last."""
    return _v1(memory) if memory.version == 1 else _v2(memory)
