"""A container's overrides from its pod: memguard.io annotations and protection (pure).

Keys (annotation values are strings; the NRI memory-qos plugin's convention,
as memguard.policy.qos reads it: a container's key is the setting's domain
key with the container's name after the slash):

    memguard.io/policy: noop             the pod: every container
    policy.memguard.io/web: process      container web (wins over the pod's)

The container-scoped form cannot be `memguard.io/policy/web`: an annotation
key is [prefix/]name and the name part may not hold a slash (the API server
refuses such a pod). Settings: policy (one of --policy's values), ignore
(true|false), margin and soft-margin (a size - 64Mi, 1G, bytes - or a share
of the limit, 10%), grace-period (30, 30s, 2m; at most 1h).

Rules:
- Precedence: the container's key, then the pod's, then the flag (None here).
- A bad value (or an unknown memguard.io key) is a Problem - the key, the
  value, why - and is read as absent: the next level applies. Nothing here
  raises for anything a pod says.
- Protection does not come from annotations and no annotation lifts it:
  memguard's own pod, a namespace in --protected-namespaces, a priority of
  at least CRITICAL_PRIORITY without --act-on-critical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memguard.policy.model import Policy
from memguard.policy.overrides import ContainerOverrides, MarginOverride
from memguard.units import parse_duration, parse_size, shown

DOMAIN = "memguard.io"
POD_PREFIX = DOMAIN + "/"  # memguard.io/<setting>
CONTAINER_SUFFIX = "." + DOMAIN  # <setting>.memguard.io/<container>
POLICY, IGNORE, MARGIN, SOFT_MARGIN, GRACE_PERIOD = (
    "policy",
    "ignore",
    "margin",
    "soft-margin",
    "grace-period",
)
SETTINGS = (POLICY, IGNORE, MARGIN, SOFT_MARGIN, GRACE_PERIOD)
# system-cluster-critical is 2000000000, system-node-critical 2000001000.
CRITICAL_PRIORITY = 2_000_000_000
DEFAULT_PROTECTED_NAMESPACES = frozenset({"kube-system"})
MAX_MARGIN_BYTES = 1 << 40  # 1Ti, as --min-margin/--max-margin
MAX_GRACE_PERIOD_S = 3600.0
OWN_POD = "memguard's own pod"


@dataclass(frozen=True, slots=True)
class Protection:
    """--protected-namespaces and --act-on-critical."""

    namespaces: frozenset[str] = DEFAULT_PROTECTED_NAMESPACES
    act_on_critical: bool = False


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the pod cache knows of a container's pod (memguard.kube.pods.PodInfo)."""

    namespace: str
    priority: int | None = None
    annotations: Mapping[str, str] | None = None
    container: str | None = None  # the container's name; None: not known yet
    termination_grace_period_s: float | None = None
    terminating: bool = False
    own_pod: bool = False  # memguard runs in this pod


@dataclass(frozen=True, slots=True)
class Problem:
    """A memguard.io annotation memguard cannot use (read as absent)."""

    key: str
    value: str
    why: str

    def describe(self) -> str:
        return f"annotation {self.key}: {shown(self.value)} {self.why}"


@dataclass(frozen=True, slots=True)
class _Found:
    key: str  # the full annotation key
    value: str


def setting_of(key: str) -> tuple[str, str | None] | None:
    """(setting, container name or None for the pod) of a memguard.io key, else None."""
    if key.startswith(POD_PREFIX):
        return key.removeprefix(POD_PREFIX), None
    base, slash, container = key.partition("/")
    if slash and base.endswith(CONTAINER_SUFFIX) and container:
        return base.removesuffix(CONTAINER_SUFFIX), container
    return None


def _chains(
    annotations: Mapping[str, str], container: str | None
) -> tuple[dict[str, list[_Found]], list[Problem]]:
    """Per setting, the values that reach container in precedence order; unknown keys."""
    chains: dict[str, list[_Found]] = {}
    problems: list[Problem] = []
    container_first: list[tuple[str, _Found]] = []
    pod_level: list[tuple[str, _Found]] = []
    for key, value in sorted(annotations.items()):
        parsed = setting_of(key)
        if parsed is None:
            continue  # another domain's (memory QoS), or not a key of this form
        setting, target = parsed
        if setting not in SETTINGS:
            known = ", ".join(SETTINGS)
            problems.append(Problem(key, value, f"is not a memguard.io setting (known: {known})"))
        elif target is None:
            pod_level.append((setting, _Found(key, value)))
        elif target == container:
            container_first.append((setting, _Found(key, value)))
    for setting, found in [*container_first, *pod_level]:
        chains.setdefault(setting, []).append(found)
    return chains, problems


def parse_policy(text: str) -> Policy:
    try:
        return Policy(text.strip())
    except ValueError:
        allowed = ", ".join(policy.value for policy in Policy)
        raise ValueError(f"is not a policy ({allowed})") from None


def parse_ignore(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("is not true or false")
    return lowered == "true"


def parse_margin(text: str) -> MarginOverride:
    """'64Mi', '1G', '1048576' (bytes) or '10%' (a share of the limit, above 0, below 100)."""
    stripped = text.strip()
    if stripped.endswith("%"):
        number = stripped[:-1].strip()
        try:
            if not number.isascii() or "_" in number:
                raise ValueError
            ratio = float(number) / 100.0
        except ValueError:
            raise ValueError("is not a size (64Mi, 1G, bytes) or a share (10%)") from None
        if not 0.0 < ratio < 1.0:
            raise ValueError("is out of range: a share is above 0% and below 100%")
        return MarginOverride(ratio=ratio)
    if stripped and "." in stripped and stripped.replace(".", "", 1).isdigit():
        raise ValueError("is a fraction of a byte: write a share as a percentage (10%)")
    try:
        return MarginOverride(bytes=parse_size(stripped, 0, MAX_MARGIN_BYTES))
    except ValueError as error:
        if "out of range" in str(error):
            raise ValueError("is out of range: at most 1Ti") from None
        raise ValueError("is not a size (64Mi, 1G, bytes) or a share (10%)") from None


def parse_grace_period(text: str) -> float:
    """'30', '30s', '2m' (seconds; 0 .. 1h)."""
    try:
        return parse_duration(text, 0.0, MAX_GRACE_PERIOD_S)
    except ValueError as error:
        if "out of range" in str(error):
            raise ValueError("is out of range: 0s .. 1h") from None
        raise ValueError("is not a duration (30, 30s, 2m)") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    POLICY: parse_policy,
    IGNORE: parse_ignore,
    MARGIN: parse_margin,
    SOFT_MARGIN: parse_margin,
    GRACE_PERIOD: parse_grace_period,
}


def _first_good(
    chain: Iterable[_Found], parse: Callable[[str], Any], problems: list[Problem]
) -> Any:
    """The first value in precedence order that parses; each bad one a Problem."""
    for found in chain:
        try:
            return parse(found.value)
        except ValueError as error:
            why = f"{error}; the next level applies (the pod's key, else the flag)"
            problems.append(Problem(found.key, found.value, why))
    return None


def protection(facts: PodFacts, settings: Protection) -> str | None:
    """Why memguard must not act on the pod's containers; None: it may."""
    if facts.own_pod:
        return OWN_POD
    if facts.namespace in settings.namespaces:
        return f"namespace {facts.namespace} is protected (--protected-namespaces)"
    if (
        facts.priority is not None
        and facts.priority >= CRITICAL_PRIORITY
        and not settings.act_on_critical
    ):
        return (
            f"priority {facts.priority} is critical (at least {CRITICAL_PRIORITY}: "
            "system-cluster-critical, system-node-critical; --act-on-critical)"
        )
    return None


def container_overrides(
    facts: PodFacts, settings: Protection
) -> tuple[ContainerOverrides, tuple[Problem, ...]]:
    """The container's ContainerOverrides and the problems of its pod's annotations."""
    chains, problems = _chains(facts.annotations or {}, facts.container)
    values = {
        setting: _first_good(chains.get(setting, ()), _PARSERS[setting], problems)
        for setting in SETTINGS
    }
    overrides = ContainerOverrides(
        policy=values[POLICY],
        ignore=bool(values[IGNORE]),
        margin=values[MARGIN],
        soft_margin=values[SOFT_MARGIN],
        grace_period_s=values[GRACE_PERIOD],
        pod_grace_period_s=facts.termination_grace_period_s,
        protected=protection(facts, settings),
        terminating=facts.terminating,
    )
    return overrides, tuple(problems)
