"""Sizes, ratios, durations: Kubernetes quantity semantics and helpful errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.units import (
    MAX_DURATION_S,
    MAX_SIZE_BYTES,
    format_duration,
    format_size,
    format_size_bound,
    parse_duration,
    parse_listen,
    parse_ratio,
    parse_size,
    parse_whole_number,
    shown,
)

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


# --- ranges and ASCII digits (issue 9) ------------------------------------------------------

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "text",
    [HUGE, f"{HUGE}Ei", "4.1Ei", "4611686018427387905", "9" * 5000, "1" + "0" * 400 + "Mi"],
)
def test_parse_size_refuses_sizes_above_4ei_with_the_range(text: str) -> None:
    with pytest.raises(ValueError, match=r"is out of range: at least 0, at most 4Ei$"):
        parse_size(text)


def test_parse_size_reaches_exactly_2_to_the_62() -> None:
    assert parse_size("4Ei") == parse_size("4611686018427387904") == MAX_SIZE_BYTES == 2**62


@pytest.mark.parametrize(
    ("text", "low", "high", "message"),
    [
        ("0", 1, 64 * GI, "'0' is out of range: at least 1, at most 64Gi"),
        ("65Gi", 1, 64 * GI, "'65Gi' is out of range: at least 1, at most 64Gi"),
        ("2Ti", 0, 1024**4, "at least 0, at most 1Ti"),
        ("1001", 0, 1000, "at least 0, at most 1000"),
    ],
)
def test_parse_size_with_bounds(text: str, low: int, high: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text, low, high)
    assert parse_size(str(low), low, high) == low
    assert parse_size(str(high), low, high) == high


@pytest.mark.parametrize(
    "text", ["\u0663", "\u0663Mi", "1\u0660", "\uff11Ki", "\u09e7", "1\u00a0Mi", "\u00b2"]
)
def test_parse_size_takes_ascii_digits_only(text: str) -> None:
    assert not text.isascii()
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_a_long_fraction_is_exact_enough_and_never_slow() -> None:
    assert parse_size("1." + "9" * 5000 + "Ki") == 2047  # rounds down, as every fraction
    assert parse_size("0." + "0" * 5000 + "1Ei") == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{HUGE}h", r"'99999999999999999999h' is out of range: at least 0s, at most 168h"),
        ("169h", "at most 168h"),
        ("1" + "0" * 400, "is out of range"),  # float() would make it inf
        ("9" * 5000 + "ms", "is out of range"),
        ("inf", "is not a duration"),
        ("nan", "is not a duration"),
        ("infinity", "is not a duration"),
        ("1e3", "is not a duration"),
        ("1_000", "is not a duration"),
        ("\u0663s", "is not a duration"),
        ("\uff15m", "is not a duration"),
    ],
)
def test_parse_duration_refuses_huge_and_non_ascii_values(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "low_s", "high_s", "message"),
    [
        ("2h", 0.0, 3600.0, "'2h' is out of range: at least 0s, at most 1h"),
        ("0", 0.01, 600.0, "'0' is out of range: at least 10ms, at most 10m"),
        ("0.5ms", 0.001, 60.0, "at least 1ms, at most 1m"),
        ("25h", 0.1, 86400.0, "at least 100ms, at most 24h"),
    ],
)
def test_parse_duration_with_bounds(text: str, low_s: float, high_s: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text, low_s, high_s)
    assert parse_duration(format_duration(low_s), low_s, high_s) == pytest.approx(low_s)
    assert parse_duration(format_duration(high_s), low_s, high_s) == pytest.approx(high_s)


def test_a_duration_bound_is_never_above_a_week() -> None:
    assert MAX_DURATION_S == 7 * 24 * 3600
    with pytest.raises(ValueError, match="at most 168h"):
        parse_duration("200h", 0.0, 1e9)


@pytest.mark.parametrize(
    ("duration_s", "expected"),
    [(0.0, "0s"), (0.001, "1ms"), (0.1, "100ms"), (1.0, "1s"), (1.5, "1500ms"), (90.0, "90s"),
     (60.0, "1m"), (600.0, "10m"), (3600.0, "1h"), (86400.0, "24h"), (0.0005, "0.0005s")],
)  # fmt: skip
def test_format_duration_writes_what_parse_duration_reads(duration_s: float, expected: str) -> None:
    assert format_duration(duration_s) == expected
    assert parse_duration(expected) == pytest.approx(duration_s)


@pytest.mark.parametrize(
    ("size_bytes", "expected"),
    [(0, "0"), (1, "1"), (1000, "1000"), (KI, "1Ki"), (64 * GI, "64Gi"), (2**62, "4Ei"),
     (3 * MI // 2, "1536Ki")],
)  # fmt: skip
def test_format_size_bound_writes_what_parse_size_reads(size_bytes: int, expected: str) -> None:
    assert format_size_bound(size_bytes) == expected
    assert parse_size(expected) == size_bytes


@pytest.mark.parametrize(
    ("text", "expected"), [("1", 1), (" 7 ", 7), ("0001024", 1024), ("1000000", 1_000_000)]
)
def test_parse_whole_number(text: str, expected: int) -> None:
    assert parse_whole_number(text, 1, 1_000_000) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "'0' is out of range: at least 1, at most 1000000"),
        ("1000001", "is out of range"),
        (HUGE, "is out of range"),
        ("9" * 5000, "is out of range"),  # above int()'s 4300 digits: never converted
        ("\u0663", "is not a whole number"),
        ("\uff11", "is not a whole number"),
        ("1.0", "is not a whole number"),
        ("-1", "is not a whole number"),
        ("+1", "is not a whole number"),
        ("1_0", "is not a whole number"),
        ("", "is not a whole number"),
    ],
)
def test_parse_whole_number_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_whole_number(text, 1, 1_000_000)


def test_a_long_value_is_shortened_in_messages() -> None:
    with pytest.raises(ValueError, match="out of range") as info:
        parse_whole_number("9" * 5000, 1, 10)
    assert len(str(info.value)) < 200
    assert "\n" not in str(info.value)
    assert shown("a\nb") == "'a\\nb'"


@pytest.mark.parametrize("text", ["0.\u0660\u0662", "\u0661", "1_0%", "0_5"])
def test_parse_ratio_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="is not a ratio"):
        parse_ratio(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9637", ("0.0.0.0", 9637)),
        ("127.0.0.1:9637", ("127.0.0.1", 9637)),
        ("[::1]:80", ("::1", 80)),
        (":0", ("0.0.0.0", 0)),  # any free port
        (":65535", ("0.0.0.0", 65535)),
        (":00080", ("0.0.0.0", 80)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":65536", "the port is out of range: at least 0, at most 65535"),
        (f":{HUGE}", "the port is out of range"),
        (":" + "9" * 5000, "the port is out of range"),
        (":\u0669\u0666\u0663\u0667", "is not HOST:PORT"),
        (":\uff18\uff10", "is not HOST:PORT"),
        (":-1", "is not HOST:PORT"),
        ("9637", "is not HOST:PORT"),
        ("host:", "is not HOST:PORT"),
        (": 80", "is not HOST:PORT"),
    ],
)
def test_parse_listen_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen(text)


@given(st.integers(min_value=0, max_value=2**62))
def test_every_size_up_to_2_to_the_62_parses(size_bytes: int) -> None:
    assert parse_size(str(size_bytes)) == size_bytes


@given(st.integers(min_value=2**62 + 1, max_value=10**40))
def test_every_size_above_2_to_the_62_is_out_of_range(size_bytes: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_size(str(size_bytes))
