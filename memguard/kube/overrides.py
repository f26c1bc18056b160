"""Containers' overrides from the pod cache (memguard.guarding.pods.OverridesSource).

overrides(ref) reads the cached pod (by uid; the container's name by its id)
and hands it to the pure memguard.policy.annotations: a dict lookup and a few
string parses, never a wait, from any thread. A pod the cache does not know
gets NO_OVERRIDES - except memguard's own, which is protected even then.

Changes: the cache calls _pod_changed on its asyncio loop for every pod it
stores or drops. Listeners (the guards: re-arm) are called only when what
overrides read changed - namespace, priority, memguard.io annotations,
termination grace period, terminating, container names - not on every status
update. On the same path each problem of a pod's annotations (a bad value, an
unknown memguard.io key) is reported once per pod and problem: a
BAD_ANNOTATION report handed to trio (run_sync_soon; the report bus is trio's),
which the sinks turn into a log warning and a Warning Event on the pod. A pod
that goes is forgotten (its problems too). Memory is bounded by the cache's
MAX_PODS.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from memguard.guarding.pods import PodListener
from memguard.kube.podcache import PodCache
from memguard.kube.pods import MAX_UID_CHARS, PodInfo
from memguard.kube.sink import SUBJECT_EXTRA
from memguard.policy.annotations import (
    OWN_POD,
    PodFacts,
    Problem,
    Protection,
    container_overrides,
    setting_of,
)
from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides
from memguard.policy.paths import ContainerRef, parse_container_path
from memguard.reports.report import Report, ReportKind

log = logging.getLogger(__name__)

PROC_SELF_CGROUP = "/proc/self/cgroup"
MAX_CGROUP_FILE_BYTES = 64 * 1024
OWN_POD_ONLY = ContainerOverrides(protected=OWN_POD)
MAX_SUBJECT_CHARS = 1024


def own_pod_uid(environ: Mapping[str, str], cgroup_file: str = PROC_SELF_CGROUP) -> str | None:
    """memguard's own pod: $POD_UID (the downward API's metadata.uid, as the
    DaemonSet sets it), else the pod uid in this process's cgroup path (none in a
    private cgroup namespace, where the path reads '/')."""
    uid = environ.get("POD_UID", "").strip()
    if uid:
        return uid[:MAX_UID_CHARS]
    try:
        with open(cgroup_file, "rb") as file:
            text = file.read(MAX_CGROUP_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        ref = parse_container_path(line.split(":", 2)[-1])
        if ref is not None and ref.pod_uid:
            return ref.pod_uid
    return None


def _relevant(pod: PodInfo) -> tuple[Any, ...]:
    """What overrides read of a pod: a change elsewhere does not concern the guards."""
    ours = sorted((k, v) for k, v in pod.annotations.items() if setting_of(k) is not None)
    names = sorted((cid, info.name) for cid, info in pod.containers_by_id.items())
    return (
        pod.namespace,
        pod.priority,
        tuple(ours),
        pod.termination_grace_period_s,
        pod.terminating,
        tuple(names),
    )


class PodOverrides:
    """OverridesSource over the pod cache; warns of bad annotations once per pod."""

    def __init__(
        self,
        cache: PodCache,
        protection: Protection,
        publish: Callable[[Report], None],
        own_pod_uid: str | None = None,
    ) -> None:
        self._cache = cache
        self._protection = protection
        self._publish = publish
        self._own_uid = own_pod_uid
        self._token = trio.lowlevel.current_trio_token()  # built on trio (the composition)
        self._listeners: list[PodListener] = []
        self._seen: dict[str, tuple[Any, ...]] = {}  # uid -> _relevant (the loop's)
        self._said: dict[str, set[Problem]] = {}  # uid -> problems reported (the loop's)
        self.problems_reported = 0
        cache.subscribe(self._pod_changed)

    def close(self) -> None:
        self._cache.unsubscribe(self._pod_changed)

    # --- OverridesSource (any thread) -------------------------------------------------------

    def overrides(self, ref: ContainerRef) -> ContainerOverrides:
        own = ref.pod_uid is not None and ref.pod_uid == self._own_uid
        pod = self._cache.lookup(ref.pod_uid)
        if pod is None:
            return OWN_POD_ONLY if own else NO_OVERRIDES
        container = pod.container(ref.container_id)
        facts = self._facts(pod, container.name if container else None)
        found, _ = container_overrides(facts, self._protection)
        return found

    def subscribe(self, listener: PodListener) -> None:
        self._listeners = [*self._listeners, listener]  # copy-on-write: read on the loop

    def unsubscribe(self, listener: PodListener) -> None:
        self._listeners = [known for known in self._listeners if known is not listener]

    def _facts(self, pod: PodInfo, container: str | None) -> PodFacts:
        return PodFacts(
            namespace=pod.namespace,
            priority=pod.priority,
            annotations=pod.annotations,
            container=container,
            termination_grace_period_s=pod.termination_grace_period_s,
            terminating=pod.terminating,
            own_pod=pod.uid == self._own_uid,
        )

    # --- pod changes (on the cache's loop) -----------------------------------------------------

    def _pod_changed(self, pod_uid: str | None) -> None:
        uids = [pod_uid] if pod_uid is not None else [*self._seen, *self._cache.uids()]
        changed = [uid for uid in dict.fromkeys(uids) if self._look_again(uid)]
        for uid in changed:
            for listener in self._listeners:
                try:
                    listener(uid)
                except Exception:
                    log.exception("a pod overrides listener failed")

    def _look_again(self, uid: str) -> bool:
        """Did what overrides read of pod uid change? (Reports its new problems.)"""
        pod = self._cache.lookup(uid)
        if pod is None:
            self._said.pop(uid, None)
            return self._seen.pop(uid, None) is not None
        relevant = _relevant(pod)
        if self._seen.get(uid) == relevant:
            return False
        self._seen[uid] = relevant
        self._report_problems(pod)
        return True

    def _report_problems(self, pod: PodInfo) -> None:
        said = self._said.setdefault(pod.uid, set())
        containers: list[tuple[str | None, str | None]] = [(None, None)]
        containers += [(cid, info.name) for cid, info in pod.containers_by_id.items()]
        for container_id, name in containers:
            _, problems = container_overrides(self._facts(pod, name), self._protection)
            for problem in problems:
                if problem in said:
                    continue
                said.add(problem)
                scoped = setting_of(problem.key)
                on_container = scoped is not None and scoped[1] is not None
                self._hand_over(self._report(pod, container_id if on_container else None, problem))

    def _report(self, pod: PodInfo, container_id: str | None, problem: Problem) -> Report:
        return Report(
            kind=ReportKind.BAD_ANNOTATION,
            cgroup="",
            ref=ContainerRef(pod.uid, container_id, pod.qos_class, None, "pod"),
            usage_bytes=0,
            limit_bytes=None,
            threshold_bytes=None,
            policy="annotations",
            action=f"pod {pod.namespace}/{pod.name}: memguard.io annotation not used",
            reason=problem.describe(),
            wall_time_s=time.time(),
            extra={SUBJECT_EXTRA: f"{problem.key}={problem.value}"[:MAX_SUBJECT_CHARS]},
        )

    def _hand_over(self, report: Report) -> None:
        self.problems_reported += 1
        with contextlib.suppress(trio.RunFinishedError):  # the agent has stopped
            self._token.run_sync_soon(self._publish, report)
