"""The node's swap: /proc/vmstat's swap I/O counters and /proc/swaps.

Kernel facts (Documentation/filesystems/proc.rst; read on this host's 6.18 and
the v2 VM's Debian 6.1):
- /proc/vmstat is "name value" lines; pswpin and pswpout count pages read from
  and written to swap since boot (unsigned long: they only grow, until a
  reboot). Neither is namespaced: a container reads the node's.
- There is no notification for swap I/O: the only way to a rate is sampling.
- /proc/swaps is a header line, then one line per active swap area:
  "Filename Type Size Used Priority" (Size and Used in KiB). A node without
  swap has the header alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from memguard.errors import CgroupFormatError
from memguard.kernel.cgroupfs import kernel_error

VMSTAT_PATH = "/proc/vmstat"
SWAPS_PATH = "/proc/swaps"
MAX_READ_BYTES = 1 << 16  # /proc/vmstat is ~4-8 KiB; a bound, not a guess
MAX_SWAP_AREAS = 64  # MAX_SWAPFILES is 32 (less the migration/hwpoison entries)


@dataclass(frozen=True, slots=True)
class SwapArea:
    filename: str
    kind: str  # partition | file
    size_bytes: int
    used_bytes: int


def _read(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return file.read(MAX_READ_BYTES).decode("ascii", "replace")
    except OSError as error:
        raise kernel_error(f"read {path}", error) from error


def parse_vmstat(text: str) -> tuple[int, int]:
    """(pswpin, pswpout); CgroupFormatError when either is missing or not a count."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("pswpin", "pswpout"):
            value = value.strip()
            if not (value.isascii() and value.isdigit()):
                raise CgroupFormatError(f"{VMSTAT_PATH}: {name} is {value[:40]!r}")
            found[name] = int(value)
    if len(found) != 2:
        raise CgroupFormatError(f"{VMSTAT_PATH}: no pswpin/pswpout (CONFIG_SWAP off?)")
    return found["pswpin"], found["pswpout"]


def read_vmstat(path: str = VMSTAT_PATH) -> tuple[int, int]:
    """(pswpin, pswpout) now; KernelError or CgroupFormatError when unreadable."""
    return parse_vmstat(_read(path))


def parse_swaps(text: str) -> list[SwapArea]:
    """The active swap areas; malformed lines skipped."""
    areas = []
    for line in text.splitlines()[1 : MAX_SWAP_AREAS + 1]:
        parts = line.split()
        if len(parts) == 5 and parts[2].isdigit() and parts[3].isdigit():
            areas.append(SwapArea(parts[0], parts[1], int(parts[2]) * 1024, int(parts[3]) * 1024))
    return areas


def read_swaps(path: str = SWAPS_PATH) -> list[SwapArea]:
    """The node's active swap areas (KernelError when unreadable)."""
    return parse_swaps(_read(path))
