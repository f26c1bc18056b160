"""Names of the cgroup control files memguard reads and writes: one definition each.

Constants only (no I/O), so the pure policy core may name files too (memory QoS
plans say which file gets which value).
"""

from __future__ import annotations

PROCS_FILE = "cgroup.procs"  # v1 and v2: one thread-group id per line

# cgroup v1 memory controller
USAGE_FILE = "memory.usage_in_bytes"
MEMSW_USAGE_FILE = "memory.memsw.usage_in_bytes"  # present with swap accounting only
LIMIT_FILE = "memory.limit_in_bytes"
STAT_FILE = "memory.stat"  # v1 and v2 (other keys)
OOM_CONTROL_FILE = "memory.oom_control"
FORCE_EMPTY_FILE = "memory.force_empty"
EVENT_CONTROL_FILE = "cgroup.event_control"

# cgroup v2
CURRENT_FILE = "memory.current"
MAX_FILE = "memory.max"
HIGH_FILE = "memory.high"
SWAP_MAX_FILE = "memory.swap.max"
SWAP_CURRENT_FILE = "memory.swap.current"  # swap bytes (absent without swap accounting)
EVENTS_FILE = "memory.events"
PRESSURE_FILE = "memory.pressure"
RECLAIM_FILE = "memory.reclaim"
KILL_FILE = "cgroup.kill"
CGROUP_EVENTS_FILE = "cgroup.events"
CONTROLLERS_FILE = "cgroup.controllers"
SUBTREE_CONTROL_FILE = "cgroup.subtree_control"
