"""/status: what the running agent's guards know now, as JSON (`memguard status`).

Served on --listen and on the status socket (memguard.cli.statussocket), both
from one StatusPage. Its cost is bounded for the agent whoever asks: a page is
built at most once per MIN_INTERVAL_S (viewers in between get the same bytes),
from what the guards already hold (memguard.guarding.view: no cgroupfs read),
with at most MAX_CONTAINERS rows, nearest the threshold first, CHUNK_ROWS at a
time with a trio checkpoint between (guards woken meanwhile run first). Names come from
the pod cache when Kubernetes is on and the pod is known (a dict lookup).

Schema (version 1; sizes in bytes, times in seconds, wall times since the epoch):
  {"version": 1, "generated_at": wall,
   "agent": {"pid", "parent", "backend", "policy", "dry_run", "started_at",
             "guarded", "armed", "waiting_for_fds", "ready", "not_ready": [..]},
   "containers": [{"cgroup", "namespace", "pod", "container", "pod_uid",
                   "container_id", "qos_class", "armed", "usage_bytes",
                   "limit_bytes", "threshold_bytes", "cache_bytes",
                   "reclaimable_cache_bytes", "fill_rate_bytes_s", "read_age_s",
                   "last_action": null | {"kind", "action", "dry_run", "at", "ago_s"}}],
   "omitted": N}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from memguard.guarding.agent import Agent
from memguard.guarding.view import ContainerView, closest_first, view_of
from memguard.policy.paths import ContainerRef
from memguard.text import printable

if TYPE_CHECKING:
    from memguard.kube.pods import PodInfo

SCHEMA_VERSION = 1
MIN_INTERVAL_S = 0.5  # at most two pages built per second, however many viewers
MAX_CONTAINERS = 5000  # rows in one page (the nearest the threshold)
CHUNK_ROWS = 64  # rows made between two checkpoints of the trio thread
_ROWS = "@rows@"  # where the encoded rows go in the page's skeleton

# (namespace, pod, container) of a container, or None while the pod cache does not know it.
Namer = Callable[[ContainerRef], tuple[str, str, str | None] | None]


def no_names(ref: ContainerRef) -> None:
    return None


def pod_namer(lookup: Callable[[str | None], PodInfo | None]) -> Namer:
    """Names from the pod cache (PodCache.lookup: a dict lookup, safe on the trio
    thread while the cache's own thread replaces entries)."""

    def names(ref: ContainerRef) -> tuple[str, str, str | None] | None:
        pod = lookup(ref.pod_uid)
        if pod is None:
            return None
        container = pod.container(ref.container_id)
        return pod.namespace, pod.name, None if container is None else container.name

    return names


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def row(
    view: ContainerView, names: tuple[str, str, str | None] | None, now_wall_s: float
) -> dict[str, Any]:
    ref, last = view.ref, view.last_action
    return {
        "cgroup": printable(view.cgroup),  # a name need not be UTF-8 (memguard.text)
        "namespace": names[0] if names else None,
        "pod": names[1] if names else None,
        "container": names[2] if names else None,
        "pod_uid": ref.pod_uid,
        "container_id": ref.container_id,
        "qos_class": ref.qos_class,
        "armed": view.armed,
        "usage_bytes": view.usage_bytes,
        "limit_bytes": view.limit_bytes,
        "threshold_bytes": view.threshold_bytes,
        "cache_bytes": view.cache_bytes,
        "reclaimable_cache_bytes": view.reclaimable_cache_bytes,
        "fill_rate_bytes_s": _round(view.fill_rate_bytes_s, 1),
        "read_age_s": _round(view.read_age_s),
        "last_action": None
        if last is None
        else {
            "kind": last.kind.value,
            "action": last.action,
            "dry_run": last.dry_run,
            "at": _round(last.wall_time_s),
            "ago_s": _round(max(0.0, now_wall_s - last.wall_time_s)),
        },
    }


class StatusPage:
    def __init__(self, agent: Agent, names: Namer = no_names) -> None:
        self._agent = agent
        self._names = names
        self._started_at = time.time()
        self._built_at_s = -float("inf")
        self._body = b""
        self._building: trio.Event | None = None
        self.builds = 0  # pages built (the rest were served from the last one)

    async def answer(self) -> tuple[int, str, bytes]:
        """The HTTP route: (200, JSON, body); one build at a time, at most every
        MIN_INTERVAL_S (a request meanwhile gets the page being built or the last)."""
        if self._building is not None:
            await self._building.wait()
        elif trio.current_time() - self._built_at_s >= MIN_INTERVAL_S:
            self._building = building = trio.Event()
            try:
                self._body = await self.build()
                self._built_at_s = trio.current_time()
                self.builds += 1
            finally:
                self._building = None
                building.set()
        return 200, "application/json", self._body

    async def build(self) -> bytes:
        """The page, CHUNK_ROWS rows at a time: the trio thread runs the guards
        between chunks (1,000 rows in one go held it for 8.5 ms here)."""
        agent, now_s, now_wall_s = self._agent, trio.current_time(), time.time()
        guards = list(agent.supervisor.guards.values())
        views: list[ContainerView] = []
        for start in range(0, len(guards), CHUNK_ROWS):
            views.extend(view_of(guard, now_s) for guard in guards[start : start + CHUNK_ROWS])
            await trio.lowlevel.checkpoint()
        views = closest_first(views)
        shown = views[:MAX_CONTAINERS]
        encoded: list[str] = []
        for start in range(0, len(shown), CHUNK_ROWS):
            rows = [
                row(v, self._names(v.ref), now_wall_s) for v in shown[start : start + CHUNK_ROWS]
            ]
            encoded.extend(json.dumps(r, separators=(",", ":")) for r in rows)
            await trio.lowlevel.checkpoint()
        page = {**self._head(now_wall_s), "containers": _ROWS, "omitted": len(views) - len(shown)}
        skeleton = json.dumps(page, separators=(",", ":"))
        # Only structure has bare quotes (inside JSON strings they are escaped).
        text = skeleton.replace(
            f'"containers":"{_ROWS}"', '"containers":[' + ",".join(encoded) + "]"
        )
        return text.encode() + b"\n"

    def _head(self, now_wall_s: float) -> dict[str, Any]:
        agent = self._agent
        status = agent.current_status()
        settings = agent.config.settings
        return {
            "version": SCHEMA_VERSION,
            "generated_at": _round(now_wall_s),
            "agent": {
                "pid": os.getpid(),
                "parent": printable(agent.config.parent),
                "backend": agent.backend.name,
                "policy": settings.policy.value,
                "dry_run": settings.dry_run,
                "started_at": _round(self._started_at),
                "guarded": status.guarded,
                "armed": status.armed,
                "waiting_for_fds": status.waiting_for_fds,
                "ready": not status.not_ready_reasons(),
                "not_ready": status.not_ready_reasons(),
            },
        }
