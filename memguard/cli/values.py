"""The value parsers of `memguard run`'s options (memguard.cli.options): text in,
a value out, or ValueError with a one-line reason (the option names its source).

Every number has a range (Bounded: its help says it, its error repeats it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memguard.backends.wake import V2_SIGNALS
from memguard.policy.model import CacheLimit
from memguard.units import (
    MAX_SIZE_BYTES,
    parse_duration,
    parse_listen,
    parse_ratio,
    parse_size,
    parse_whole_number,
    shown,
)

MAX_PATH_CHARS = 4096
SUN_PATH_MAX_BYTES = 107  # sockaddr_un.sun_path (108) less its NUL
PSI_WINDOW_MIN_US, PSI_WINDOW_MAX_US = 500_000, 10_000_000


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{shown(text)} is not one of {', '.join(allowed)}")
        return text

    return parse


@dataclass(frozen=True)
class Bounded:
    """A number parser with its range, as a flag writes it ('0s' .. '1h')."""

    parse: Callable[[str], Any]
    low: str
    high: str

    def __call__(self, text: str) -> Any:
        return self.parse(text)

    @property
    def range_text(self) -> str:
        return f"{self.low} .. {self.high}"


def duration(low: str, high: str) -> Bounded:
    low_s, high_s = parse_duration(low), parse_duration(high)
    return Bounded(lambda text: parse_duration(text, low_s, high_s), low, high)


def size(low: str, high: str) -> Bounded:
    low_bytes, high_bytes = parse_size(low), parse_size(high)
    return Bounded(lambda text: parse_size(text, low_bytes, high_bytes), low, high)


def optional_duration(low: str, high: str) -> Bounded:
    """A duration in range, or '' (None: the default decided elsewhere)."""
    low_s, high_s = parse_duration(low), parse_duration(high)

    def parse(text: str) -> float | None:
        return parse_duration(text, low_s, high_s) if text.strip() else None

    return Bounded(parse, low, high)


def whole_number(low: int, high: int) -> Bounded:
    return Bounded(lambda text: parse_whole_number(text, low, high), str(low), str(high))


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{shown(text)} is not a boolean (true/false)")


def tripwire(text: str) -> str:
    """auto, on or off; the boolean words the switch took still mean on and off."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return "on" if boolean(text) else "off"
    except ValueError:
        raise ValueError(f"{shown(text)} is not one of auto, on, off") from None


def nonempty_path(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty path")
    return text


def optional_path(text: str) -> str:
    return text.strip()


def absolute_path(text: str) -> str:
    path = text.strip()
    if not path.startswith("/"):
        raise ValueError(f"{shown(text)} is not an absolute path")
    if "\0" in path or len(path) > MAX_PATH_CHARS:
        raise ValueError(f"{shown(text)} is not a usable path")
    return path


def directory(text: str) -> str:
    path = text.strip()
    if not path:
        raise ValueError("an empty path")
    if "\0" in path or len(path) > MAX_PATH_CHARS:
        raise ValueError(f"{shown(text)} is not a usable path")
    return path


def status_socket(text: str) -> str:
    """auto, off or a unix socket path (memguard.cli.statussocket), made absolute."""
    stripped = text.strip()
    if stripped in ("auto", "off"):
        return stripped
    if not stripped or "\0" in stripped:
        raise ValueError(f"{shown(text)} is not auto, off or a path")
    path = os.path.abspath(stripped)
    if len(os.fsencode(path)) > SUN_PATH_MAX_BYTES:
        raise ValueError(f"{shown(text)} is longer than a unix socket path may be (107 bytes)")
    return path


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)


def namespaces(text: str) -> frozenset[str]:
    """A comma list of namespace names (DNS-1123 labels); empty: none."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if not _NAMESPACE.fullmatch(name):
            raise ValueError(f"{shown(name)} is not a namespace name (a DNS-1123 label)")
    return frozenset(names)


def listen_address(text: str) -> str:
    if text.strip():
        parse_listen(text)  # raises ValueError with the expected form
    return text.strip()


def signals(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - V2_SIGNALS
    if not chosen or unknown:
        raise ValueError(f"{shown(text)}: choose from events, psi, poll (comma-separated)")
    return chosen


def psi_trigger(text: str) -> str:
    parts = text.split()
    well_formed = (
        len(parts) == 3 and parts[0] in ("some", "full")
        and all(part.isascii() and part.isdigit() for part in parts[1:])
    )  # fmt: skip
    if not well_formed:
        raise ValueError(f"{shown(text)} is not 'some|full STALL_US WINDOW_US'")
    # A number longer than the largest window is out of range: never int() it.
    too_long = len(str(PSI_WINDOW_MAX_US))
    stall_us, window_us = (
        int(part) if len(part.lstrip("0")) <= too_long else PSI_WINDOW_MAX_US + 1
        for part in parts[1:]
    )
    if not PSI_WINDOW_MIN_US <= window_us <= PSI_WINDOW_MAX_US or not 0 < stall_us <= window_us:
        raise ValueError(
            f"{shown(text)}: need 500000 <= WINDOW_US <= 10000000 and 0 < STALL_US <= WINDOW_US"
        )
    return " ".join(parts)


def cache_limit(text: str) -> CacheLimit | None:
    """'' (off), '25%' (a share of the limit) or a size ('512Mi', '1G', bytes)."""
    stripped = text.strip()
    if not stripped:
        return None
    if stripped.endswith("%"):
        ratio = parse_ratio(stripped)
        if ratio <= 0:
            raise ValueError(f"{shown(text)}: a share must be above 0%")
        return CacheLimit(ratio=ratio)
    return CacheLimit(size_bytes=parse_size(stripped, 1, MAX_SIZE_BYTES))
