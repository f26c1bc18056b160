"""What the guards ask of the pods' side (issue 13), as protocols: memguard.kube
implements them; without Kubernetes the agent gets the null versions below.

- OverridesSource: a container's ContainerOverrides (annotations, protection,
  grace period) from the pod cache, and a call when a pod changes (re-arm).
- PodActions: evict or delete a container's pod (the graceful policy's
  --graceful-via evict|delete and the evict policy).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides
from memguard.policy.paths import ContainerRef

PodListener = Callable[[str | None], None]  # a pod uid changed (None: maybe all)


class OverridesSource(Protocol):
    def overrides(self, ref: ContainerRef) -> ContainerOverrides:
        """What the container's pod says now (NO_OVERRIDES while the pod is unknown)."""
        ...

    def subscribe(self, listener: PodListener) -> None:
        """Call listener(pod_uid) when a pod's overrides may have changed; any thread."""
        ...

    def unsubscribe(self, listener: PodListener) -> None: ...


class PodOutcome(enum.Enum):
    DONE = "done"  # eviction accepted (201) / delete accepted (200, 202)
    REFUSED = "refused"  # 429: a PodDisruptionBudget forbids it now
    GONE = "gone"  # 404: the pod is gone already
    FAILED = "failed"  # anything else (no API server, 5xx, timeout, pod unknown)


@dataclass(frozen=True, slots=True)
class PodResult:
    outcome: PodOutcome
    detail: str = ""  # for the report: the status code and the server's message


class PodActions(Protocol):
    async def evict(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        """POST the pod's eviction subresource (policy/v1 Eviction, deleteOptions
        gracePeriodSeconds when given). Never raises; bounded in time."""
        ...

    async def delete(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        """DELETE the pod (gracePeriodSeconds when given). Never raises; bounded."""
        ...


class NoOverrides:
    """Without Kubernetes: every container gets the global settings."""

    def overrides(self, ref: ContainerRef) -> ContainerOverrides:
        return NO_OVERRIDES

    def subscribe(self, listener: PodListener) -> None:
        return None

    def unsubscribe(self, listener: PodListener) -> None:
        return None


class NoPodActions:
    """Without Kubernetes: evict and delete fail (the graceful path falls back)."""

    async def evict(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        return PodResult(PodOutcome.FAILED, "Kubernetes is off (--kubernetes off)")

    async def delete(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        return PodResult(PodOutcome.FAILED, "Kubernetes is off (--kubernetes off)")
