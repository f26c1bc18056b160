"""The value parsers of `memguard run`'s options (memguard.cli.options): text in,
a value out, or ValueError with a one-line reason (the option names its source).

Rules, the same for a flag, an environment variable and the --config file:
- Every number has a range (Bounded: its help says it, its error repeats it).
- A value is taken as written: no spaces in or around a number, a boolean or
  a choice ('5 s', ' 5s', 'noop ' are refused); only the comma lists
  (--v2-signals, --protected-namespaces) take spaces after their commas, and
  --psi-trigger is words.
- Booleans are true or false (also True, TRUE, False, FALSE, as YAML writes
  them); empty is false. yes/no/on/off/1/0 are refused.
- Sizes are whole bytes with a Kubernetes quantity suffix, case-sensitive
  (Ki Mi Gi Ti Pi Ei, k M G T P E), optionally followed by B: 1.5Gi is a
  size, 1.5 (bytes), 1mi and 1MI are not.
- Every value repeated in an error is cut (shown(): at most ~60 characters).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memguard.backends.wake import V2_SIGNALS
from memguard.policy.model import CacheLimit
from memguard.units import (
    DURATION_HELP,
    MAX_SIZE_BYTES,
    RATIO_HELP,
    SIZE_HELP,
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
MAX_HOST_CHARS = 253  # a DNS name's longest text form
TRUE_WORDS = ("true", "True", "TRUE")
FALSE_WORDS = ("false", "False", "FALSE")
SIZE_SUFFIXES = "Ki Mi Gi Ti Pi Ei, k M G T P E"
# A size as the flags take it: a Kubernetes quantity suffix (case-sensitive),
# optionally followed by B; the number ASCII digits with at most one point.
_SIZE = re.compile(r"(?:[0-9]+(?:\.([0-9]+))?|\.([0-9]+))((?:[KMGTPE]i|[kMGTPE])B?)?", re.ASCII)
_MAX_FRACTION_DIGITS = 18  # 1Ei = 2**60 has no factor 5, 1E = 10**18: more is no whole byte


def _spaced(text: str) -> bool:
    return any(character.isspace() for character in text)


def _refuse_spaces(text: str, what: str) -> None:
    if _spaced(text):
        raise ValueError(f"{shown(text)} is not {what} (write it without spaces)")


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


def strict_duration(text: str, low_s: float, high_s: float) -> float:
    _refuse_spaces(text, DURATION_HELP)
    return parse_duration(text, low_s, high_s)


def strict_size(text: str, low_bytes: int, high_bytes: int) -> int:
    """Whole bytes from '512Ki', '1.5Gi', '1MB', '1048576' (module docstring)."""
    _refuse_spaces(text, SIZE_HELP)
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{shown(text)} is not {SIZE_HELP} (suffixes as Kubernetes writes them, "
            f"case-sensitive: {SIZE_SUFFIXES}; B optional)"
        )
    fraction = (match.group(1) or match.group(2) or "").rstrip("0")
    if fraction:  # whole bytes: fraction * multiplier must be a multiple of 10**digits
        multiplier = parse_size("1" + match.group(3)) if match.group(3) else 1
        whole = len(fraction) <= _MAX_FRACTION_DIGITS and (
            int(fraction) * multiplier % 10 ** len(fraction) == 0
        )
        if not whole:
            raise ValueError(f"{shown(text)} is not a whole number of bytes")
    return parse_size(text, low_bytes, high_bytes)


def duration(low: str, high: str) -> Bounded:
    low_s, high_s = parse_duration(low), parse_duration(high)
    return Bounded(lambda text: strict_duration(text, low_s, high_s), low, high)


def size(low: str, high: str) -> Bounded:
    low_bytes, high_bytes = parse_size(low), parse_size(high)
    return Bounded(lambda text: strict_size(text, low_bytes, high_bytes), low, high)


def optional_duration(low: str, high: str) -> Bounded:
    """A duration in range, or '' (None: the default decided elsewhere)."""
    low_s, high_s = parse_duration(low), parse_duration(high)

    def parse(text: str) -> float | None:
        return strict_duration(text, low_s, high_s) if text else None

    return Bounded(parse, low, high)


def whole_number(low: int, high: int) -> Bounded:
    def parse(text: str) -> int:
        _refuse_spaces(text, "a whole number (digits 0-9)")
        return parse_whole_number(text, low, high)

    return Bounded(parse, str(low), str(high))


def ratio(text: str) -> float:
    """A ratio in [0, 1]: '0.02' or '2%'."""
    _refuse_spaces(text, RATIO_HELP)
    return parse_ratio(text)


def boolean(text: str) -> bool:
    """true or false (module docstring); empty: false."""
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS or text == "":
        return False
    raise ValueError(f"{shown(text)} is not a boolean: write true or false")


def tripwire(text: str) -> str:
    """auto, on or off; true and false (the switch it was) still mean on and off."""
    if text in ("auto", "on", "off"):
        return text
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return "on" if boolean(text) else "off"
    raise ValueError(f"{shown(text)} is not one of auto, on, off")


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
    """auto, off or an absolute unix socket path (memguard.cli.statussocket), as written:
    a relative one is refused (`AUTO` is not $PWD/AUTO)."""
    if text in ("auto", "off"):
        return text
    if not text.startswith("/") or "\0" in text:
        raise ValueError(f"{shown(text)} is not auto, off or an absolute path")
    if len(os.fsencode(text)) > SUN_PATH_MAX_BYTES:
        raise ValueError(f"{shown(text)} is longer than a unix socket path may be (107 bytes)")
    return text


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)


def namespaces(text: str) -> frozenset[str]:
    """A comma list of namespace names (DNS-1123 labels); empty: none."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if not _NAMESPACE.fullmatch(name):
            raise ValueError(f"{shown(name)} is not a namespace name (a DNS-1123 label)")
    return frozenset(names)


def host_problem(host: str) -> str | None:
    """Why getaddrinfo() cannot even look host up (None: it can try): an IP address,
    or a DNS name of at most 253 characters whose dot-separated labels have 1 to 63
    (the IDNA encoding Python's resolver does first: it raises UnicodeError, not
    socket.gaierror). For --listen here; `memguard status --url` can use it too."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if len(host) > MAX_HOST_CHARS:
        return f"a host name is at most {MAX_HOST_CHARS} characters"
    try:
        host.encode("idna")
    except UnicodeError as error:
        reason = re.search(r"\(UnicodeError: (.*)\)$", str(error))
        detail = reason.group(1) if reason else "not IDNA"
        return f"not a host name: {detail}; labels between dots have 1 to 63 characters"
    return None


def listen_address(text: str) -> str:
    """'' (off) or HOST:PORT, the host an IP address or a name that can be looked up."""
    if not text:
        return ""
    _refuse_spaces(text, "HOST:PORT (e.g. 0.0.0.0:9637 or :9637)")
    host, _ = parse_listen(text)  # raises ValueError with the expected form
    problem = host_problem(host)
    if problem is not None:
        raise ValueError(f"{shown(text)}: cannot resolve {shown(host)} ({problem})")
    return text


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
    if not text:
        return None
    if text.endswith("%"):
        share = ratio(text)
        if share <= 0:
            raise ValueError(f"{shown(text)}: a share must be above 0%")
        return CacheLimit(ratio=share)
    return CacheLimit(size_bytes=strict_size(text, 1, MAX_SIZE_BYTES))
