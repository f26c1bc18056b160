"""Memory QoS classes and direct annotations (the NRI memory-qos plugin's job), pure.

Configuration (from the --config file):

    classes: [{name: silver, swaplimitratio: 0.2}, ...]
    unifiedannotations: [memory.high, memory.swap.max]

Pod annotations, with the plugin's exact keys:

    class.memory-qos.nri.io: silver            every container of the pod
    class.memory-qos.nri.io/c0: bronze         container c0 (overrides the pod's)
    class.memory-qos.nri.io/c1: ""             container c1: no class
    memory.high.memory-qos.nri.io/c0: max      a cgroup file, if allow-listed

A class with swaplimitratio r gives memory.high = limit x (1 - r), rounded down
to a page, and memory.swap.max = max when r > 0. Direct annotations override
the class's values. Any problem (unknown class, a file not in
unifiedannotations, a malformed value) means nothing is written for the
container: a half-applied setting is worse than none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from memguard.kernel.names import HIGH_FILE, SWAP_MAX_FILE

ANNOTATION_SUFFIX = ".memory-qos.nri.io"
CLASS_KEY = "class" + ANNOTATION_SUFFIX
MAX_VALUE_CHARS = 64


@dataclass(frozen=True, slots=True)
class QosClass:
    name: str
    swap_limit_ratio: Fraction  # 0 .. 1, exact (parsed from its decimal text)


@dataclass(frozen=True, slots=True)
class QosConfig:
    classes: Mapping[str, QosClass] = field(default_factory=dict)
    unified_files: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        return bool(self.classes or self.unified_files)


@dataclass(frozen=True, slots=True)
class QosPlan:
    """What to write into one container cgroup, or why nothing is written."""

    writes: Mapping[str, str] = field(default_factory=dict)  # file -> value
    problems: tuple[str, ...] = ()  # each one a Warning; nothing is written
    notes: tuple[str, ...] = ()  # said, not warned (e.g. unlimited memory)
    class_name: str | None = None


def _file_name(text: Any, where: str) -> str:
    name_ok = isinstance(text, str) and text.isascii() and text.startswith("memory.")
    if not name_ok or len(text) == len("memory.") or ".." in text or text.endswith("."):
        raise ValueError(f"{where}: {text!r} is not a cgroup memory file such as memory.high")
    if not all(c.isalnum() or c in "._" for c in text):
        raise ValueError(f"{where}: {text!r} is not a cgroup memory file such as memory.high")
    return str(text)


def _ratio(value: Any, where: str) -> Fraction:
    """0.0 .. 1.0 as written ("0.07" is exactly 7/100: no float rounding in high_for)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where}: swaplimitratio {value!r} is not a number from 0.0 to 1.0")
    try:
        ratio = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"{where}: swaplimitratio {value!r} is not a number from 0.0 to 1.0"
        ) from None
    if not 0 <= ratio <= 1:
        raise ValueError(f"{where}: swaplimitratio {value!r} is not from 0.0 to 1.0")
    return ratio


def parse_qos_config(classes: Any, unified: Any) -> QosConfig:
    """The plugin's `classes` and `unifiedannotations` values; ValueError names the culprit."""
    if classes is not None and not isinstance(classes, list):
        raise ValueError("classes: expected a list of {name, swaplimitratio}")
    if unified is not None and not isinstance(unified, list):
        raise ValueError("unifiedannotations: expected a list of cgroup file names")
    found: dict[str, QosClass] = {}
    for index, entry in enumerate(classes or []):
        where = f"classes[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected {{name: ..., swaplimitratio: ...}}")
        unknown = set(entry) - {"name", "swaplimitratio"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: a class needs a name")
        if name in found:
            raise ValueError(f"{where}: class {name!r} is defined twice")
        found[name] = QosClass(name, _ratio(entry.get("swaplimitratio", 0), where))
    files = frozenset(
        _file_name(name, f"unifiedannotations[{index}]") for index, name in enumerate(unified or [])
    )
    return QosConfig(found, files)


def _split(key: str) -> tuple[str, str | None]:
    base, slash, container = key.partition("/")
    return base, (container if slash else None)


def _for_container(
    annotations: Mapping[str, str], container: str
) -> Iterable[tuple[str, str, str]]:
    """(base key, value, full key) of the memory-qos annotations that reach container.

    The container's own keys come after the pod's, so they win when folded.
    """
    pod_wide, own = [], []
    for key, value in sorted(annotations.items()):
        base, target = _split(key)
        if not base.endswith(ANNOTATION_SUFFIX):
            continue
        if target is None:
            pod_wide.append((base, value, key))
        elif target == container:
            own.append((base, value, key))
    return [*pod_wide, *own]


def _bad_value(value: str) -> bool:
    too_long = len(value) > MAX_VALUE_CHARS
    return too_long or not value.isprintable() or any(c.isspace() for c in value)


def plan_memory_qos(
    annotations: Mapping[str, str],
    container: str,
    limit_bytes: int | None,
    page_bytes: int,
    config: QosConfig,
) -> QosPlan:
    """The settings for one container from its pod's annotations."""
    class_value, direct, problems = _annotated(annotations, container, config)
    writes: dict[str, str] = {}
    notes: list[str] = []
    chosen = class_value or None
    if chosen is not None:
        qos_class = config.classes.get(chosen)
        if qos_class is None:
            known = ", ".join(sorted(config.classes)) or "none configured"
            problems.append(f"unknown memory QoS class {chosen!r} (known: {known})")
        else:
            writes.update(_class_writes(qos_class, limit_bytes, page_bytes, notes))
    if problems:
        return QosPlan(problems=tuple(problems), class_name=chosen)
    writes.update(direct)
    return QosPlan(writes, (), tuple(notes), chosen)


def _annotated(
    annotations: Mapping[str, str], container: str, config: QosConfig
) -> tuple[str | None, dict[str, str], list[str]]:
    """The class annotation's value, the direct settings (file -> value) and the
    problems with them."""
    class_value: str | None = None
    chosen_direct: dict[str, tuple[str, str]] = {}  # file -> (value, key): the container's wins
    problems: list[str] = []
    for base, value, key in _for_container(annotations, container):
        if base == CLASS_KEY:
            class_value = value.strip()
            continue
        file = base.removesuffix(ANNOTATION_SUFFIX)
        if file not in config.unified_files:
            allowed = ", ".join(sorted(config.unified_files)) or "none"
            problems.append(f"{key}: {file} is not in unifiedannotations (allowed: {allowed})")
        else:
            chosen_direct[file] = (value.strip(), key)
    direct: dict[str, str] = {}
    for file, (value, key) in chosen_direct.items():
        if _bad_value(value):
            problems.append(f"{key}: {value!r} is not a cgroup file value")
        elif value:  # an empty value removes the pod's setting
            direct[file] = value
    return class_value, direct, problems


def _class_writes(
    qos_class: QosClass, limit_bytes: int | None, page_bytes: int, notes: list[str]
) -> dict[str, str]:
    writes: dict[str, str] = {}
    if limit_bytes is None:
        notes.append(f"class {qos_class.name}: no memory limit, so no memory.high")
    else:
        high_bytes = high_for(limit_bytes, qos_class.swap_limit_ratio, page_bytes)
        writes[HIGH_FILE] = str(high_bytes)
    if qos_class.swap_limit_ratio > 0:
        writes[SWAP_MAX_FILE] = "max"
    return writes


def high_for(limit_bytes: int, swap_limit_ratio: Fraction | float, page_bytes: int) -> int:
    """limit x (1 - ratio), rounded down to a whole page (at least one page).

    Exact arithmetic: a float ratio is taken as the decimal it prints as (0.07 is 7/100).
    """
    ratio = (
        Fraction(str(swap_limit_ratio)) if isinstance(swap_limit_ratio, float) else swap_limit_ratio
    )
    keep = math.floor(limit_bytes * (1 - ratio))
    return max(page_bytes, keep // page_bytes * page_bytes)
