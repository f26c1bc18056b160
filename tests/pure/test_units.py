"""Sizes, ratios, durations: Kubernetes quantity semantics and helpful errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.units import format_size, parse_duration, parse_ratio, parse_size

KI = 1024
MI = 1024**2
GI = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", MI),
        ("0", 0),
        ("1Mi", MI),
        ("1MiB", MI),
        ("1M", 10**6),
        ("1MB", 10**6),
        ("1mb", 10**6),
        ("1KiB", KI),
        ("512Ki", 512 * KI),
        ("1k", 1000),
        ("1kB", 1000),
        ("1K", 1000),
        ("1.5Gi", 3 * GI // 2),
        ("1 Mi", MI),
        ("  2Gi  ", 2 * GI),
        ("1G", 10**9),
        ("1Ti", 1024**4),
        ("1T", 10**12),
        ("1Ei", 1024**6),
        ("1E", 10**18),
        ("100B", 100),
        (".5Ki", 512),
        ("0.5Ki", 512),
        ("1.5Ki", 1536),
        ("0.1Ki", 102),  # fractions round down to whole bytes
    ],
)
def test_parse_size_accepts_kubernetes_quantities(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_decimal_and_binary_suffixes_differ() -> None:
    assert parse_size("1M") == 1_000_000
    assert parse_size("1Mi") == 1_048_576
    assert parse_size("1M") != parse_size("1Mi")


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "",
        "   ",
        "-1",
        "-1Mi",
        "1m",  # Kubernetes milli: never a byte count
        "1g",  # GiB to docker, GB to Kubernetes: ambiguous
        "1t",
        "1Mx",
        "1ib",
        "1iB",
        "1XiB",
        "1MiBB",
        "1.",
        "1e3",
        "1 2",
        "Mi",
        "nan",
        "inf",
        "0x10",
    ],
)
def test_parse_size_rejects_with_a_helpful_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a size such as .*1Mi") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.1M", 4_100_000),
        ("1.001k", 1001),
        ("8.2G", 8_200_000_000),
        ("9007199254740993", 2**53 + 1),
    ],
)
def test_parse_size_is_exact_for_decimal_fractions_and_large_integers(
    text: str, expected: int
) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.02", 0.02),
        ("2%", 0.02),
        (" 2 % ", 0.02),
        ("100%", 1.0),
        ("0", 0.0),
        ("0%", 0.0),
        ("1", 1.0),
        ("0.5", 0.5),
        ("12.5%", 0.125),
    ],
)
def test_parse_ratio_accepts_fractions_and_percentages(text: str, expected: float) -> None:
    assert parse_ratio(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "is not a ratio such as 0.02 or 2%"),
        ("", "is not a ratio"),
        ("%", "is not a ratio"),
        ("2%%", "is not a ratio"),
        ("120%", "out of range"),
        ("1.5", "out of range"),
        ("-0.1", "out of range"),
        ("-1%", "out of range"),
        ("nan", "out of range"),
        ("inf", "out of range"),
        ("-inf", "out of range"),
        ("nan%", "out of range"),
    ],
)
def test_parse_ratio_rejects_with_a_helpful_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_ratio(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected_s"),
    [
        ("10", 10.0),
        ("10s", 10.0),
        ("500ms", 0.5),
        ("100ms", 0.1),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("0", 0.0),
        (".5s", 0.5),
        (" 30 s ", 30.0),
    ],
)
def test_parse_duration_reads_seconds(text: str, expected_s: float) -> None:
    assert parse_duration(text) == pytest.approx(expected_s)


@pytest.mark.parametrize("text", ["abc", "", "10x", "-1s", "-1", "10S", "1d", "s", "1.s", "10 m s"])
def test_parse_duration_rejects_with_a_helpful_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration such as 30, 30s, 500ms") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("size_bytes", "expected"),
    [
        (None, "unlimited"),
        (0, "0B"),
        (512, "512B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (128 * MI, "128.0MiB"),
        (3 * GI // 2, "1.5GiB"),
        (1024**4, "1.0TiB"),
        (1024**5, "1024.0TiB"),  # TiB is the largest unit
        (9223372036854771712, "8388608.0TiB"),
    ],
)
def test_format_size(size_bytes: int | None, expected: str) -> None:
    assert format_size(size_bytes) == expected


@pytest.mark.parametrize("text", ["1Ki", "1Mi", "1.5Gi", "3Ti", "512"])
def test_format_size_round_trips_binary_sizes(text: str) -> None:
    formatted = format_size(parse_size(text))
    assert parse_size(formatted) == parse_size(text)


@given(st.integers(min_value=0, max_value=2**53))
def test_parse_size_plain_integers_are_bytes(size_bytes: int) -> None:
    assert parse_size(str(size_bytes)) == size_bytes


@given(
    st.integers(min_value=0, max_value=2**20),
    st.sampled_from([("Ki", 1024), ("Mi", 1024**2), ("Gi", 1024**3), ("k", 1000), ("M", 10**6)]),
)
def test_parse_size_whole_numbers_of_units(count: int, unit: tuple[str, int]) -> None:
    suffix, multiplier = unit
    assert parse_size(f"{count}{suffix}") == count * multiplier
    assert parse_size(f"{count}{suffix}B") == count * multiplier
