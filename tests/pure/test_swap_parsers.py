"""The swap trigger's parsers: /proc/vmstat, /proc/swaps, memory.pressure (golden text)."""

from __future__ import annotations

import pytest

from memguard.errors import CgroupFormatError
from memguard.kernel.psi import parse_full_avg10
from memguard.kernel.swapfiles import SwapArea, parse_swaps, parse_vmstat

# /proc/vmstat around the swap counters (this host's 6.18; the VM's 6.1 has the same lines).
GOLDEN_VMSTAT = """\
nr_free_pages 3610434
nr_free_pages_blocks 2938880
pgpgin 1210332
pgpgout 48916976
pswpin 18231
pswpout 409577
pgalloc_dma 0
"""
# /proc/swaps in the v2 VM with zram on (sizes in KiB), and on a node without swap.
GOLDEN_SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/zram0                              partition\t262140\t\t81920\t\t100
"""
NO_SWAP = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
# memory.pressure of a thrashing cgroup (cgroup v2, the seed's example).
GOLDEN_PRESSURE = """\
some avg10=17.42 avg60=3.24 avg300=0.68 total=2649745
full avg10=13.37 avg60=2.41 avg300=0.50 total=2098080
"""


def test_vmstat_counters() -> None:
    assert parse_vmstat(GOLDEN_VMSTAT) == (18231, 409577)


@pytest.mark.parametrize(
    "text",
    ["nr_free_pages 1\n", "pswpin 1\n", "pswpin 1\npswpout x\n", "pswpin -1\npswpout 2\n", ""],
)
def test_vmstat_without_counters_is_one_error(text: str) -> None:
    with pytest.raises(CgroupFormatError):
        parse_vmstat(text)


def test_swaps() -> None:
    assert parse_swaps(GOLDEN_SWAPS) == [
        SwapArea("/dev/zram0", "partition", 262140 * 1024, 81920 * 1024)
    ]
    assert parse_swaps(NO_SWAP) == []
    assert parse_swaps("") == []
    assert parse_swaps(NO_SWAP + "/swapfile file big 0 -2\n") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOLDEN_PRESSURE, 13.37),
        ("some avg10=1.00 avg60=0.00 avg300=0.00 total=1\n", None),  # no full line
        ("full avg10=abc avg60=0.00\n", None),
        ("full avg10=250.00 avg60=0.00\n", None),
        ("full avg10=nan\n", None),
        ("", None),
    ],
)
def test_full_avg10(text: str, expected: float | None) -> None:
    assert parse_full_avg10(text) == expected
