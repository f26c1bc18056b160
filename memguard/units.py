"""Parsing sizes, ratios, durations and whole numbers from flags, env vars and config files.

Sizes follow Kubernetes quantities: binary suffixes Ki Mi Gi Ti Pi Ei are powers
of 1024, decimal suffixes k M G T P E are powers of 1000; a trailing B is
allowed (KiB, MiB, MB, GB ...) and lowercase kb/mb/gb are read as decimal.
A plain number is bytes. Fractions round down to whole bytes.
Ratios are 0.02 or 2%. Durations are 10, 10s, 500ms, 1.5m, 2h (plain = seconds).
Every error is a ValueError whose message says what was expected.

Rules, because these values come from flags, env vars and files:
- Digits are ASCII only: "٣" (an Arabic-Indic three) passes str.isdigit() and
  int() reads it as 3; here it is not a number.
- Every number has a range and the error says it: sizes, durations and whole
  numbers take bounds (the flag's own; at most MAX_SIZE_BYTES and
  MAX_DURATION_S whatever the flag). Values are compared as exact decimals and
  a number too long for any range is refused without building a giant int or
  an infinite float.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, localcontext

_NUMBER = r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)"  # ASCII digits only: the patterns use re.ASCII
_SIZE_RE = re.compile(rf"^\s*{_NUMBER}\s*([A-Za-z]*)\s*$", re.ASCII)
_BINARY = {"ki": 1, "mi": 2, "gi": 3, "ti": 4, "pi": 5, "ei": 6}
_DECIMAL = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_DURATION_RE = re.compile(rf"^\s*{_NUMBER}\s*(ms|s|m|h)?\s*$", re.ASCII)
_DURATION_SCALE_S = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_MAX_DIGITS = 30  # integer digits of any number in range (2**62 has 19); longer is out of range
_PRECISION = 100  # decimal digits: exact for 30.30-digit numbers times any multiplier
_SHOWN_CHARS = 60

MAX_SIZE_BYTES = 2**62  # 4Ei: the cgroup v1 page counter's own maximum ("unlimited")
MAX_DURATION_S = 7 * 24 * 3600.0  # a week

SIZE_HELP = "a size such as 1048576, 512Ki, 1Mi, 1MiB, 1M, 1MB or 1.5Gi"
RATIO_HELP = "a ratio such as 0.02 or 2%"
DURATION_HELP = "a duration such as 30, 30s, 500ms, 5m or 1h"


def _exact(number: str) -> Decimal:
    """The value of an ASCII decimal number (_NUMBER); Infinity when too long for any range."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0")
    if len(whole) > _MAX_DIGITS:
        return Decimal("Infinity")
    return Decimal(f"{whole or 0}.{fraction[:_MAX_DIGITS] or 0}")


def shown(text: str) -> str:
    """The value quoted for an error message: repr (one line), at most ~60 characters."""
    return repr(text) if len(text) <= _SHOWN_CHARS else repr(text[:_SHOWN_CHARS]) + "..."


def _out_of_range(text: str, low: str, high: str) -> ValueError:
    return ValueError(f"{shown(text)} is out of range: at least {low}, at most {high}")


def _size_multiplier(suffix: str) -> int | None:
    """The multiplier for a size suffix, None when the suffix is not accepted."""
    if suffix in ("", "B", "b"):
        return 1
    lower = suffix.lower()
    if lower.endswith("ib") or (len(lower) == 2 and lower.endswith("i")):
        exponent = _BINARY.get(lower[:2])
        return None if exponent is None else 1024**exponent
    if len(lower) == 2 and lower.endswith("b"):
        exponent = _DECIMAL.get(lower[0])
        return None if exponent is None else 1000**exponent
    if len(suffix) == 1 and (suffix.isupper() or suffix == "k"):
        # Bare lowercase m/g/t... are rejected: "m" is Kubernetes' milli and
        # "1g" means GiB to docker but GB to Kubernetes.
        exponent = _DECIMAL.get(lower)
        return None if exponent is None else 1000**exponent
    return None


def format_size_bound(size_bytes: int) -> str:
    """A size as written in ranges and flags: '0', '1000', '64Gi', '4Ei' (parse_size reads it)."""
    for suffix, exponent in sorted(_BINARY.items(), key=lambda item: -item[1]):
        if size_bytes and size_bytes % 1024**exponent == 0:
            return f"{size_bytes // 1024**exponent}{suffix.capitalize()}"
    return str(size_bytes)


def parse_size(text: str, low_bytes: int = 0, high_bytes: int = MAX_SIZE_BYTES) -> int:
    """Bytes from a size string, within [low_bytes, high_bytes]; ValueError otherwise."""
    match = _SIZE_RE.match(text)
    multiplier = _size_multiplier(match.group(2)) if match else None
    if match is None or multiplier is None:
        raise ValueError(f"{shown(text)} is not {SIZE_HELP}")
    with localcontext() as context:
        context.prec = _PRECISION
        size = _exact(match.group(1)) * multiplier  # exact: no float rounding
    high_bytes = min(high_bytes, MAX_SIZE_BYTES)
    if not low_bytes <= size <= high_bytes:
        raise _out_of_range(text, format_size_bound(low_bytes), format_size_bound(high_bytes))
    return int(size)


def parse_ratio(text: str) -> float:
    """A ratio in [0, 1] from '0.02' or '2%'."""
    stripped = text.strip()
    percent = stripped.endswith("%")
    number = stripped[:-1].strip() if percent else stripped
    if not number.isascii() or "_" in number:  # float() reads "٣" as 3 and "1_0" as 10
        raise ValueError(f"{shown(text)} is not {RATIO_HELP}")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{shown(text)} is not {RATIO_HELP}") from None
    if percent:
        value /= 100.0
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{shown(text)} is out of range: a ratio is between 0 and 1 (0% and 100%)")
    return value


def format_duration(duration_s: float) -> str:
    """A duration as written in ranges and flags: '0s', '10ms', '1500ms', '5m', '1h'."""
    for unit, scale_s in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if duration_s >= scale_s and duration_s % scale_s == 0:
            return f"{int(duration_s // scale_s)}{unit}"
    if duration_s == 0:
        return "0s"
    milliseconds = duration_s * 1000
    if milliseconds == int(milliseconds):
        return f"{int(milliseconds)}ms"
    return f"{duration_s:g}s"


def parse_duration(text: str, low_s: float = 0.0, high_s: float = MAX_DURATION_S) -> float:
    """Seconds from '10', '10s', '500ms', '1.5m' or '2h', within [low_s, high_s]."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{shown(text)} is not {DURATION_HELP}")
    high_s = min(high_s, MAX_DURATION_S)
    with localcontext() as context:
        context.prec = _PRECISION
        duration_s = _exact(match.group(1)) * _DURATION_SCALE_S[match.group(2) or "s"]
    if not Decimal(repr(low_s)) <= duration_s <= Decimal(repr(high_s)):
        raise _out_of_range(text, format_duration(low_s), format_duration(high_s))
    return float(duration_s)


def parse_whole_number(text: str, low: int, high: int) -> int:
    """An ASCII whole number ('1024', ' 7 ') within [low, high]; ValueError otherwise."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{shown(text)} is not a whole number (digits 0-9)")
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(high)) or not low <= int(significant) <= high:
        raise _out_of_range(text, str(low), str(high))
    return int(significant)


def format_size(size_bytes: int | None) -> str:
    """Human size for logs: 'unlimited', '512B', '1.5KiB', '128.0MiB'."""
    if size_bytes is None:
        return "unlimited"
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{size_bytes}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9637' or ':9637' (all addresses); port 0 binds any free port."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"{shown(text)} is not HOST:PORT (e.g. 0.0.0.0:9637 or :9637)")
    if len(port.lstrip("0")) > 5 or int(port) > 65535:
        raise ValueError(f"{shown(text)}: the port is out of range: at least 0, at most 65535")
    return host.strip("[]") or "0.0.0.0", int(port)
