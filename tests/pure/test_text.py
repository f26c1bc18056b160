"""memguard.text: names that are not ours, made safe to show."""

from __future__ import annotations

import os

import pytest

from memguard.text import escape_controls, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain/ascii", "plain/ascii"),
        (os.fsdecode(b"bad\xff\xfe"), "bad\\xff\\xfe"),  # the bytes the name had
        (os.fsdecode(b"caf\xc3\xa9"), "caf\u00e9"),  # valid UTF-8 stays text
        ("\U0001f480 skull", "\U0001f480 skull"),  # beyond the BMP: one code point, kept
        ("lone \ud800 high", "lone \\ud800 high"),  # not surrogateescape's: its code
    ],
)
def test_printable_writes_lone_surrogates_as_what_they_stand_for(text: str, shown: str) -> None:
    assert printable(text) == shown
    printable(text).encode("utf-8")  # always encodable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb", "a\\x0ab"),
        ("esc\x1b[31m", "esc\\x1b[31m"),
        ("\x7f\x85", "\\x7f\\x85"),
        ("rtl\u202eevil", "rtl\\u202eevil"),
        ("iso\u2066late\u2069", "iso\\u2066late\\u2069"),
        ("sep\u2028", "sep\\u2028"),
        (os.fsdecode(b"x\xff\n"), "x\\xff\\x0a"),
        ("tab\tok?", "tab\\x09ok?"),
    ],
)
def test_escape_controls_keeps_a_line_one_line_in_its_order(text: str, shown: str) -> None:
    assert escape_controls(text) == shown
