"""Margin and threshold: how close to its limit a cgroup may get.

margin = clamp(limit x margin_ratio, min_margin, max_margin), raised to the
kernel's check granularity (nr_cpus x 512 KiB on 4 KiB pages) and never more
than half the limit; threshold = limit - margin. Unlimited cgroups have none.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

from memguard.policy.model import GuardSettings, Policy


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


@dataclass(frozen=True, slots=True)
class Levels:
    """The usage levels a guard is told about (bytes; None: not registered).

    warning: well below the threshold (WARNING_MARGINS margins, at most half the
      limit): the guard prepares its victims and starts following the fill rate.
    threshold: the configured margin below the limit - memguard acts here at the
      latest (the margin is the floor; it may act earlier when filling fast).
    last_chance: between the threshold and the limit, at least the kernel's check
      granularity below the limit: acts at once even while a flush is running.
    """

    warning: int | None
    threshold: int
    last_chance: int | None
    # The graceful policy's soft level (limit - soft margin), always under the
    # threshold by at least SOFT_GAP_BYTES or the check granularity: crossing it
    # asks the container to stop (SIGTERM); None for the other policies.
    soft: int | None = None


WARNING_MARGINS = 3
SOFT_GAP_BYTES = 1024 * 1024  # soft is at least this far under the threshold


def soft_margin_bytes(limit_bytes: int, settings: GuardSettings) -> int:
    """clamp(limit x soft_margin_ratio, min, max), never more than half the limit."""
    proportional = math.floor(Fraction(settings.soft_margin_ratio) * limit_bytes)
    clamped = min(max(proportional, settings.min_soft_margin_bytes), settings.max_soft_margin_bytes)
    return min(clamped, limit_bytes // 2)


def soft_level(limit_bytes: int, threshold: int, settings: GuardSettings) -> int | None:
    """The graceful policy's soft level: under the threshold (clamped), None if no room."""
    gap = max(SOFT_GAP_BYTES, settings.check_granularity_bytes)
    soft = min(limit_bytes - soft_margin_bytes(limit_bytes, settings), threshold - gap)
    return soft if soft > 0 else None


@functools.lru_cache(maxsize=4096)  # pure; called on every wake-up, limits rarely change
def levels(limit_bytes: int | None, settings: GuardSettings) -> Levels | None:
    threshold = threshold_bytes(limit_bytes, settings)
    if limit_bytes is None or threshold is None:
        return None
    margin = limit_bytes - threshold
    warning = max(threshold - WARNING_MARGINS * margin, limit_bytes // 2)
    last_chance = limit_bytes - max(settings.check_granularity_bytes, margin // 2)
    soft = (
        soft_level(limit_bytes, threshold, settings) if settings.policy is Policy.GRACEFUL else None
    )
    if soft is not None:
        # the victims (the SIGTERM target among them) are ready before the soft level
        warning = min(warning, soft - margin)
    return Levels(
        warning if 0 < warning < threshold else None,
        threshold,
        last_chance if last_chance > threshold else None,
        soft,
    )
