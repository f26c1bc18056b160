"""Parsing sizes, ratios and durations from flags, env vars and config files.

Sizes follow Kubernetes quantities: binary suffixes Ki Mi Gi Ti Pi Ei are powers
of 1024, decimal suffixes k M G T P E are powers of 1000; a trailing B is
allowed (KiB, MiB, MB, GB ...) and lowercase kb/mb/gb are read as decimal.
A plain number is bytes. Fractions round down to whole bytes.
Ratios are 0.02 or 2%. Durations are 10, 10s, 500ms, 1.5m, 2h (plain = seconds).
Every error is a ValueError whose message says what was expected.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")
_BINARY = {"ki": 1, "mi": 2, "gi": 3, "ti": 4, "pi": 5, "ei": 6}
_DECIMAL = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(ms|s|m|h)?\s*$")
_DURATION_SCALE_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

SIZE_HELP = "a size such as 1048576, 512Ki, 1Mi, 1MiB, 1M, 1MB or 1.5Gi"
RATIO_HELP = "a ratio such as 0.02 or 2%"
DURATION_HELP = "a duration such as 30, 30s, 500ms, 5m or 1h"


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


def parse_size(text: str) -> int:
    """Bytes from a size string; ValueError with a helpful message otherwise."""
    match = _SIZE_RE.match(text)
    multiplier = _size_multiplier(match.group(2)) if match else None
    if match is None or multiplier is None:
        raise ValueError(f"{text!r} is not {SIZE_HELP}")
    return int(Decimal(match.group(1)) * multiplier)  # exact: no float rounding


def parse_ratio(text: str) -> float:
    """A ratio in [0, 1] from '0.02' or '2%'."""
    stripped = text.strip()
    percent = stripped.endswith("%")
    number = stripped[:-1].strip() if percent else stripped
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not {RATIO_HELP}") from None
    if percent:
        value /= 100.0
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is out of range: a ratio is between 0 and 1 (0% and 100%)")
    return value


def parse_duration(text: str) -> float:
    """Seconds from '10', '10s', '500ms', '1.5m' or '2h'."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    return float(match.group(1)) * _DURATION_SCALE_S[match.group(2)]


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
    """'127.0.0.1:9637' or ':9637' (all addresses); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:9637 or :9637)")
    return host.strip("[]") or "0.0.0.0", int(port)
