"""`memguard run` options: one table gives each flag, its env var, default and parser.

Light on purpose (no trio): the CLI builds its parser from this table.

Precedence: command-line flag, then environment variable (MEMGUARD_<FLAG>,
e.g. MEMGUARD_POLICY, MEMGUARD_MIN_MARGIN), then the --config file
(memguard.configfile), then the default. Every value goes
through the same parser whatever its source, and a bad one becomes a
ConfigError naming where it came from.

Every number has a range (Bounded: its help says it, its error repeats it):
durations at most an hour or a day as fits the flag, sizes at most what a
cgroup can hold, the report queue at most a million.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memguard.backends.hold import DEFAULT_LEDGER_DIR
from memguard.backends.wake import V2_SIGNALS
from memguard.cli.logsetup import LOG_FORMATS, LOG_LEVELS
from memguard.errors import ConfigError
from memguard.policy.model import CacheLimit
from memguard.units import (
    MAX_SIZE_BYTES,
    parse_duration,
    parse_listen,
    parse_ratio,
    parse_size,
    parse_whole_number,
    shown,
)

MAX_PATH_CHARS = 4096
SUN_PATH_MAX_BYTES = 107  # sockaddr_un.sun_path (108) less its NUL
DEFAULT_PARENT = "auto"  # the kubelet's tree under --cgroup-root (memguard.kernel.hierarchy)
DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"  # the DaemonSet: /host/sys/fs/cgroup
PSI_WINDOW_MIN_US, PSI_WINDOW_MAX_US = 500_000, 10_000_000


def _choice(*allowed: str) -> Callable[[str], str]:
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


def _duration(low: str, high: str) -> Bounded:
    low_s, high_s = parse_duration(low), parse_duration(high)
    return Bounded(lambda text: parse_duration(text, low_s, high_s), low, high)


def _size(low: str, high: str) -> Bounded:
    low_bytes, high_bytes = parse_size(low), parse_size(high)
    return Bounded(lambda text: parse_size(text, low_bytes, high_bytes), low, high)


def _optional_duration(low: str, high: str) -> Bounded:
    """A duration in range, or '' (None: the default decided elsewhere)."""
    low_s, high_s = parse_duration(low), parse_duration(high)

    def parse(text: str) -> float | None:
        return parse_duration(text, low_s, high_s) if text.strip() else None

    return Bounded(parse, low, high)


def _whole_number(low: int, high: int) -> Bounded:
    return Bounded(lambda text: parse_whole_number(text, low, high), str(low), str(high))


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{shown(text)} is not a boolean (true/false)")


def _tripwire(text: str) -> str:
    """auto, on or off; the boolean words the switch took still mean on and off."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return "on" if _bool(text) else "off"
    except ValueError:
        raise ValueError(f"{shown(text)} is not one of auto, on, off") from None


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty path")
    return text


def _optional_path(text: str) -> str:
    return text.strip()


def _absolute_path(text: str) -> str:
    path = text.strip()
    if not path.startswith("/"):
        raise ValueError(f"{shown(text)} is not an absolute path")
    if "\0" in path or len(path) > MAX_PATH_CHARS:
        raise ValueError(f"{shown(text)} is not a usable path")
    return path


def _directory(text: str) -> str:
    path = text.strip()
    if not path:
        raise ValueError("an empty path")
    if "\0" in path or len(path) > MAX_PATH_CHARS:
        raise ValueError(f"{shown(text)} is not a usable path")
    return path


def _status_socket(text: str) -> str:
    """auto, off or a unix socket path (memguard.cli.statussocket), made absolute."""
    stripped = text.strip()
    if stripped in ("auto", "off"):
        return stripped
    if not stripped or "\0" in stripped:
        raise ValueError(f"{shown(text)} is not auto, off or a path")
    path = os.path.abspath(stripped)
    if len(os.fsencode(path)) > SUN_PATH_MAX_BYTES:
        raise ValueError(f"{shown(text)} is longer than a unix socket path may be (107 bytes)")
    return path


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)


def _namespaces(text: str) -> frozenset[str]:
    """A comma list of namespace names (DNS-1123 labels); empty: none."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if not _NAMESPACE.fullmatch(name):
            raise ValueError(f"{shown(name)} is not a namespace name (a DNS-1123 label)")
    return frozenset(names)


def _listen_address(text: str) -> str:
    if text.strip():
        parse_listen(text)  # raises ValueError with the expected form
    return text.strip()


def _signals(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - V2_SIGNALS
    if not chosen or unknown:
        raise ValueError(f"{shown(text)}: choose from events, psi, poll (comma-separated)")
    return chosen


def _psi_trigger(text: str) -> str:
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


def _cache_limit(text: str) -> CacheLimit | None:
    """'' (off), '25%' (a share of the limit) or a size ('512Mi', '1G', bytes)."""
    stripped = text.strip()
    if not stripped:
        return None
    if stripped.endswith("%"):
        ratio = parse_ratio(stripped)
        if ratio <= 0:
            raise ValueError(f"{shown(text)}: a share must be above 0%")
        return CacheLimit(ratio=ratio)
    return CacheLimit(size_bytes=parse_size(stripped, 1, MAX_SIZE_BYTES))


@dataclass(frozen=True)
class Option:
    flag: str
    default: str
    parse: Callable[[str], Any]
    help: str
    is_switch: bool = False
    bare: str | None = None  # the value the flag means given alone (--high-tripwire: on)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "MEMGUARD_" + self.dest.upper()


RUN_OPTIONS = (
    Option(
        "--cgroup-root",
        DEFAULT_CGROUP_ROOT,
        _directory,
        "where the host's cgroup filesystems are mounted (in the DaemonSet: "
        "/host/sys/fs/cgroup); --parent auto and --cgroup-version auto look there: "
        "cgroup2 at the root, or a v1 memory hierarchy at memory/ (v1, hybrid)",
    ),
    Option(
        "--parent",
        DEFAULT_PARENT,
        _path,
        "cgroup tree to guard; auto: kubepods or kubepods.slice of the memory hierarchy "
        "under --cgroup-root (a fake tree works too); waited for while it does not exist",
    ),
    Option(
        "--parent-wait",
        "60s",
        _duration("0s", "24h"),
        "--parent may be missing this long (not ready meanwhile); then /readyz says why, "
        "and so do a Warning Event on the Node and a log line, once (0s .. 24h)",
    ),
    Option(
        "--cgroup-version",
        "auto",
        _choice("auto", "1", "2"),
        "auto: from what is mounted under --cgroup-root (an explicit --parent: from its "
        "filesystem); 1 or 2 to insist",
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
        _choice("process", "container", "graceful", "evict", "noop"),
        "process: kill the highest oom_score; container: kill all; graceful: SIGTERM the "
        "main process at the soft level, the container kill at the threshold or when the "
        "grace period is over; evict: evict the pod at the threshold; noop: report",
    ),
    Option(
        "--soft-margin-ratio",
        "0.10",
        parse_ratio,
        "graceful: the soft margin as a share of the limit (soft level = limit - soft margin)",
    ),
    Option("--min-soft-margin", "16Mi", _size("0", "1Ti"), "smallest soft margin (0 .. 1Ti)"),
    Option("--max-soft-margin", "512Mi", _size("0", "1Ti"), "largest soft margin (0 .. 1Ti)"),
    Option(
        "--grace-period",
        "",
        _optional_duration("0s", "1h"),
        "graceful/evict: how long a container may take to stop before the container kill "
        "(0s .. 1h); empty: the pod's terminationGracePeriodSeconds when known, else 30s",
    ),
    Option(
        "--graceful-via",
        "process",
        _choice("process", "evict", "delete"),
        "graceful: SIGTERM the main process, or evict or delete the pod (Kubernetes)",
    ),
    Option("--dry-run", "false", _bool, "report what would be done, kill nothing", is_switch=True),
    Option("--margin-ratio", "0.02", parse_ratio, "margin as a share of the limit"),
    Option("--min-margin", "1Mi", _size("0", "1Ti"), "smallest margin (0 .. 1Ti)"),
    Option("--max-margin", "50Mi", _size("0", "1Ti"), "largest margin (0 .. 1Ti)"),
    Option(
        "--max-cache-ratio",
        "0.5",
        parse_ratio,
        "after a flush, leave it to the kernel if reclaimable cache is above this share",
    ),
    Option(
        "--flush-cooldown",
        "10s",
        _duration("0s", "1h"),
        "at most one flush per cgroup this often (0s .. 1h)",
    ),
    Option(
        "--flush-cache-above",
        "",
        _cache_limit,
        "flush a container's page cache above this share of its limit (25%) or size "
        "(512Mi; 1 .. 4Ei); off when empty",
    ),
    Option(
        "--flush-interval",
        "30s",
        _duration("100ms", "24h"),
        "how often --flush-cache-above is checked, also on every notification (100ms .. 24h)",
    ),
    Option(
        "--flush-timeout",
        "5s",
        _duration("10ms", "10m"),
        "stop waiting for a flush after this (10ms .. 10m)",
    ),
    Option(
        "--cooldown",
        "5s",
        _duration("0s", "1h"),
        "after acting on a cgroup, wait this long (0s .. 1h)",
    ),
    Option(
        "--recheck-interval",
        "60s",
        _duration("100ms", "1h"),
        "safety re-read of each cgroup, catches crossings the kernel did not report (100ms .. 1h)",
    ),
    Option(
        "--hot-recheck-interval",
        "100ms",
        _duration("1ms", "1m"),
        "re-read interval while a cgroup is over its threshold without action (1ms .. 1m)",
    ),
    Option(
        "--rescan-interval", "60s", _duration("1s", "24h"), "full rescan of the tree (1s .. 24h)"
    ),
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
        _duration("1ms", "1m"),
        "cgroup v2: shortest interval between reads of memory.current (1ms .. 1m)",
    ),
    Option(
        "--poll-max-interval",
        "1s",
        _duration("1ms", "1m"),
        "cgroup v2: longest interval between reads of memory.current (1ms .. 1m)",
    ),
    Option(
        "--poll-assumed-rate",
        "16Mi",
        _size("1", "64Gi"),
        "cgroup v2: growth per second assumed at least, even for an idle cgroup (1 .. 64Gi)",
    ),
    Option(
        "--high-tripwire",
        "auto",
        _tripwire,
        "cgroup v2: set memory.high to the threshold where it reads 'max' (throttles the "
        "allocator past it); auto: not where memguard's memory QoS sets memory.high, nor "
        "with --dry-run; on; off; given alone: on",
        bare="on",
    ),
    Option(
        "--hold-at-limit",
        "false",
        _bool,
        "cgroup v1: set oom_kill_disable on guarded containers while guarding them, so "
        "the kernel parks tasks at the limit for memguard instead of killing one (if "
        "memguard stops, they wait for it)",
        is_switch=True,
    ),
    Option(
        "--hold-ledger",
        DEFAULT_LEDGER_DIR,
        _absolute_path,
        "cgroup v1: where --hold-at-limit records the cgroups it holds, so that a restart "
        "releases or takes them over (keep it across restarts: a hostPath)",
    ),
    Option(
        "--swap-trigger",
        "false",
        _bool,
        "act gracefully on the container with the highest memory PSI (v2; v1: swap share) "
        "among those using swap when node swap I/O stays above --swap-io-threshold for "
        "--sustained-duration",
        is_switch=True,
    ),
    Option(
        "--swap-io-threshold",
        "1000",
        _whole_number(1, 10_000_000),
        "swap trigger: node swap I/O (pswpin + pswpout) in pages/s (1 .. 10000000)",
    ),
    Option(
        "--sustained-duration",
        "10s",
        _duration("1s", "1h"),
        "swap trigger: how long swap I/O must stay above the threshold (1s .. 1h)",
    ),
    Option(
        "--swap-poll-interval",
        "1s",
        _duration("100ms", "1m"),
        "swap trigger: how often /proc/vmstat is read (100ms .. 1m)",
    ),
    Option(
        "--swap-cooldown",
        "30s",
        _duration("0s", "1h"),
        "swap trigger: after acting, wait this long before it may fire again (0s .. 1h)",
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
        "--protected-namespaces",
        "kube-system",
        _namespaces,
        "comma list of namespaces memguard never acts in (reports only, saying why); empty: none",
    ),
    Option(
        "--act-on-critical",
        "false",
        _bool,
        "act on pods of priority 2000000000 or more (system-cluster-critical, "
        "system-node-critical) too; without it they are reported only",
        is_switch=True,
    ),
    Option(
        "--report-queue",
        "1024",
        _whole_number(1, 1_000_000),
        "reports queued per sink (log, metrics, Events) before dropping (1 .. 1000000)",
    ),
    Option(
        "--log-queue",
        "4096",
        _whole_number(16, 1_000_000),
        "log lines held while the log output is blocked; beyond, lines are dropped, "
        "counted and reported (16 .. 1000000)",
    ),
    Option(
        "--listen",
        "",
        _listen_address,
        "serve /healthz, /readyz and /metrics on HOST:PORT (e.g. :9637; port 0: any free "
        "port); off when empty",
    ),
    Option(
        "--status-socket",
        "auto",
        _status_socket,
        "unix socket for `memguard status`: auto (/run/memguard/status.sock, else "
        "$XDG_RUNTIME_DIR/memguard/status.sock, else none), off, or a path",
    ),
    Option(
        "--priority",
        "auto",
        _choice("auto", "off"),
        "auto: at start lower nice to -10, set oom_score_adj -1000 and lock memory "
        "(mlockall), each where permitted; off: touch nothing",
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
