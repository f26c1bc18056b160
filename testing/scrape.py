"""A Prometheus text exposition, read the way a convention checker reads it.

parse() keeps the raw names (prometheus_client's own parser folds `_total`,
`_created` and the histogram suffixes into families, hiding what is on the
wire); problems() lists every way a scrape departs from the conventions
memguard follows (memguard.reports.metrics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STANDARD_PREFIXES = ("process_", "python_")  # prometheus_client's own collectors
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Values that say "no dimension here": a label that only ever has one of them is noise.
PLACEHOLDERS = frozenset({"all", "any", "total", "*", "none", "n/a", "default", "unknown"})
NON_BASE_UNIT = re.compile(
    r"_(milli|micro|nano)seconds?_|_(ms|us|ns|secs?|minutes?|hours?|days?|"
    r"kb|mb|gb|kib|mib|gib|kilobytes|megabytes|gigabytes|percent)_"
)
WANTS_SECONDS = re.compile(r"latency|duration|_time|_age|uptime|elapsed")
WANTS_BYTES = re.compile(r"usage|memory|size|reclaimed|_limit|threshold|rss|page_cache")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Family:
    name: str  # as on the TYPE line
    type: str
    help: str | None = None
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse(text: str) -> dict[str, Family]:
    """Families by TYPE-line name, each with its raw samples."""
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[len("# HELP ") :].partition(" ")
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert name not in families, f"two TYPE lines for {name}"
            current = families[name] = Family(name, kind, helps.get(name))
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match is not None, f"not a sample line: {line!r}"
            assert current is not None, f"a sample before any TYPE line: {line!r}"
            labels = dict(_LABEL.findall(match.group(3) or ""))
            current.samples.append((match.group(1), labels, float(match.group(4))))
    return families


def sample_names(text: str) -> set[str]:
    return {name for family in parse(text).values() for name, _, _ in family.samples}


def series_count(text: str) -> int:
    return sum(len(family.samples) for family in parse(text).values())


def value(text: str, name: str, **labels: str) -> float | None:
    """The one sample of name whose labels include these (None: no such sample)."""
    found = [
        number
        for family in parse(text).values()
        for sample, sample_labels, number in family.samples
        if sample == name and labels.items() <= sample_labels.items()
    ]
    assert len(found) <= 1, f"{len(found)} samples of {name} match {labels}"
    return found[0] if found else None


def label_values(text: str, name: str, label: str) -> set[str]:
    return {
        labels[label]
        for family in parse(text).values()
        for sample, labels, _ in family.samples
        if sample == name and label in labels
    }


# Labels naming who a series is about: their values are the workload's (every
# container may well be called "app"), so one value across a scrape is no defect.
IDENTITY_LABELS = frozenset({"namespace", "pod", "container", "cgroup"})


def problems(text: str) -> list[str]:
    """Every departure from the naming and labelling conventions, one line each."""
    found: list[str] = []
    for family in parse(text).values():
        found += _name_problems(family) + _label_problems(family)
    return found


def _name_problems(family: Family) -> list[str]:
    name, kind = family.name, family.type
    found = []
    if not name.startswith(("memguard_", *STANDARD_PREFIXES)):
        found.append(f"{name}: neither memguard_ nor a standard prefix")
    if not family.help:
        found.append(f"{name}: no HELP")
    if NON_BASE_UNIT.search(name + "_"):
        found.append(f"{name}: not in base units (seconds, bytes)")
    base = name.removesuffix("_total")
    if WANTS_SECONDS.search(base) and not base.endswith("_seconds"):
        found.append(f"{name}: a time, not in _seconds")
    if WANTS_BYTES.search(base) and not base.endswith("_bytes"):
        found.append(f"{name}: a size, not in _bytes")
    for sample, _, number in family.samples:
        if sample.endswith("_created"):
            found.append(f"{sample}: a _created series")
        if kind == "counter" and not sample.endswith("_total"):
            found.append(f"{sample}: a counter not ending in _total")
        if kind == "counter" and number < 0:
            found.append(f"{sample}: a negative counter")
        if kind == "gauge" and sample.endswith("_total"):
            found.append(f"{sample}: a gauge ending in _total")
        if kind == "histogram" and sample not in {name + s for s in HISTOGRAM_SUFFIXES}:
            found.append(f"{sample}: not a sample of histogram {name}")
        if kind not in ("histogram", "summary") and sample != name:
            found.append(f"{sample}: sample name differs from its family {name}")
    if kind == "histogram" and not name.endswith(("_seconds", "_bytes")):
        found.append(f"{name}: a histogram without a base unit")
    if name.endswith("_info") and {number for _, _, number in family.samples} != {1.0}:
        found.append(f"{name}: an info metric whose value is not 1")
    return found


def _label_problems(family: Family) -> list[str]:
    found = []
    series = [(s, tuple(sorted(labels.items()))) for s, labels, _ in family.samples]
    if len(set(series)) != len(series):
        found.append(f"{family.name}: duplicate series")
    names = {label for _, labels, _ in family.samples for label in labels} - {"le", "quantile"}
    for label in sorted(names):
        values = {labels.get(label) for _, labels, _ in family.samples}
        if len(values) == 1 and str(next(iter(values))).lower() in PLACEHOLDERS:
            found.append(f"{family.name}: label {label} is only ever {values}")
        elif len(values) == 1 and len(set(series)) > 1 and label not in IDENTITY_LABELS:
            found.append(f"{family.name}: label {label} has one value {values} in every series")
    return found
