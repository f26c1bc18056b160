"""Kubernetes Event bodies for reports (pure).

events.k8s.io/v1, as client-go's new recorder writes them: regarding the Pod
(fieldPath spec.containers{name} when the container is known) or the Node
when no pod is known (uid: the node's name, as the kubelet's Node events
have it); reportingController memguard.io/memguard, reportingInstance the
node name; the note is Report.message() (one line, at most 1024 bytes: the
API server's limit). eventTime and
series.lastObservedTime are MicroTime: exactly six fractional digits, which
datetime.isoformat() drops when the microseconds are 0 - so strings are
formatted here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from memguard.kube.pods import PodInfo
from memguard.reports.report import Report, ReportKind

REPORTING_CONTROLLER = "memguard.io/memguard"
NAME_MAX = 253
_ACTIONS = {
    ReportKind.FLUSH: "Flush",
    ReportKind.SKIP: "Skip",
    ReportKind.KILL_PROCESS: "KillProcess",
    ReportKind.KILL_CONTAINER: "KillContainer",
    ReportKind.TERMINATE: "Terminate",
    ReportKind.EVICT: "Evict",
    ReportKind.DELETE: "Delete",
    ReportKind.PROTECTED: "Report",
    ReportKind.NOOP: "Report",
    ReportKind.NO_VICTIM: "Report",
    ReportKind.KERNEL_OOM: "Observe",
    ReportKind.QOS_APPLIED: "SetMemoryQoS",
    ReportKind.QOS_INVALID: "SetMemoryQoS",
    ReportKind.QOS_UNSUPPORTED: "SetMemoryQoS",
    ReportKind.PARENT_MISSING: "Guard",
    ReportKind.BAD_ANNOTATION: "ReadAnnotations",
}


@dataclass(frozen=True)
class Regarding:
    kind: str  # Pod | Node
    name: str
    namespace: str | None = None
    uid: str | None = None
    field_path: str | None = None

    def to_api(self) -> dict[str, str]:
        ref = {"apiVersion": "v1", "kind": self.kind, "name": self.name}
        optional = {"namespace": self.namespace, "uid": self.uid, "fieldPath": self.field_path}
        ref.update({key: value for key, value in optional.items() if value})
        return ref

    @property
    def event_namespace(self) -> str:
        """Events about cluster-scoped objects (the Node) live in 'default'."""
        return self.namespace or "default"


def regarding_for(report: Report, pod: PodInfo | None, node_name: str) -> Regarding:
    if pod is None:
        # As the kubelet's own Node events: a Node's uid there is its name.
        return Regarding("Node", node_name, uid=node_name)
    container = pod.container(report.ref.container_id)
    field_path = container.field_path if container else None
    return Regarding("Pod", pod.name, pod.namespace, pod.uid, field_path)


def event_type(kind: ReportKind) -> str:
    return "Normal" if kind in (ReportKind.FLUSH, ReportKind.QOS_APPLIED) else "Warning"


def event_action(report: Report) -> str:
    action = _ACTIONS[report.kind]
    return f"Would{action}" if report.dry_run and report.kind in _KILLS else action


_KILLS = frozenset(
    {
        ReportKind.KILL_PROCESS,
        ReportKind.KILL_CONTAINER,
        ReportKind.TERMINATE,
        ReportKind.EVICT,
        ReportKind.DELETE,
    }
)


def micro_time(wall_s: float) -> str:
    """RFC 3339 UTC with exactly six fractional digits (metav1.MicroTime)."""
    whole = int(wall_s)
    micros = round((wall_s - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def event_name(regarding: Regarding, wall_ns: int) -> str:
    """client-go's '<object name>.<hex nanoseconds>', cut to a valid length."""
    suffix = f".{wall_ns:x}"
    return regarding.name[: NAME_MAX - len(suffix)] + suffix


def build_event(
    report: Report, regarding: Regarding, node_name: str, wall_s: float, name: str
) -> dict[str, Any]:
    """A complete events.k8s.io/v1 Event body."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": regarding.event_namespace},
        "eventTime": micro_time(wall_s),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": node_name,
        "action": event_action(report),
        "reason": report.kind.value,
        "type": event_type(report.kind),
        "regarding": regarding.to_api(),
        "note": report.message(),
    }


def series_patch(count: int, wall_s: float) -> dict[str, Any]:
    return {"series": {"count": count, "lastObservedTime": micro_time(wall_s)}}
