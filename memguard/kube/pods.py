"""Pod identity from raw Pod objects (pure).

The cgroup path gives a pod UID and a container id; the Pod object (from the
node-scoped pod cache) gives namespace, name, the container's name - matched
by id against status.containerStatuses[].containerID ("containerd://<id>",
"cri-o://<id>", "docker://<id>") - QoS class, priority and annotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_STATUS_LISTS = (
    ("containerStatuses", "containers"),
    ("initContainerStatuses", "initContainers"),
    ("ephemeralContainerStatuses", "ephemeralContainers"),
)


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    field_path: str  # spec.containers{name}, spec.initContainers{name}, ...


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    node_name: str | None = None
    qos_class: str | None = None
    priority: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    containers_by_id: Mapping[str, ContainerInfo] = field(default_factory=dict)
    resource_version: str | None = None

    def container(self, container_id: str | None) -> ContainerInfo | None:
        if container_id is None:
            return None
        return self.containers_by_id.get(container_id)


def bare_container_id(container_id: str) -> str:
    """'containerd://abc' -> 'abc' (runtime prefix dropped); '' stays ''."""
    return container_id.partition("://")[2] or container_id


def _containers(status: Mapping[str, Any]) -> dict[str, ContainerInfo]:
    found: dict[str, ContainerInfo] = {}
    for status_key, spec_key in _STATUS_LISTS:
        for entry in status.get(status_key) or []:
            raw_id, name = entry.get("containerID"), entry.get("name")
            if isinstance(raw_id, str) and raw_id and isinstance(name, str):
                found[bare_container_id(raw_id)] = ContainerInfo(name, f"spec.{spec_key}{{{name}}}")
    return found


def parse_pod(pod: Mapping[str, Any]) -> PodInfo | None:
    """PodInfo from a raw Pod (as listed or watched); None without name/uid."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    namespace, name, uid = metadata.get("namespace"), metadata.get("name"), metadata.get("uid")
    if not (isinstance(namespace, str) and isinstance(name, str) and isinstance(uid, str)):
        return None
    annotations = metadata.get("annotations") or {}
    priority = spec.get("priority")
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=uid,
        node_name=spec.get("nodeName"),
        qos_class=status.get("qosClass"),
        priority=priority if isinstance(priority, int) else None,
        annotations={str(k): str(v) for k, v in annotations.items()},
        containers_by_id=_containers(status),
        resource_version=metadata.get("resourceVersion"),
    )
