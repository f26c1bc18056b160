"""Text that is not ours, made safe to show: cgroup names, comms, answers.

A cgroup directory's name is bytes: Linux takes any byte but '/' and NUL, so a
name need not be UTF-8. Python hands such a name over with each bad byte as a
lone surrogate (U+DC80..U+DCFF, PEP 383 surrogateescape), which no UTF-8
encoder takes: one such name made every /metrics scrape fail (prometheus_client
encodes strictly) and put lone surrogates in JSON log lines, which strict
parsers refuse. printable() writes each as the byte it stands for ('\\xff'),
so every output encodes; escape_controls() keeps one line one line.
"""

from __future__ import annotations

import re

# C0, DEL, C1, line/paragraph separators, and the bidi marks and overrides that
# make a terminal show a line in another order than it was written
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ESCAPED_BYTES = range(0xDC80, 0xDD00)  # surrogateescape's: byte 0x80..0xff


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if code in _ESCAPED_BYTES else f"\\u{code:04x}"


def printable(text: str) -> str:
    """text with every lone surrogate written as the byte (or code) it stands for:
    encodable as UTF-8, and a name that was not UTF-8 still tells its bytes."""
    if text.isascii():
        return text
    return _SURROGATE.sub(_escape_surrogate, text)


def escape_controls(text: str) -> str:
    """Control characters (and bidi controls) as visible escapes: 'a\\nb' stays on
    one line, and a line reads in the order it was written."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

    return _CONTROL.sub(escape, printable(text))
