"""What a container's pod says about how memguard treats it (pure data).

Filled from the pod cache (memguard.io/* annotations, the pod's namespace,
priority and terminationGracePeriodSeconds; see memguard.kube) and read by the
guard when it arms and when it acts. NO_OVERRIDES is what a container without
a known pod gets: the global settings, nothing protected.
"""

from __future__ import annotations

from dataclasses import dataclass

from memguard.policy.model import Policy


@dataclass(frozen=True, slots=True)
class MarginOverride:
    """memguard.io/margin or memguard.io/soft-margin: bytes, or a share of the limit."""

    bytes: int | None = None
    ratio: float | None = None  # 0 < ratio < 1


@dataclass(frozen=True, slots=True)
class ContainerOverrides:
    policy: Policy | None = None  # memguard.io/policy (None: --policy)
    ignore: bool = False  # memguard.io/ignore: "true": not guarded at all
    margin: MarginOverride | None = None  # memguard.io/margin (the hard threshold's)
    soft_margin: MarginOverride | None = None  # memguard.io/soft-margin (graceful)
    grace_period_s: float | None = None  # memguard.io/grace-period
    pod_grace_period_s: float | None = None  # the pod's terminationGracePeriodSeconds
    # Why memguard must not act here (report only): a protected namespace, a
    # critical priority, memguard's own pod; None: it may act.
    protected: str | None = None
    terminating: bool = False  # the pod has a deletionTimestamp already


NO_OVERRIDES = ContainerOverrides()
