"""Pod identity from raw Pod objects (pure).

The cgroup path gives a pod UID and a container id; the Pod object (from the
node-scoped pod cache) gives namespace, name, the container's name - matched
by id against status.containerStatuses[].containerID ("containerd://<id>",
"cri-o://<id>", "docker://<id>") - QoS class, priority and annotations.

Rules (the API server's objects are input like any other: bounded, validated):
- A pod is used only if every field read here has the documented JSON type
  and a sane size; anything else (a list where an object belongs, a number
  for a name, a megabyte-long uid) makes the whole pod ignored: PodError
  says why, parse_pod() returns None. Nothing here raises anything else.
- Only the annotations memguard acts on are kept (the memory-QoS plugin's
  `*.memory-qos.nri.io` keys and memguard's own `memguard.io/*` and
  `*.memguard.io/<container>`): a pod may carry 256 KiB of others
  (last-applied-configuration, ...), and the cache holds up to 10,000 pods.
- Also read for memguard.policy.annotations: spec.terminationGracePeriodSeconds
  and metadata.deletionTimestamp (the pod is terminating).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Sizes, generous over what the API server itself accepts (so a real pod always fits):
MAX_NAME_CHARS = 253  # pod and container names: DNS-1123 subdomains at most
MAX_NAMESPACE_CHARS = 63  # a DNS-1123 label
MAX_UID_CHARS = 128  # UUIDs are 36; static pods' config hashes 32
MAX_CONTAINER_ID_CHARS = 256  # "<runtime>://" + 64 hex
MAX_CONTAINERS = 256  # status entries per pod, all three lists together
MAX_ANNOTATIONS = 4096  # entries in one annotation map (the server caps their total at 256 KiB)
MAX_KEPT_ANNOTATIONS = 64  # memguard's own annotations on one pod
MAX_ANNOTATION_VALUE_CHARS = 4096  # one kept value (memory QoS takes at most 64)
MAX_SHORT_CHARS = 1024  # qosClass, resourceVersion, nodeName
KEPT_ANNOTATION_DOMAINS = ("memory-qos.nri.io", "memguard.io")
MAX_GRACE_PERIOD_S = 2**63 - 1  # terminationGracePeriodSeconds is an int64

_STATUS_LISTS = (
    ("containerStatuses", "containers"),
    ("initContainerStatuses", "initContainers"),
    ("ephemeralContainerStatuses", "ephemeralContainers"),
)


class PodError(ValueError):
    """The object is not a pod memguard can use (the message says which field)."""


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
    termination_grace_period_s: int | None = None  # spec.terminationGracePeriodSeconds
    terminating: bool = False  # metadata.deletionTimestamp is set

    def container(self, container_id: str | None) -> ContainerInfo | None:
        if container_id is None:
            return None
        return self.containers_by_id.get(container_id)


def bare_container_id(container_id: str) -> str:
    """'containerd://abc' -> 'abc' (runtime prefix dropped); '' stays ''."""
    return container_id.partition("://")[2] or container_id


def kept_annotation(key: str) -> bool:
    """Is this one of the annotations memguard acts on ('<x>.<domain>[/<container>]')?"""
    base = key.partition("/")[0]
    return any(base == d or base.endswith("." + d) for d in KEPT_ANNOTATION_DOMAINS)


def _object(value: object, where: str) -> Mapping[str, Any]:
    """A JSON object (null and absent read as empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _text(value: object, where: str, max_chars: int) -> str | None:
    """An optional string (null and absent read as None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PodError(f"{where}: expected a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise PodError(f"{where}: {len(value)} characters (at most {max_chars})")
    return value


def _required(value: object, where: str, max_chars: int) -> str:
    text = _text(value, where, max_chars)
    if not text:
        raise PodError(f"{where}: missing")
    return text


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PodError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _containers(status: Mapping[str, Any]) -> dict[str, ContainerInfo]:
    found: dict[str, ContainerInfo] = {}
    seen = 0
    for status_key, spec_key in _STATUS_LISTS:
        entries = _list(status.get(status_key), f"status.{status_key}")
        seen += len(entries)
        if seen > MAX_CONTAINERS:
            raise PodError(f"status: more than {MAX_CONTAINERS} container statuses")
        for index, raw in enumerate(entries):
            where = f"status.{status_key}[{index}]"
            entry = _object(raw, where)
            raw_id = _text(entry.get("containerID"), f"{where}.containerID", MAX_CONTAINER_ID_CHARS)
            name = _text(entry.get("name"), f"{where}.name", MAX_NAME_CHARS)
            if raw_id and name:  # a container not started yet has no id
                found[bare_container_id(raw_id)] = ContainerInfo(name, f"spec.{spec_key}{{{name}}}")
    return found


def _annotations(metadata: Mapping[str, Any]) -> dict[str, str]:
    annotations = _object(metadata.get("annotations"), "metadata.annotations")
    if len(annotations) > MAX_ANNOTATIONS:
        raise PodError(f"metadata.annotations: more than {MAX_ANNOTATIONS} entries")
    kept: dict[str, str] = {}
    for key, value in annotations.items():
        if not isinstance(key, str) or not kept_annotation(key):
            continue  # JSON keys are strings; others are not ours to read
        where = f"metadata.annotations[{key[:MAX_NAME_CHARS]!r}]"
        if len(key) > MAX_SHORT_CHARS:
            raise PodError(f"{where}: a key of {len(key)} characters")
        if len(kept) == MAX_KEPT_ANNOTATIONS:
            raise PodError(f"metadata.annotations: more than {MAX_KEPT_ANNOTATIONS} of memguard's")
        kept[key] = _text(value, where, MAX_ANNOTATION_VALUE_CHARS) or ""
    return kept


def read_pod(pod: object) -> PodInfo:
    """PodInfo from a raw Pod (as listed or watched); PodError if it is not usable."""
    top = _object(pod, "pod")
    metadata = _object(top.get("metadata"), "metadata")
    spec = _object(top.get("spec"), "spec")
    status = _object(top.get("status"), "status")
    namespace = _required(metadata.get("namespace"), "metadata.namespace", MAX_NAMESPACE_CHARS)
    name = _required(metadata.get("name"), "metadata.name", MAX_NAME_CHARS)
    uid = _required(metadata.get("uid"), "metadata.uid", MAX_UID_CHARS)
    priority = spec.get("priority")
    if priority is not None and (type(priority) is not int or abs(priority) > 2**31):
        raise PodError("spec.priority: not a 32-bit integer")
    grace_s = spec.get("terminationGracePeriodSeconds")
    if grace_s is not None and (type(grace_s) is not int or not 0 <= grace_s <= MAX_GRACE_PERIOD_S):
        raise PodError("spec.terminationGracePeriodSeconds: not a non-negative int64")
    deleting = _text(
        metadata.get("deletionTimestamp"), "metadata.deletionTimestamp", MAX_SHORT_CHARS
    )
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=uid,
        node_name=_text(spec.get("nodeName"), "spec.nodeName", MAX_SHORT_CHARS),
        qos_class=_text(status.get("qosClass"), "status.qosClass", MAX_SHORT_CHARS),
        priority=priority,
        annotations=_annotations(metadata),
        containers_by_id=_containers(status),
        resource_version=_text(
            metadata.get("resourceVersion"), "metadata.resourceVersion", MAX_SHORT_CHARS
        ),
        termination_grace_period_s=grace_s,
        terminating=bool(deleting),
    )


def parse_pod(pod: object) -> PodInfo | None:
    """PodInfo from a raw Pod, or None if it is not usable (see read_pod)."""
    try:
        return read_pod(pod)
    except PodError:
        return None
