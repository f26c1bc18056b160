"""Why a guard woke: one enum for every backend (no trio: the CLI names these too)."""

from __future__ import annotations

import enum


class Wake(enum.StrEnum):
    """Why a guard woke (the value is what reports and --v2-signals say)."""

    KERNEL = "kernel"  # the notification fd became readable (v1 eventfd, v2 PSI)
    EVENTS = "events"  # cgroup v2 memory.events changed
    PSI = "psi"  # cgroup v2 PSI trigger fired
    POLL = "poll"  # the v2 poller found usage at or over the threshold
    FILE = "file"  # a fake tree's file was rewritten
    LIMIT = "limit"  # a new limit was written (inotify)
    POD = "pod"  # the container's pod changed (its overrides: memguard.guarding.pods)
    PRESSURE = "pressure"  # an outside trigger (the swap trigger) asks for the graceful path
    TIMEOUT = "timeout"  # nothing: the guard's own (re)check time came


# Wake-ups that are notifications of memory use (latency is measured from them).
NOTIFICATIONS = frozenset({Wake.KERNEL, Wake.EVENTS, Wake.PSI, Wake.POLL, Wake.FILE})


# cgroup v2 signals --v2-signals may choose
V2_SIGNALS = frozenset({Wake.EVENTS, Wake.PSI, Wake.POLL})
