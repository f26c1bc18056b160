"""`memguard run` options: one table gives each flag, its env var, default and parser.

Light on purpose (no trio): the CLI builds its parser from this table.

Precedence: command-line flag, then environment variable (MEMGUARD_<FLAG>,
e.g. MEMGUARD_POLICY, MEMGUARD_MIN_MARGIN), then the --config file
(memguard.configfile), then the default. Every value goes
through the same parser whatever its source, and a bad one becomes a
ConfigError naming where it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memguard.errors import ConfigError
from memguard.logsetup import LOG_FORMATS, LOG_LEVELS
from memguard.policy.model import CacheLimit
from memguard.units import parse_duration, parse_listen, parse_ratio, parse_size

DEFAULT_PARENT = "auto"  # the kubelet's tree on this host (memguard.kernel.mounts)
PSI_WINDOW_MIN_US, PSI_WINDOW_MAX_US = 500_000, 10_000_000


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return parse


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than 0")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty path")
    return text


def _optional_path(text: str) -> str:
    return text.strip()


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _listen_address(text: str) -> str:
    if text.strip():
        parse_listen(text)  # raises ValueError with the expected form
    return text.strip()


def _signals(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - {"events", "psi", "poll"}
    if not chosen or unknown:
        raise ValueError(f"{text!r}: choose from events, psi, poll (comma-separated)")
    return chosen


def _psi_trigger(text: str) -> str:
    parts = text.split()
    well_formed = (
        len(parts) == 3 and parts[0] in ("some", "full")
        and parts[1].isdigit() and parts[2].isdigit()
    )  # fmt: skip
    if not well_formed:
        raise ValueError(f"{text!r} is not 'some|full STALL_US WINDOW_US'")
    stall_us, window_us = int(parts[1]), int(parts[2])
    if not PSI_WINDOW_MIN_US <= window_us <= PSI_WINDOW_MAX_US or not 0 < stall_us <= window_us:
        raise ValueError(
            f"{text!r}: need 500000 <= WINDOW_US <= 10000000 and 0 < STALL_US <= WINDOW_US"
        )
    return " ".join(parts)


def _cache_limit(text: str) -> CacheLimit | None:
    """'' (off), '25%' (a share of the limit) or a size ('512Mi', '1G', bytes)."""
    stripped = text.strip()
    if not stripped:
        return None
    if stripped.endswith("%"):
        ratio = parse_ratio(stripped)
        if ratio <= 0:
            raise ValueError(f"{text!r}: a share must be above 0%")
        return CacheLimit(ratio=ratio)
    return CacheLimit(size_bytes=parse_size(stripped))


@dataclass(frozen=True)
class Option:
    flag: str
    default: str
    parse: Callable[[str], Any]
    help: str
    is_switch: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "MEMGUARD_" + self.dest.upper()


RUN_OPTIONS = (
    Option(
        "--parent",
        DEFAULT_PARENT,
        _path,
        "cgroup tree to guard; auto: kubepods or kubepods.slice of this host's memory "
        "controller (a fake tree works too)",
    ),
    Option(
        "--cgroup-version",
        "auto",
        _choice("auto", "1", "2"),
        "auto: from the filesystem of --parent; 1 or 2 to insist",
    ),
    Option(
        "--match",
        "containers",
        _choice("containers", "leaf"),
        "containers: Kubernetes/docker path forms; leaf: every leaf directory",
    ),
    Option(
        "--policy",
        "container",
        _choice("process", "container", "noop"),
        "process: kill the highest oom_score; container: kill all; noop: report",
    ),
    Option("--dry-run", "false", _bool, "report what would be done, kill nothing", is_switch=True),
    Option("--margin-ratio", "0.02", parse_ratio, "margin as a share of the limit"),
    Option("--min-margin", "1Mi", parse_size, "smallest margin"),
    Option("--max-margin", "50Mi", parse_size, "largest margin"),
    Option(
        "--max-cache-ratio",
        "0.5",
        parse_ratio,
        "after a flush, leave it to the kernel if reclaimable cache is above this share",
    ),
    Option("--flush-cooldown", "10s", parse_duration, "at most one flush per cgroup this often"),
    Option(
        "--flush-cache-above",
        "",
        _cache_limit,
        "flush a container's page cache above this share of its limit (25%) or size "
        "(512Mi); off when empty",
    ),
    Option(
        "--flush-interval",
        "30s",
        _positive_duration,
        "how often --flush-cache-above is checked (also on every notification)",
    ),
    Option("--flush-timeout", "5s", _positive_duration, "stop waiting for a flush after this"),
    Option("--cooldown", "5s", parse_duration, "after acting on a cgroup, wait this long"),
    Option(
        "--recheck-interval",
        "60s",
        _positive_duration,
        "safety re-read of each cgroup (catches crossings the kernel did not report)",
    ),
    Option(
        "--hot-recheck-interval",
        "100ms",
        _positive_duration,
        "re-read interval while a cgroup is over its threshold without action",
    ),
    Option("--rescan-interval", "60s", _positive_duration, "full rescan of the tree"),
    Option(
        "--v2-signals",
        "events,psi,poll",
        _signals,
        "cgroup v2 wake-ups: any of events (memory.events), psi (trigger), poll",
    ),
    Option(
        "--psi-trigger",
        "some 50000 500000",
        _psi_trigger,
        "cgroup v2 PSI trigger: some|full STALL_US WINDOW_US (window 0.5 s .. 10 s)",
    ),
    Option(
        "--poll-min-interval",
        "10ms",
        _positive_duration,
        "cgroup v2: shortest interval between reads of memory.current",
    ),
    Option(
        "--poll-max-interval",
        "1s",
        _positive_duration,
        "cgroup v2: longest interval between reads of memory.current",
    ),
    Option(
        "--poll-assumed-rate",
        "16Mi",
        parse_size,
        "cgroup v2: growth per second assumed at least, even for an idle cgroup",
    ),
    Option(
        "--high-tripwire",
        "false",
        _bool,
        "cgroup v2: set memory.high to the threshold where it is 'max' (throttles "
        "the allocator past it; off by default)",
        is_switch=True,
    ),
    Option(
        "--kubernetes",
        "auto",
        _choice("auto", "off"),
        "auto: post Events when in a cluster or given a kubeconfig; off: never",
    ),
    Option(
        "--kubeconfig",
        "",
        _optional_path,
        "kubeconfig for the Events and the pod cache (also $KUBECONFIG)",
    ),
    Option("--node-name", "", str, "this node's name (default $NODE_NAME, else the hostname)"),
    Option(
        "--report-queue",
        "1024",
        _positive_int,
        "reports queued per sink (log, metrics, Events) before dropping",
    ),
    Option(
        "--listen",
        "",
        _listen_address,
        "serve /healthz, /readyz and /metrics on HOST:PORT (e.g. :9637); off when empty",
    ),
    Option("--log-format", "text", _choice(*LOG_FORMATS), "text or json lines"),
    Option("--log-level", "info", _choice(*LOG_LEVELS), "debug, info, warning or error"),
)


def resolve(
    options: tuple[Option, ...],
    given: Mapping[str, str | None],
    environ: Mapping[str, str],
    from_file: Mapping[str, str] | None = None,
    file_path: str = "",
) -> dict[str, Any]:
    """Parsed values by dest; flags beat env vars beat the --config file beat defaults."""
    values: dict[str, Any] = {}
    from_file = from_file or {}
    for option in options:
        raw = given.get(option.dest)
        source = option.flag
        if raw is None and option.env in environ:
            raw, source = environ[option.env], f"${option.env}"
        if raw is None and option.dest in from_file:
            raw = from_file[option.dest]
            source = f"--config {file_path}: {option.flag.removeprefix('--')}"
        if raw is None:
            raw, source = option.default, f"default of {option.flag}"
        try:
            values[option.dest] = option.parse(raw)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
    return values
