"""cgroup v1 file parsers, fed golden text read from a real 6.18 kernel."""

from __future__ import annotations

import pytest

from memguard.errors import CgroupFormatError
from memguard.kernel.cgroupfs import parse_flat_keyed, parse_int, parse_limit

# /sys/fs/cgroup/memory/memory.stat (root cgroup, kernel 6.18, cgroup v1).
GOLDEN_MEMORY_STAT = """\
cache 9244672
rss 6131712
rss_huge 0
shmem 8998912
mapped_file 7569408
dirty 12288
writeback 0
workingset_refault_anon 0
workingset_refault_file 222
swap 0
swapcached 0
pgpgin 39723
pgpgout 35969
pgfault 45667
pgmajfault 0
inactive_anon 0
active_anon 1531904
inactive_file 0
active_file 245760
unevictable 13598720
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771712
total_cache 523276288
total_rss 52662272
total_rss_huge 0
total_shmem 8998912
total_mapped_file 22323200
total_dirty 242114560
total_writeback 0
total_workingset_refault_anon 0
total_workingset_refault_file 181115
total_swap 0
total_swapcached 0
total_pgpgin 1474112
total_pgpgout 1365515
total_pgfault 1557127
total_pgmajfault 999
total_inactive_anon 46379008
total_active_anon 1576960
total_inactive_file 406507520
total_active_file 107765760
total_unevictable 13598720
"""

# /sys/fs/cgroup/memory/memory.oom_control on the same kernel.
GOLDEN_OOM_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"

UNLIMITED_AS_READ = 9223372036854771712  # PAGE_COUNTER_MAX pages, as the kernel prints it


def test_golden_memory_stat_parses_every_line() -> None:
    stat = parse_flat_keyed(GOLDEN_MEMORY_STAT)
    assert len(stat) == len(GOLDEN_MEMORY_STAT.splitlines()) == 42
    assert stat["cache"] == 9244672
    assert stat["shmem"] == 8998912
    assert stat["total_cache"] == 523276288
    assert stat["total_shmem"] == 8998912
    assert stat["total_rss"] == 52662272
    assert stat["total_inactive_file"] == 406507520
    assert stat["total_dirty"] == 242114560
    assert stat["hierarchical_memory_limit"] == UNLIMITED_AS_READ
    assert parse_limit(stat["hierarchical_memory_limit"]) is None


def test_golden_oom_control() -> None:
    assert parse_flat_keyed(GOLDEN_OOM_CONTROL) == {
        "oom_kill_disable": 0,
        "under_oom": 0,
        "oom_kill": 0,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("\n\n", {}),
        ("cache 1\n", {"cache": 1}),
        ("cache 1", {"cache": 1}),  # no trailing newline
        ("cache 1\r\nrss 2\r\n", {"cache": 1, "rss": 2}),
        ("  cache   1  \n", {"cache": 1}),
        ("delta -5\n", {"delta": -5}),
        ("cache 1\ncache 2\n", {"cache": 2}),  # the last one wins
        ("cache\nrss 2\n", {"rss": 2}),
        ("cache 1 2\nrss 2\n", {"rss": 2}),
        ("cache abc\nrss 2\n", {"rss": 2}),
        ("cache 1.5\nrss 2\n", {"rss": 2}),
        ("cache 0x10\nrss 2\n", {"rss": 2}),
        ("cache -\nrss 2\n", {"rss": 2}),
        ("cache 1-2\nrss 2\n", {"rss": 2}),
        ("cache \ufffd\nrss 2\n", {"rss": 2}),  # what read_text makes of non-ASCII bytes
        ("garbage\x00\x01 line\nrss 2\n", {"rss": 2}),
        (
            "oom_kill_disable 1\nunder_oom 1\noom_kill 7\n",
            {"oom_kill_disable": 1, "under_oom": 1, "oom_kill": 7},
        ),
    ],
)
def test_parse_flat_keyed_skips_malformed_lines(text: str, expected: dict[str, int]) -> None:
    assert parse_flat_keyed(text) == expected


def test_parse_flat_keyed_skips_a_double_minus() -> None:
    assert parse_flat_keyed("cache --5\nrss 2\n") == {"rss": 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (UNLIMITED_AS_READ, None),
        (2**63 - 1, None),
        (2**62, None),
        (2**62 - 1, 2**62 - 1),
        (100 * 1024 * 1024, 100 * 1024 * 1024),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_limit(value: int, expected: int | None) -> None:
    assert parse_limit(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("104857600\n", 104857600),
        ("0\n", 0),
        ("  42  ", 42),
        ("-1\n", -1),
        (f"{UNLIMITED_AS_READ}\n", UNLIMITED_AS_READ),
    ],
)
def test_parse_int(text: str, expected: int) -> None:
    assert parse_int(text, "memory.usage_in_bytes") == expected


@pytest.mark.parametrize(
    "text", ["", "\n", "abc", "12abc", "max\n", "1.5", "0x10", "1 2", "\ufffd"]
)
def test_parse_int_raises_cgroup_format_error_on_garbage(text: str) -> None:
    path = "/sys/fs/cgroup/memory/x/memory.usage_in_bytes"
    with pytest.raises(CgroupFormatError, match="expected an integer") as info:
        parse_int(text, path)
    assert path in str(info.value)
    assert repr(text.strip()) in str(info.value)


def test_parse_int_error_quotes_at_most_40_characters() -> None:
    with pytest.raises(CgroupFormatError) as info:
        parse_int("x" * 100, "memory.limit_in_bytes")
    assert "x" * 40 in str(info.value)
    assert "x" * 41 not in str(info.value)
