"""Margin and threshold: clamps, the kernel's check granularity, the half-limit cap."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from memguard.kernel.cgroupfs import UNLIMITED_AT_BYTES
from memguard.policy.margin import granularity_raised_margin, margin_bytes, threshold_bytes
from memguard.policy.model import KIB, MIB, GuardSettings, check_granularity_bytes

GIB = 1024 * MIB
PAGE = 4096
DEFAULTS = GuardSettings()  # 2%, 1 MiB .. 50 MiB, no granularity floor
ON_8_CPUS = GuardSettings(check_granularity_bytes=check_granularity_bytes(8, PAGE))  # 4 MiB
ON_64_CPUS = GuardSettings(check_granularity_bytes=check_granularity_bytes(64, PAGE))  # 32 MiB
GRANULARITY_OVER_MAX = GuardSettings(max_margin_bytes=2 * MIB, check_granularity_bytes=8 * MIB)


@pytest.mark.parametrize(
    ("nr_cpus", "page_bytes", "expected"),
    [
        (1, 4096, 512 * KIB),
        (2, 4096, 1 * MIB),
        (8, 4096, 4 * MIB),
        (64, 4096, 32 * MIB),
        (4, 65536, 32 * MIB),  # arm64 with 64 KiB pages
    ],
)
def test_check_granularity_is_128_pages_per_cpu(
    nr_cpus: int, page_bytes: int, expected: int
) -> None:
    assert check_granularity_bytes(nr_cpus, page_bytes) == expected


@pytest.mark.parametrize(
    ("limit_bytes", "settings", "expected_margin"),
    [
        # proportional: 2% of 1 GiB lies between 1 MiB and 50 MiB
        (1 * GIB, DEFAULTS, int(GIB * 0.02)),
        (500 * MIB, DEFAULTS, int(500 * MIB * 0.02)),
        # clamped up to min_margin
        (10 * MIB, DEFAULTS, 1 * MIB),
        (50 * MIB, DEFAULTS, 1 * MIB),
        # clamped down to max_margin
        (10 * GIB, DEFAULTS, 50 * MIB),
        (1024 * GIB, DEFAULTS, 50 * MIB),
        # raised to the kernel's check granularity
        (100 * MIB, ON_8_CPUS, 4 * MIB),
        (1 * GIB, ON_8_CPUS, int(GIB * 0.02)),  # 20.48 MiB is already above 4 MiB
        (10 * GIB, ON_64_CPUS, 50 * MIB),
        (1 * GIB, ON_64_CPUS, 32 * MIB),  # granularity beats the proportional margin
        (1 * GIB, GRANULARITY_OVER_MAX, 8 * MIB),  # granularity beats max_margin too
        # never more than half the limit
        (1 * MIB, DEFAULTS, 512 * KIB),
        (16 * MIB, ON_64_CPUS, 8 * MIB),
        (3, DEFAULTS, 1),
        (2, DEFAULTS, 1),
        (1, DEFAULTS, 0),
        # other ratios
        (1 * GIB, GuardSettings(margin_ratio=0.1, max_margin_bytes=GIB), int(GIB * 0.1)),
        (1 * GIB, GuardSettings(margin_ratio=0.49, max_margin_bytes=GIB), int(GIB * 0.49)),
    ],
)
def test_margin_table(limit_bytes: int, settings: GuardSettings, expected_margin: int) -> None:
    assert margin_bytes(limit_bytes, settings) == expected_margin
    assert threshold_bytes(limit_bytes, settings) == limit_bytes - expected_margin


@pytest.mark.parametrize("limit_bytes", [None, 0, -1])
def test_no_threshold_without_a_limit(limit_bytes: int | None) -> None:
    assert threshold_bytes(limit_bytes, ON_8_CPUS) is None


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (DEFAULTS, False),
        (GuardSettings(check_granularity_bytes=1 * MIB), False),  # equal to min_margin
        (ON_8_CPUS, True),
        (GuardSettings(min_margin_bytes=64 * MIB, check_granularity_bytes=32 * MIB), False),
    ],
)
def test_granularity_raised_margin(settings: GuardSettings, expected: bool) -> None:
    assert granularity_raised_margin(settings) is expected


# Settings as build_agent_config can make them: 0 < ratio < 0.5, min <= max, and a
# granularity from a real CPU count and page size (never 0).
@st.composite
def valid_settings(draw: st.DrawFn) -> GuardSettings:
    min_margin = draw(st.integers(min_value=0, max_value=2**62))
    max_margin = draw(st.integers(min_value=min_margin, max_value=2**62))
    nr_cpus = draw(st.integers(min_value=1, max_value=4096))
    page_bytes = draw(st.sampled_from([4096, 16384, 65536]))
    ratio = draw(st.floats(min_value=0, max_value=0.5, exclude_min=True, exclude_max=True))
    return GuardSettings(
        margin_ratio=ratio,
        min_margin_bytes=min_margin,
        max_margin_bytes=max_margin,
        check_granularity_bytes=check_granularity_bytes(nr_cpus, page_bytes),
    )


# Limits the v1 reader can return: at least 2 pages, below the "unlimited" cut-off.
limits = st.integers(min_value=2 * PAGE, max_value=UNLIMITED_AT_BYTES - 1)


@given(limit_bytes=limits, settings=valid_settings())
@example(limit_bytes=2 * PAGE, settings=GuardSettings(check_granularity_bytes=512 * KIB))
@example(limit_bytes=UNLIMITED_AT_BYTES - 1, settings=ON_64_CPUS)
def test_threshold_is_strictly_between_zero_and_the_limit(
    limit_bytes: int, settings: GuardSettings
) -> None:
    threshold = threshold_bytes(limit_bytes, settings)
    assert threshold is not None
    assert 0 < threshold < limit_bytes


@given(limit_bytes=limits, settings=valid_settings())
def test_margin_stays_within_its_bounds(limit_bytes: int, settings: GuardSettings) -> None:
    margin = margin_bytes(limit_bytes, settings)
    half = limit_bytes // 2
    granularity = settings.check_granularity_bytes
    assert margin <= half
    assert margin <= max(settings.max_margin_bytes, granularity)
    assert margin >= min(settings.min_margin_bytes, half)
    assert margin >= min(granularity, half)


# Exact float arithmetic (limit x ratio) holds below 2**53 bytes (8 PiB); above it see
# the test below.
@given(
    limit_bytes=st.integers(min_value=2 * PAGE, max_value=2**53 - 2**40),
    extra_bytes=st.integers(min_value=0, max_value=2**40),
    settings=valid_settings(),
)
def test_threshold_never_drops_when_the_limit_grows(
    limit_bytes: int, extra_bytes: int, settings: GuardSettings
) -> None:
    smaller = threshold_bytes(limit_bytes, settings)
    larger = threshold_bytes(limit_bytes + extra_bytes, settings)
    assert smaller is not None
    assert larger is not None
    assert smaller <= larger


def test_threshold_is_monotone_above_float_precision() -> None:
    settings = GuardSettings(margin_ratio=0.49, min_margin_bytes=0, max_margin_bytes=2**62)
    smaller = threshold_bytes(2**60 + 128, settings)
    larger = threshold_bytes(2**60 + 129, settings)
    assert smaller is not None
    assert larger is not None
    assert smaller <= larger
