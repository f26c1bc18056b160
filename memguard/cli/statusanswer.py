"""What `memguard status` accepts as an agent's /status answer: the schema of
memguard.cli.statuspage (version 1), checked field by field before anything is
shown. Pure: bytes in, a page out, or NotStatus with a one-line reason.

Rules:
- JSON only, UTF-8, no NaN/Infinity, nested at most MAX_DEPTH deep (a body of
  100,000 brackets is refused here, not by a RecursionError).
- Every field the views read must be there with its type: sizes and counts are
  whole numbers >= 0 below 2**64 (a boolean is not a number), times and rates
  finite numbers below 2**63 in size, texts at most MAX_TEXT_CHARS. Fields the
  views do not read are checked when present; fields this version does not
  know are ignored (a newer agent may add some).
- A reason names the field (`containers[0].usage_bytes`) and what it was, never
  the value's text: text from the answer is only ever shown escaped
  (memguard.text.escape_controls).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

VERSION = 1
MAX_DEPTH = 16  # the page itself is 4 deep
MAX_TEXT_CHARS = 4096  # PATH_MAX: a cgroup path is the longest text in a page
MAX_WHOLE = 1 << 64  # sizes and counts
MAX_NUMBER = float(1 << 63)  # times and rates: a cell stays a cell

Check = Callable[[object], bool]


class NotStatus(ValueError):
    """The answer is not memguard's status page (the message says why)."""


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_WHOLE


def _number(value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and abs(value) < MAX_NUMBER


def _text(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT_CHARS


def _flag(value: object) -> bool:
    return isinstance(value, bool)


def _texts(value: object) -> bool:
    return isinstance(value, list) and all(_text(item) for item in value)


def _or_null(check: Check) -> Check:
    return lambda value: value is None or check(value)


# field: (check, required) - required: the views read it
AGENT: Mapping[str, tuple[Check, bool]] = {
    "pid": (_whole, True),
    "parent": (_text, True),
    "backend": (_text, True),
    "policy": (_text, True),
    "dry_run": (_flag, True),
    "started_at": (_or_null(_number), False),
    "guarded": (_whole, True),
    "armed": (_whole, True),
    "waiting_for_fds": (_whole, False),
    "ready": (_flag, True),
    "not_ready": (_texts, True),
}
ROW: Mapping[str, tuple[Check, bool]] = {
    "cgroup": (_text, True),
    "namespace": (_or_null(_text), True),
    "pod": (_or_null(_text), True),
    "container": (_or_null(_text), True),
    "pod_uid": (_or_null(_text), False),
    "container_id": (_or_null(_text), False),
    "qos_class": (_or_null(_text), False),
    "armed": (_flag, False),
    "usage_bytes": (_or_null(_whole), True),
    "limit_bytes": (_or_null(_whole), True),
    "threshold_bytes": (_or_null(_whole), True),
    "cache_bytes": (_or_null(_whole), True),
    "reclaimable_cache_bytes": (_or_null(_whole), False),
    "fill_rate_bytes_s": (_or_null(_number), True),
    "read_age_s": (_or_null(_number), True),
    "last_action": (_or_null(lambda value: isinstance(value, dict)), True),
}
LAST_ACTION: Mapping[str, tuple[Check, bool]] = {
    "kind": (_text, True),
    "action": (_or_null(_text), False),
    "dry_run": (_flag, True),
    "at": (_or_null(_number), False),
    "ago_s": (_or_null(_number), True),
}
PAGE: Mapping[str, tuple[Check, bool]] = {
    "generated_at": (_or_null(_number), False),
    "omitted": (_whole, False),
}


def _what(value: object) -> str:
    """What a value is, in words (never its text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value:.6g}" if math.isfinite(value) else "not a finite number"
    if isinstance(value, str):
        return f"text of {len(value)} characters" if len(value) > MAX_TEXT_CHARS else "text"
    return "a list" if isinstance(value, list) else "an object"


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise NotStatus(f"{where} is {_what(value)}, not an object")
    return value


def _fields(data: dict[str, Any], schema: Mapping[str, tuple[Check, bool]], where: str) -> None:
    for name, (check, required) in schema.items():
        field = f"{where}.{name}" if where else name
        if name not in data:
            if required:
                raise NotStatus(f"no {field}")
        elif not check(data[name]):
            raise NotStatus(f"{field} is {_what(data[name])}")


def _depth_at_most(value: object, limit: int) -> bool:
    """Whether value nests at most limit lists/objects deep (no recursion)."""
    level: list[object] = [value]
    for _ in range(limit + 1):
        inner: list[object] = []
        for item in level:
            if isinstance(item, dict):
                inner.extend(item.values())
            elif isinstance(item, list):
                inner.extend(item)
        if not inner:
            return True
        level = inner
    return False


def _refuse_constant(name: str) -> object:
    raise NotStatus(f"{name} in the JSON")


def parse(body: bytes) -> dict[str, Any]:
    """The page in body, checked (module docstring); NotStatus otherwise."""
    try:
        page: object = json.loads(body, parse_constant=_refuse_constant)
    except NotStatus:
        raise
    except RecursionError:
        raise NotStatus(f"JSON nested deeper than {MAX_DEPTH}") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, a number too long
        raise NotStatus("not JSON") from None
    return check(page)


def check(page: object) -> dict[str, Any]:
    """page itself if it is a version 1 status page; NotStatus otherwise."""
    if not _depth_at_most(page, MAX_DEPTH):
        raise NotStatus(f"JSON nested deeper than {MAX_DEPTH}")
    checked = _object(page, "the answer")
    version = checked.get("version")
    if version != VERSION or not _whole(version):
        if "version" not in checked:
            raise NotStatus("no version")
        shown = f"version {version}" if _whole(version) else f"version is {_what(version)}"
        raise NotStatus(f"{shown}; this memguard status reads version {VERSION}")
    _fields(checked, PAGE, "")
    if "agent" not in checked:
        raise NotStatus("no agent")
    _fields(_object(checked["agent"], "agent"), AGENT, "agent")
    containers = checked.get("containers")
    if not isinstance(containers, list):
        raise NotStatus(
            "no containers"
            if containers is None
            else f"containers is {_what(containers)}, not a list"
        )
    for index, item in enumerate(containers):
        where = f"containers[{index}]"
        row = _object(item, where)
        _fields(row, ROW, where)
        if row["last_action"] is not None:
            _fields(
                _object(row["last_action"], f"{where}.last_action"),
                LAST_ACTION,
                f"{where}.last_action",
            )
    return checked
