"""`memguard run` options: one table gives each flag, its env var, default and parser.

Light on purpose (no trio): the CLI builds its parser from this table.

Precedence: command-line flag, then environment variable (MEMGUARD_<FLAG>,
e.g. MEMGUARD_POLICY, MEMGUARD_MIN_MARGIN), then the --config file
(memguard.configfile), then the default. Every value goes
through the same parser whatever its source, and a bad one becomes a
ConfigError naming where it came from.

Every number has a range (memguard.cli.values.Bounded: its help says it, its
error repeats it): durations at most an hour or a day as fits the flag, sizes at
most what a cgroup can hold, the report queue at most a million.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memguard.backends.hold import DEFAULT_LEDGER_DIR
from memguard.cli.logsetup import LOG_FORMATS, LOG_LEVELS
from memguard.cli.values import (
    absolute_path,
    boolean,
    cache_limit,
    choice,
    directory,
    duration,
    listen_address,
    namespaces,
    nonempty_path,
    optional_duration,
    optional_path,
    psi_trigger,
    ratio,
    signals,
    size,
    status_socket,
    tripwire,
    whole_number,
)
from memguard.errors import ConfigError
from memguard.units import shown

DEFAULT_PARENT = "auto"  # the kubelet's tree under --cgroup-root (memguard.kernel.hierarchy)
DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"  # the DaemonSet: /host/sys/fs/cgroup
# MEMGUARD_* variables read by something else than an option: --config's, and
# `memguard status`'s (the agent's --status-socket, where it is not the default).
OTHER_ENV = ("MEMGUARD_CONFIG", "MEMGUARD_STATUS_SOCKET")
MAX_UNKNOWN_SHOWN = 8  # unknown variables named in the warning; the rest counted


@dataclass(frozen=True)
class Option:
    flag: str
    default: str
    parse: Callable[[str], Any]
    help: str
    is_switch: bool = False
    bare: str | None = None  # the value the flag means given alone (--high-tripwire: on)
    is_list: bool = False  # a comma list: --config may give it as a YAML list

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
        directory,
        "where the host's cgroup filesystems are mounted (in the DaemonSet: "
        "/host/sys/fs/cgroup); --parent auto and --cgroup-version auto look there: "
        "cgroup2 at the root, or a v1 memory hierarchy at memory/ (v1, hybrid)",
    ),
    Option(
        "--parent",
        DEFAULT_PARENT,
        nonempty_path,
        "cgroup tree to guard; auto: kubepods or kubepods.slice of the memory hierarchy "
        "under --cgroup-root (a fake tree works too); waited for while it does not exist",
    ),
    Option(
        "--parent-wait",
        "60s",
        duration("0s", "24h"),
        "--parent may be missing this long (not ready meanwhile); then /readyz says why, "
        "and so do a Warning Event on the Node and a log line, once (0s .. 24h)",
    ),
    Option(
        "--cgroup-version",
        "auto",
        choice("auto", "1", "2"),
        "auto: from what is mounted under --cgroup-root (an explicit --parent: from its "
        "filesystem); 1 or 2 to insist",
    ),
    Option(
        "--match",
        "containers",
        choice("containers", "leaf"),
        "containers: Kubernetes/docker path forms; leaf: every leaf directory",
    ),
    Option(
        "--policy",
        "container",
        choice("process", "container", "graceful", "evict", "noop"),
        "process: kill the highest oom_score; container: kill all; graceful: SIGTERM the "
        "main process at the soft level, the container kill at the threshold or when the "
        "grace period is over; evict: evict the pod at the threshold; noop: report",
    ),
    Option(
        "--soft-margin-ratio",
        "0.10",
        ratio,
        "graceful: the soft margin as a share of the limit (soft level = limit - soft margin)",
    ),
    Option("--min-soft-margin", "16Mi", size("0", "1Ti"), "smallest soft margin (0 .. 1Ti)"),
    Option("--max-soft-margin", "512Mi", size("0", "1Ti"), "largest soft margin (0 .. 1Ti)"),
    Option(
        "--grace-period",
        "",
        optional_duration("0s", "1h"),
        "graceful/evict: how long a container may take to stop before the container kill "
        "(0s .. 1h); empty: the pod's terminationGracePeriodSeconds when known, else 30s",
    ),
    Option(
        "--graceful-via",
        "process",
        choice("process", "evict", "delete"),
        "graceful: SIGTERM the main process, or evict or delete the pod (Kubernetes)",
    ),
    Option(
        "--dry-run", "false", boolean, "report what would be done, kill nothing", is_switch=True
    ),
    Option("--margin-ratio", "0.02", ratio, "margin as a share of the limit"),
    Option("--min-margin", "1Mi", size("0", "1Ti"), "smallest margin (0 .. 1Ti)"),
    Option("--max-margin", "50Mi", size("0", "1Ti"), "largest margin (0 .. 1Ti)"),
    Option(
        "--max-cache-ratio",
        "0.5",
        ratio,
        "after a flush, leave it to the kernel if reclaimable cache is above this share",
    ),
    Option(
        "--flush-cooldown",
        "10s",
        duration("0s", "1h"),
        "at most one flush per cgroup this often (0s .. 1h)",
    ),
    Option(
        "--flush-cache-above",
        "",
        cache_limit,
        "flush a container's page cache above this share of its limit (25%) or size "
        "(512Mi; 1 .. 4Ei); off when empty",
    ),
    Option(
        "--flush-interval",
        "30s",
        duration("100ms", "24h"),
        "how often --flush-cache-above is checked, also on every notification (100ms .. 24h)",
    ),
    Option(
        "--flush-timeout",
        "5s",
        duration("10ms", "10m"),
        "stop waiting for a flush after this (10ms .. 10m)",
    ),
    Option(
        "--cooldown",
        "5s",
        duration("0s", "1h"),
        "after acting on a cgroup, wait this long (0s .. 1h)",
    ),
    Option(
        "--recheck-interval",
        "60s",
        duration("100ms", "1h"),
        "safety re-read of each cgroup, catches crossings the kernel did not report (100ms .. 1h)",
    ),
    Option(
        "--hot-recheck-interval",
        "100ms",
        duration("1ms", "1m"),
        "re-read interval while a cgroup is over its threshold without action (1ms .. 1m)",
    ),
    Option(
        "--rescan-interval", "60s", duration("1s", "24h"), "full rescan of the tree (1s .. 24h)"
    ),
    Option(
        "--v2-signals",
        "events,psi,poll",
        signals,
        "cgroup v2 wake-ups: any of events (memory.events), psi (trigger), poll",
        is_list=True,
    ),
    Option(
        "--psi-trigger",
        "some 50000 500000",
        psi_trigger,
        "cgroup v2 PSI trigger: some|full STALL_US WINDOW_US (window 0.5 s .. 10 s)",
    ),
    Option(
        "--poll-min-interval",
        "10ms",
        duration("1ms", "1m"),
        "cgroup v2: shortest interval between reads of memory.current (1ms .. 1m)",
    ),
    Option(
        "--poll-max-interval",
        "1s",
        duration("1ms", "1m"),
        "cgroup v2: longest interval between reads of memory.current (1ms .. 1m)",
    ),
    Option(
        "--poll-assumed-rate",
        "16Mi",
        size("1", "64Gi"),
        "cgroup v2: growth per second assumed at least, even for an idle cgroup (1 .. 64Gi)",
    ),
    Option(
        "--high-tripwire",
        "auto",
        tripwire,
        "cgroup v2: set memory.high to the threshold where it reads 'max' (throttles the "
        "allocator past it); auto: not where memguard's memory QoS sets memory.high, nor "
        "with --dry-run; on; off; given alone: on",
        bare="on",
    ),
    Option(
        "--hold-at-limit",
        "false",
        boolean,
        "cgroup v1: set oom_kill_disable on guarded containers while guarding them, so "
        "the kernel parks tasks at the limit for memguard instead of killing one (if "
        "memguard stops, they wait for it)",
        is_switch=True,
    ),
    Option(
        "--hold-ledger",
        DEFAULT_LEDGER_DIR,
        absolute_path,
        "cgroup v1: where --hold-at-limit records the cgroups it holds, so that a restart "
        "releases or takes them over (keep it across restarts: a hostPath)",
    ),
    Option(
        "--swap-trigger",
        "false",
        boolean,
        "act gracefully on the container with the highest memory PSI (v2; v1: swap share) "
        "among those using swap when node swap I/O stays above --swap-io-threshold for "
        "--sustained-duration",
        is_switch=True,
    ),
    Option(
        "--swap-io-threshold",
        "1000",
        whole_number(1, 10_000_000),
        "swap trigger: node swap I/O (pswpin + pswpout) in pages/s (1 .. 10000000)",
    ),
    Option(
        "--sustained-duration",
        "10s",
        duration("1s", "1h"),
        "swap trigger: how long swap I/O must stay above the threshold (1s .. 1h)",
    ),
    Option(
        "--swap-poll-interval",
        "1s",
        duration("100ms", "1m"),
        "swap trigger: how often /proc/vmstat is read (100ms .. 1m)",
    ),
    Option(
        "--swap-cooldown",
        "30s",
        duration("0s", "1h"),
        "swap trigger: after acting, wait this long before it may fire again (0s .. 1h)",
    ),
    Option(
        "--kubernetes",
        "auto",
        choice("auto", "off"),
        "auto: post Events when in a cluster or given a kubeconfig; off: never",
    ),
    Option(
        "--kubeconfig",
        "",
        optional_path,
        "kubeconfig for the Events and the pod cache (also $KUBECONFIG)",
    ),
    Option("--node-name", "", str, "this node's name (default $NODE_NAME, else the hostname)"),
    Option(
        "--protected-namespaces",
        "kube-system",
        namespaces,
        "comma list of namespaces memguard never acts in (reports only, saying why); empty: none",
        is_list=True,
    ),
    Option(
        "--act-on-critical",
        "false",
        boolean,
        "act on pods of priority 2000000000 or more (system-cluster-critical, "
        "system-node-critical) too; without it they are reported only",
        is_switch=True,
    ),
    Option(
        "--report-queue",
        "1024",
        whole_number(1, 1_000_000),
        "reports queued per sink (log, metrics, Events) before dropping (1 .. 1000000)",
    ),
    Option(
        "--log-queue",
        "4096",
        whole_number(16, 1_000_000),
        "log lines held while the log output is blocked; beyond, lines are dropped, "
        "counted and reported (16 .. 1000000)",
    ),
    Option(
        "--listen",
        "",
        listen_address,
        "serve /healthz, /readyz and /metrics on HOST:PORT (e.g. :9637; port 0: any free "
        "port); off when empty",
    ),
    Option(
        "--status-socket",
        "auto",
        status_socket,
        "unix socket for `memguard status`: auto (/run/memguard/status.sock, else "
        "$XDG_RUNTIME_DIR/memguard/status.sock, else none), off, or a path",
    ),
    Option(
        "--priority",
        "auto",
        choice("auto", "off"),
        "auto: at start lower nice to -10, set oom_score_adj -1000 and lock memory "
        "(mlockall), each where permitted; off: touch nothing",
    ),
    Option("--log-format", "text", choice(*LOG_FORMATS), "text or json lines"),
    Option("--log-level", "info", choice(*LOG_LEVELS), "debug, info, warning or error"),
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


def unknown_environment(options: tuple[Option, ...], environ: Mapping[str, str]) -> str | None:
    """One warning naming the MEMGUARD_* variables no option reads (a typo such as
    MEMGUARD_POLICI), each with the closest name; None when there are none. Not an
    error: the environment may carry other memguard tools' variables."""
    known = [option.env for option in options] + list(OTHER_ENV)
    unknown = sorted(name for name in environ if name.startswith("MEMGUARD_") and name not in known)
    if not unknown:
        return None
    prefix = len("MEMGUARD_")
    described = []
    for name in unknown[:MAX_UNKNOWN_SHOWN]:
        # compared without the prefix every name shares, which would make all alike
        close = difflib.get_close_matches(name[prefix:100], [n[prefix:] for n in known], n=1)
        hint = f" (did you mean MEMGUARD_{close[0]}?)" if close else ""
        described.append(f"{shown(name)}{hint}")
    more = len(unknown) - MAX_UNKNOWN_SHOWN
    if more > 0:
        described.append(f"and {more} more")
    plural = "s" if len(unknown) > 1 else ""
    return f"ignoring unknown environment variable{plural}: " + ", ".join(described)
