"""Margin and threshold: how close to its limit a cgroup may get.

margin = clamp(limit x margin_ratio, min_margin, max_margin), raised to the
kernel's check granularity (nr_cpus x 512 KiB on 4 KiB pages) and never more
than half the limit; threshold = limit - margin. Unlimited cgroups have none.
"""

from __future__ import annotations

import math
from fractions import Fraction

from memguard.policy.model import GuardSettings


def margin_bytes(limit_bytes: int, settings: GuardSettings) -> int:
    """The distance below limit_bytes at which memguard acts."""
    proportional = math.floor(Fraction(settings.margin_ratio) * limit_bytes)  # exact
    clamped = min(max(proportional, settings.min_margin_bytes), settings.max_margin_bytes)
    raised = max(clamped, settings.check_granularity_bytes)
    return min(raised, limit_bytes // 2)


def threshold_bytes(limit_bytes: int | None, settings: GuardSettings) -> int | None:
    """Usage at which memguard acts, or None for an unlimited cgroup."""
    if limit_bytes is None or limit_bytes <= 0:
        return None
    return limit_bytes - margin_bytes(limit_bytes, settings)


def granularity_raised_margin(settings: GuardSettings) -> bool:
    """True when the kernel granularity, not the flags, sets the margin floor."""
    return settings.check_granularity_bytes > settings.min_margin_bytes
