"""Which cgroup directories are containers, and whose (pure: strings in, data out).

Forms recognised (the last two path components decide):
  cgroupfs driver (v1)  kubepods/pod<uid>/<64-hex id>
                        kubepods/{burstable,besteffort}/pod<uid>/<64-hex id>
  systemd driver        kubepods.slice/kubepods-pod<uid_>.slice/<runtime>-<id>.scope
                        kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/
                            <runtime>-<id>.scope   runtime: cri-containerd | crio | docker
  plain docker          docker/<64-hex id>, system.slice/docker-<id>.scope
Not containers: pod and QoS cgroups, crio-conmon-<id>.scope, init.scope.
In systemd slice names the pod UID's dashes are underscores; they are restored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX_ID = r"[0-9a-f]{64}"
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_CGROUPFS_ID = re.compile(rf"^({_HEX_ID})$")
_SCOPE_ID = re.compile(rf"^(cri-containerd|crio|docker)-({_HEX_ID})\.scope$")
_CGROUPFS_POD = re.compile(rf"^pod({_UID})$")
_SYSTEMD_POD = re.compile(rf"^kubepods(?:-(burstable|besteffort))?-pod({_UID})\.slice$")
_RUNTIME_NAMES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """Who a guarded cgroup belongs to. Fields are None where the path does not say."""

    pod_uid: str | None
    container_id: str | None
    qos_class: str | None  # Guaranteed | Burstable | BestEffort
    runtime: str | None  # containerd | cri-o | docker
    driver: str  # cgroupfs | systemd | docker | leaf


def _qos(name: str | None) -> str:
    return {"burstable": "Burstable", "besteffort": "BestEffort"}.get(name or "", "Guaranteed")


def _components(path: str) -> list[str]:
    return [part for part in path.strip("/").split("/") if part]


def parse_container_path(path: str) -> ContainerRef | None:
    """The container a cgroup path belongs to, or None when it is not a container."""
    parts = _components(path)
    if len(parts) < 2:
        return None
    leaf, parent = parts[-1], parts[-2]
    grandparent = parts[-3] if len(parts) >= 3 else None
    scope = _SCOPE_ID.match(leaf)
    if scope is not None:
        runtime = _RUNTIME_NAMES[scope.group(1)]
        pod = _SYSTEMD_POD.match(parent)
        if pod is not None:
            uid = pod.group(2).replace("_", "-")
            return ContainerRef(uid, scope.group(2), _qos(pod.group(1)), runtime, "systemd")
        if scope.group(1) == "docker":
            return ContainerRef(None, scope.group(2), None, "docker", "docker")
        return None
    plain = _CGROUPFS_ID.match(leaf)
    if plain is None:
        return None
    pod = _CGROUPFS_POD.match(parent)
    if pod is not None:
        qos = grandparent if grandparent in ("burstable", "besteffort") else None
        return ContainerRef(pod.group(1), plain.group(1), _qos(qos), None, "cgroupfs")
    if parent == "docker":
        return ContainerRef(None, plain.group(1), None, "docker", "docker")
    return None


def may_hold_containers(path: str) -> bool:
    """Whether a directory below path can be a container (discovery descends only then).

    Not inside a container (nothing below a container cgroup is a container),
    and not inside a pod's child (a pod's containers are its direct children,
    so nothing deeper is one).
    """
    parts = _components(path)
    for index, name in enumerate(parts):
        if _is_pod(name) and index < len(parts) - 1:
            return False
        if parse_container_path("/".join(parts[: index + 1])) is not None:
            return False
    return True


def _is_pod(name: str) -> bool:
    return _CGROUPFS_POD.match(name) is not None or _SYSTEMD_POD.match(name) is not None


def leaf_ref(path: str) -> ContainerRef:
    """Identity for --match leaf: the parsed form when known, else the bare name."""
    parsed = parse_container_path(path)
    if parsed is not None:
        return parsed
    return ContainerRef(None, None, None, None, "leaf")
