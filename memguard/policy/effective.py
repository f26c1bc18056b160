"""A container's own settings: the global ones with its pod's overrides (pure).

memguard.io/policy replaces --policy; memguard.io/margin and /soft-margin fix
the margin (bytes) or its share of the limit; the grace period is
memguard.io/grace-period, else --grace-period, else the pod's
terminationGracePeriodSeconds, else 30 s (policy.model.DEFAULT_GRACE_PERIOD_S,
applied by the step); protected carries why memguard must not act.
"""

from __future__ import annotations

from dataclasses import replace

from memguard.policy.model import GuardSettings
from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides, MarginOverride

_NO_CEILING = 1 << 62


def _margin(override: MarginOverride, ratio: float) -> tuple[float, int, int]:
    """(ratio, min bytes, max bytes) for a margin override."""
    if override.bytes is not None:
        return ratio, override.bytes, override.bytes
    if override.ratio is not None:
        return override.ratio, 0, _NO_CEILING
    return ratio, 0, _NO_CEILING


def effective_settings(settings: GuardSettings, overrides: ContainerOverrides) -> GuardSettings:
    if overrides == NO_OVERRIDES:
        return settings
    changes: dict[str, object] = {}
    if overrides.policy is not None:
        changes["policy"] = overrides.policy
    if overrides.margin is not None and overrides.margin != MarginOverride():
        ratio, low, high = _margin(overrides.margin, settings.margin_ratio)
        changes.update(margin_ratio=ratio, min_margin_bytes=low, max_margin_bytes=high)
    if overrides.soft_margin is not None and overrides.soft_margin != MarginOverride():
        ratio, low, high = _margin(overrides.soft_margin, settings.soft_margin_ratio)
        changes.update(
            soft_margin_ratio=ratio, min_soft_margin_bytes=low, max_soft_margin_bytes=high
        )
    grace_s = overrides.grace_period_s
    if grace_s is None:
        grace_s = settings.grace_period_s
    if grace_s is None:
        grace_s = overrides.pod_grace_period_s
    if grace_s != settings.grace_period_s:
        changes["grace_period_s"] = grace_s
    if overrides.protected is not None:
        changes["protected"] = overrides.protected
    return replace(settings, **changes) if changes else settings  # type: ignore[arg-type]
