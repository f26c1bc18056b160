"""`memguard run` options: flag beats env beats default; config validation."""

from __future__ import annotations

import os
from typing import Any

import pytest

from memguard.backends.v2 import Tripwire, V2Settings
from memguard.cli.config import build_agent_config, build_run_config, run_warnings
from memguard.cli.main import MAX_ERROR_CHARS, build_parser, one_line
from memguard.cli.options import DEFAULT_PARENT, RUN_OPTIONS, Option, resolve, unknown_environment
from memguard.cli.values import Bounded
from memguard.errors import ConfigError
from memguard.guarding.discovery import MatchMode
from memguard.policy.model import MIB, GracefulVia, Policy, check_granularity_bytes
from memguard.units import shown

NO_FLAGS: dict[str, str | None] = {}
NO_ENV: dict[str, str] = {}


def test_defaults() -> None:
    values = resolve(RUN_OPTIONS, NO_FLAGS, NO_ENV)
    assert values["parent"] == DEFAULT_PARENT
    assert values["match"] == "containers"
    assert values["policy"] == "container"
    assert values["dry_run"] is False
    assert values["margin_ratio"] == pytest.approx(0.02)
    assert values["min_margin"] == 1 * MIB
    assert values["max_margin"] == 50 * MIB
    assert values["flush_cooldown"] == pytest.approx(10.0)
    assert values["hot_recheck_interval"] == pytest.approx(0.1)
    assert values["priority"] == "auto"
    assert values["high_tripwire"] == "auto"
    assert values["protected_namespaces"] == frozenset({"kube-system"})
    assert values["act_on_critical"] is False
    assert set(values) == {option.dest for option in RUN_OPTIONS}


@pytest.mark.parametrize(
    ("flags", "environ", "dest", "expected"),
    [
        ({}, {"MEMGUARD_POLICY": "noop"}, "policy", "noop"),
        ({"policy": "process"}, {"MEMGUARD_POLICY": "noop"}, "policy", "process"),
        ({"policy": None}, {"MEMGUARD_POLICY": "noop"}, "policy", "noop"),
        ({"policy": "process"}, {"MEMGUARD_POLICY": "not-a-policy"}, "policy", "process"),
        ({}, {"MEMGUARD_MIN_MARGIN": "4Mi"}, "min_margin", 4 * MIB),
        ({"min_margin": "2M"}, {"MEMGUARD_MIN_MARGIN": "4Mi"}, "min_margin", 2_000_000),
        ({}, {"MEMGUARD_MARGIN_RATIO": "5%"}, "margin_ratio", 0.05),
        ({}, {"MEMGUARD_HOT_RECHECK_INTERVAL": "250ms"}, "hot_recheck_interval", 0.25),
        ({}, {"MEMGUARD_DRY_RUN": "true"}, "dry_run", True),
        ({}, {"MEMGUARD_DRY_RUN": "TRUE"}, "dry_run", True),
        ({}, {"MEMGUARD_DRY_RUN": ""}, "dry_run", False),
        ({"dry_run": "true"}, {"MEMGUARD_DRY_RUN": "false"}, "dry_run", True),
        ({}, {"MEMGUARD_MATCH": "leaf"}, "match", "leaf"),
        ({}, {"MEMGUARD_PARENT": "/tmp/tree"}, "parent", "/tmp/tree"),
        ({}, {"MEMGUARD_PRIORITY": "off"}, "priority", "off"),
        ({}, {"MEMGUARD_HIGH_TRIPWIRE": "off"}, "high_tripwire", "off"),
        ({}, {"MEMGUARD_HIGH_TRIPWIRE": "true"}, "high_tripwire", "on"),  # the old switch
        ({}, {"MEMGUARD_HIGH_TRIPWIRE": "false"}, "high_tripwire", "off"),
        ({"high_tripwire": "on"}, {"MEMGUARD_HIGH_TRIPWIRE": "auto"}, "high_tripwire", "on"),
        ({"priority": "auto"}, {"MEMGUARD_PRIORITY": "off"}, "priority", "auto"),
        ({}, {"memguard_policy": "noop", "POLICY": "noop"}, "policy", "container"),
        (
            {},
            {"MEMGUARD_PROTECTED_NAMESPACES": "kube-system, infra"},
            "protected_namespaces",
            frozenset({"kube-system", "infra"}),
        ),
        ({"protected_namespaces": ""}, {}, "protected_namespaces", frozenset()),
        ({}, {"MEMGUARD_ACT_ON_CRITICAL": "true"}, "act_on_critical", True),
    ],
)
def test_flag_beats_env_beats_default(
    flags: dict[str, str | None], environ: dict[str, str], dest: str, expected: Any
) -> None:
    got = resolve(RUN_OPTIONS, flags, environ)[dest]
    assert type(got) is type(expected)
    assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize(
    ("flags", "environ", "source"),
    [
        ({}, {"MEMGUARD_POLICY": "kill"}, "$MEMGUARD_POLICY: 'kill' is not one of"),
        ({"policy": "kill"}, {}, "--policy: 'kill' is not one of"),
        ({}, {"MEMGUARD_MIN_MARGIN": "1m"}, "$MEMGUARD_MIN_MARGIN: '1m' is not a size"),
        ({"max_margin": "lots"}, {}, "--max-margin: 'lots' is not a size"),
        ({}, {"MEMGUARD_MARGIN_RATIO": "120%"}, "$MEMGUARD_MARGIN_RATIO: '120%' is out of range"),
        ({}, {"MEMGUARD_COOLDOWN": "5x"}, "$MEMGUARD_COOLDOWN: '5x' is not a duration"),
        ({}, {"MEMGUARD_FLUSH_TIMEOUT": "0"}, "$MEMGUARD_FLUSH_TIMEOUT: '0' is out of range"),
        ({"recheck_interval": "0s"}, {}, "--recheck-interval: '0s' is out of range: at least"),
        ({}, {"MEMGUARD_DRY_RUN": "maybe"}, "$MEMGUARD_DRY_RUN: 'maybe' is not a boolean"),
        ({}, {"MEMGUARD_PARENT": " "}, "$MEMGUARD_PARENT: an empty path"),
        ({}, {"MEMGUARD_LOG_FORMAT": "xml"}, "$MEMGUARD_LOG_FORMAT: 'xml' is not one of"),
        ({"priority": "high"}, {}, "--priority: 'high' is not one of auto, off"),
        ({"high_tripwire": "maybe"}, {}, "--high-tripwire: 'maybe' is not one of auto, on, off"),
        (
            {"protected_namespaces": "kube-system,Kube_Public"},
            {},
            "--protected-namespaces: 'Kube_Public' is not a namespace name",
        ),
    ],
)
def test_bad_value_is_a_config_error_naming_its_source(
    flags: dict[str, str | None], environ: dict[str, str], source: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RUN_OPTIONS, flags, environ)
    assert str(info.value).startswith(source)


def test_every_option_has_a_distinct_memguard_env_var() -> None:
    names = [option.env for option in RUN_OPTIONS]
    assert len(set(names)) == len(names)
    assert all(name.startswith("MEMGUARD_") and name.isupper() for name in names)
    by_flag = {option.flag: option for option in RUN_OPTIONS}
    assert by_flag["--hot-recheck-interval"].dest == "hot_recheck_interval"
    assert by_flag["--hot-recheck-interval"].env == "MEMGUARD_HOT_RECHECK_INTERVAL"
    assert by_flag["--dry-run"].is_switch


def values(**changes: Any) -> dict[str, Any]:
    resolved = resolve(RUN_OPTIONS, NO_FLAGS, NO_ENV)
    resolved.update(changes)
    return resolved


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], None),  # the default: auto
        (["--high-tripwire"], "on"),  # alone, as the switch it was (bench, old manifests)
        (["--high-tripwire", "--policy", "noop"], "on"),
        (["--high-tripwire", "off"], "off"),
        (["--high-tripwire=auto"], "auto"),
        (["--policy", "noop", "--high-tripwire"], "on"),
    ],
)
def test_high_tripwire_alone_means_on(argv: list[str], expected: str | None) -> None:
    args = build_parser().parse_args(["run", *argv])
    assert args.high_tripwire == expected
    resolved = resolve(RUN_OPTIONS, vars(args), NO_ENV)["high_tripwire"]
    assert resolved == (expected or "auto")


@pytest.mark.parametrize(
    ("given", "dry_run", "expected"),
    [
        ("auto", False, Tripwire.AUTO),
        ("auto", True, Tripwire.OFF),  # a dry run changes nothing in the containers
        ("on", True, Tripwire.ON),  # unless asked to
        ("off", False, Tripwire.OFF),
    ],
)
def test_high_tripwire_reaches_the_v2_settings(
    given: str, dry_run: bool, expected: Tripwire
) -> None:
    config = build_run_config(values(high_tripwire=given, dry_run=dry_run))
    assert config.v2.tripwire is expected


def test_v2_settings_take_the_old_booleans() -> None:
    assert V2Settings().tripwire is Tripwire.AUTO
    assert V2Settings(high_tripwire=True).tripwire is Tripwire.ON
    assert V2Settings(high_tripwire=False).high_tripwire is Tripwire.OFF


def test_priority_reaches_the_run_config() -> None:
    assert build_run_config(values()).priority == "auto"
    assert build_run_config(values(priority="off")).priority == "off"


def test_build_agent_config_from_defaults() -> None:
    config = build_agent_config(values(policy="process", match="leaf", dry_run=True))
    assert DEFAULT_PARENT == "auto"
    assert config.parent.startswith("/")  # resolved from this host's mounts
    assert config.parent.rsplit("/", 1)[1] in ("kubepods", "kubepods.slice")
    assert build_agent_config(values(parent="/x/kubepods")).parent == "/x/kubepods"
    assert config.match is MatchMode.LEAF
    assert config.settings.policy is Policy.PROCESS
    assert config.settings.dry_run is True
    assert config.settings.min_margin_bytes == 1 * MIB
    assert config.settings.max_margin_bytes == 50 * MIB
    assert config.settings.hot_recheck_interval_s == pytest.approx(0.1)
    assert config.flush_timeout_s == pytest.approx(5.0)
    assert config.rescan_interval_s == pytest.approx(60.0)
    nr_cpus = os.cpu_count() or 1
    expected = check_granularity_bytes(nr_cpus, os.sysconf("SC_PAGE_SIZE"))
    assert config.settings.check_granularity_bytes == expected > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_margin": 64 * MIB, "max_margin": 32 * MIB}, "--min-margin .* --max-margin"),
        ({"margin_ratio": 0.5}, "--margin-ratio must be above 0 and below 0.5"),
        ({"margin_ratio": 0.9}, "--margin-ratio"),
        ({"margin_ratio": 0.0}, "--margin-ratio"),
        ({"min_soft_margin": 64 * MIB, "max_soft_margin": 32 * MIB}, "--min-soft-margin"),
        ({"soft_margin_ratio": 0.5}, "--soft-margin-ratio must be above 0"),
    ],
)
def test_build_agent_config_rejects_inconsistent_settings(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_agent_config(values(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"min_margin": 32 * MIB, "max_margin": 32 * MIB},
        {"min_margin": 0, "max_margin": 0},
        {"margin_ratio": 0.49},
        {"margin_ratio": 0.0001},
    ],
)
def test_build_agent_config_accepts_edge_settings(changes: dict[str, Any]) -> None:
    settings = build_agent_config(values(**changes)).settings
    assert settings.min_margin_bytes <= settings.max_margin_bytes
    assert 0 < settings.margin_ratio < 0.5


@pytest.mark.parametrize(
    ("flag", "bad", "needle"),
    [
        ("psi_trigger", "some 1 2", "WINDOW_US"),
        ("psi_trigger", "half 50000 500000", "some|full"),
        ("psi_trigger", "some 600000 500000", "STALL_US <= WINDOW_US"),
        ("v2_signals", "events,smoke", "choose from"),
        ("cgroup_version", "3", "auto, 1, 2"),
    ],
)
def test_bad_v2_options(flag: str, bad: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve(RUN_OPTIONS, {flag: bad}, NO_ENV)


def test_v2_options_reach_the_config() -> None:
    given = {
        "v2_signals": "psi, poll",
        "psi_trigger": "full  10000 1000000",
        "poll_min_interval": "5ms",
        "poll_max_interval": "2s",
        "high_tripwire": "true",  # the old switch's value: on
    }
    config = build_run_config(resolve(RUN_OPTIONS, given, NO_ENV))
    assert config.v2.signals == {"psi", "poll"}
    assert config.v2.psi_trigger == "full 10000 1000000"
    assert config.v2.poll.min_interval_s == pytest.approx(0.005)
    assert config.v2.poll.max_interval_s == pytest.approx(2.0)
    assert config.v2.tripwire is Tripwire.ON
    with pytest.raises(ConfigError, match="poll-min-interval"):
        build_run_config(resolve(RUN_OPTIONS, {"poll_min_interval": "3s"}, NO_ENV))


# --- every number has a range (issue 9) ------------------------------------------------------

BOUNDED = [option for option in RUN_OPTIONS if isinstance(option.parse, Bounded)]
RANGES = {
    "--parent-wait": ("0s", "24h"),
    "--min-margin": ("0", "1Ti"),
    "--max-margin": ("0", "1Ti"),
    "--min-soft-margin": ("0", "1Ti"),
    "--max-soft-margin": ("0", "1Ti"),
    "--grace-period": ("0s", "1h"),
    "--flush-cooldown": ("0s", "1h"),
    "--flush-interval": ("100ms", "24h"),
    "--flush-timeout": ("10ms", "10m"),
    "--cooldown": ("0s", "1h"),
    "--recheck-interval": ("100ms", "1h"),
    "--hot-recheck-interval": ("1ms", "1m"),
    "--rescan-interval": ("1s", "24h"),
    "--poll-min-interval": ("1ms", "1m"),
    "--poll-max-interval": ("1ms", "1m"),
    "--poll-assumed-rate": ("1", "64Gi"),
    "--swap-io-threshold": ("1", "10000000"),
    "--sustained-duration": ("1s", "1h"),
    "--swap-poll-interval": ("100ms", "1m"),
    "--swap-cooldown": ("0s", "1h"),
    "--report-queue": ("1", "1000000"),
    "--log-queue": ("16", "1000000"),
}


def test_the_documented_ranges() -> None:
    ranges = {o.flag: (o.parse.low, o.parse.high) for o in BOUNDED if isinstance(o.parse, Bounded)}
    assert ranges == RANGES


@pytest.mark.parametrize("option", BOUNDED, ids=lambda option: option.flag)
def test_a_bounded_option_takes_its_bounds_and_its_help_says_them(option: Option) -> None:
    bounded = option.parse
    assert isinstance(bounded, Bounded)
    assert f"({bounded.range_text})" in option.help or f"; {bounded.range_text})" in option.help
    low = resolve(RUN_OPTIONS, {option.dest: bounded.low}, NO_ENV)[option.dest]
    high = resolve(RUN_OPTIONS, {option.dest: bounded.high}, NO_ENV)[option.dest]
    default = resolve(RUN_OPTIONS, NO_FLAGS, NO_ENV)[option.dest]
    if option.default:
        assert low <= default <= high
    else:  # empty: decided elsewhere (--grace-period: the pod's)
        assert default is None
    assert low < high


@pytest.mark.parametrize("option", BOUNDED, ids=lambda option: option.flag)
@pytest.mark.parametrize("suffix", ["", "h", "Ei"])
def test_a_bounded_option_refuses_a_huge_value_naming_the_range(
    option: Option, suffix: str
) -> None:
    bounded = option.parse
    assert isinstance(bounded, Bounded)
    text = "99999999999999999999" + suffix
    with pytest.raises(ConfigError) as info:
        resolve(RUN_OPTIONS, {option.dest: text}, NO_ENV)
    message = str(info.value)
    assert message.startswith(f"{option.flag}: '{text}' is ")
    if "out of range" in message:  # else a unit this flag does not take ("h" for a size)
        assert message.endswith(f"is out of range: at least {bounded.low}, at most {bounded.high}")


@pytest.mark.parametrize(
    ("dest", "text", "message"),
    [
        ("report_queue", "\u0663", "--report-queue: '\u0663' is not a whole number"),
        ("report_queue", "0", "--report-queue: '0' is out of range: at least 1, at most 1000000"),
        ("report_queue", "9" * 5000, "--report-queue: '999"),
        ("cooldown", "\u0663s", "--cooldown: '\u0663s' is not a duration"),
        ("poll_assumed_rate", "0", "--poll-assumed-rate: '0' is out of range: at least 1, at"),
        ("flush_cache_above", "0", "--flush-cache-above: '0' is out of range: at least 1, at"),
        ("flush_cache_above", "99999999999999999999", "at most 4Ei"),
        ("listen", ":\u0669\u0666", "--listen: ':\u0669\u0666' is not HOST:PORT"),
        ("listen", ":65536", "--listen: ':65536': the port is out of range"),
        ("psi_trigger", "some \u0665\u0660\u0660 500000", "is not 'some|full STALL_US"),
        ("psi_trigger", "some 1 " + "9" * 5000, "need 500000 <= WINDOW_US <= 10000000"),
        ("psi_trigger", "some " + "9" * 5000 + " 500000", "0 < STALL_US <= WINDOW_US"),
    ],
)
def test_numbers_are_ascii_and_bounded(dest: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RUN_OPTIONS, {dest: text}, NO_ENV)
    assert str(info.value).startswith(message) or message in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200


def test_psi_trigger_keeps_leading_zeros_as_written() -> None:
    values = resolve(RUN_OPTIONS, {"psi_trigger": "some 050000 0500000"}, NO_ENV)
    assert values["psi_trigger"] == "some 050000 0500000"


def test_the_graceful_options_defaults_and_their_settings() -> None:
    defaults = resolve(RUN_OPTIONS, NO_FLAGS, NO_ENV)
    assert defaults["soft_margin_ratio"] == pytest.approx(0.10)
    assert (defaults["min_soft_margin"], defaults["max_soft_margin"]) == (16 * MIB, 512 * MIB)
    assert defaults["grace_period"] is None  # the pod's, else 30 s
    assert defaults["graceful_via"] == "process"
    given = {"policy": "graceful", "grace_period": "2s", "graceful_via": "evict"}
    settings = build_agent_config({**defaults, **resolve(RUN_OPTIONS, given, NO_ENV)}).settings
    assert settings.policy is Policy.GRACEFUL
    assert settings.grace_period_s == pytest.approx(2.0)
    assert settings.graceful_via is GracefulVia.EVICT
    evict = resolve(RUN_OPTIONS, {}, {"MEMGUARD_POLICY": "evict"})
    assert Policy(evict["policy"]) is Policy.EVICT


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"policy": "gentle"}, "--policy: 'gentle' is not one of"),
        ({"graceful_via": "email"}, "--graceful-via: 'email' is not one of process, evict"),
        ({"grace_period": "2h"}, "--grace-period"),
        ({"min_soft_margin": "lots"}, "--min-soft-margin: 'lots' is not a size"),
    ],
)
def test_bad_graceful_values_are_one_line_errors(flags: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(RUN_OPTIONS, flags, NO_ENV)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


# --- the parsers agree with the README: as written, whole bytes, true/false ------------------


@pytest.mark.parametrize(
    ("dest", "text", "needle"),
    [
        ("cooldown", "5 s", "--cooldown: '5 s' is not a duration such as"),
        ("cooldown", " 5s", "(write it without spaces)"),
        ("cooldown", "5s ", "(write it without spaces)"),
        ("grace_period", " ", "--grace-period: ' ' is not a duration"),
        ("min_margin", "5 Mi", "--min-margin: '5 Mi' is not a size such as"),
        ("min_margin", " 5Mi", "(write it without spaces)"),
        ("report_queue", " 7 ", "--report-queue: ' 7 ' is not a whole number"),
        ("margin_ratio", "2 %", "--margin-ratio: '2 %' is not a ratio"),
        ("margin_ratio", " 0.02", "(write it without spaces)"),
        ("flush_cache_above", "25 %", "--flush-cache-above: '25 %' is not a ratio"),
        ("flush_cache_above", " 1Gi", "(write it without spaces)"),
        ("listen", " :9637", "--listen: ' :9637' is not HOST:PORT"),
        ("policy", "process ", "--policy: 'process ' is not one of"),
        ("high_tripwire", "AUTO", "--high-tripwire: 'AUTO' is not one of auto, on, off"),
        ("high_tripwire", "on ", "is not one of auto, on, off"),
        ("high_tripwire", "yes", "is not one of auto, on, off"),
    ],
)
def test_values_are_taken_as_written_without_spaces(dest: str, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RUN_OPTIONS, {dest: text}, NO_ENV)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1.5", "'1.5' is not a whole number of bytes"),
        ("0.1Ki", "'0.1Ki' is not a whole number of bytes"),
        ("1.0000001Mi", "is not a whole number of bytes"),
        ("1." + "5" * 40 + "Ki", "is not a whole number of bytes"),
        ("1mi", "case-sensitive: Ki Mi Gi Ti Pi Ei, k M G T P E; B optional"),
        ("1MI", "case-sensitive"),
        ("1mib", "case-sensitive"),
        ("1K", "case-sensitive"),
        ("1m", "case-sensitive"),  # Kubernetes' milli
        ("1g", "case-sensitive"),
        ("100B", "case-sensitive"),
        ("1e3", "is not a size"),
        ("", "is not a size"),
    ],
)
def test_sizes_are_whole_bytes_with_kubernetes_suffixes(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RUN_OPTIONS, {"min_margin": text}, NO_ENV)
    assert str(info.value).startswith("--min-margin: ")
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", MIB),
        ("1Mi", MIB),
        ("1MiB", MIB),
        ("1M", 10**6),
        ("1MB", 10**6),
        ("1k", 1000),
        ("1kB", 1000),
        ("512Ki", 512 * 1024),
        ("1.5Mi", 3 * MIB // 2),
        ("0.5Ki", 512),
        (".5Ki", 512),
        ("1.50Ki", 1536),
        ("1.0", 1),
        ("1.25k", 1250),
    ],
)
def test_sizes_the_readme_names_are_accepted(text: str, expected: int) -> None:
    assert resolve(RUN_OPTIONS, {"min_margin": text}, NO_ENV)["min_margin"] == expected


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "1", "0", "y", "tRUE", " true"])
def test_booleans_are_true_or_false_only(word: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RUN_OPTIONS, {}, {"MEMGUARD_DRY_RUN": word})
    assert str(info.value) == f"$MEMGUARD_DRY_RUN: {word!r} is not a boolean: write true or false"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("FALSE", False)],
)
def test_booleans_take_the_yaml_spellings_of_true_and_false(word: str, expected: bool) -> None:
    assert resolve(RUN_OPTIONS, {}, {"MEMGUARD_SWAP_TRIGGER": word})["swap_trigger"] is expected


@pytest.mark.parametrize(
    ("text", "host"),
    [(".:0", "."), ("a..b:0", "a..b"), ("a" * 64 + ":0", "a" * 64), ("x." * 130 + ":1", "x.")],
)
def test_listen_refuses_a_host_that_cannot_be_resolved(text: str, host: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RUN_OPTIONS, {"listen": text}, NO_ENV)
    message = str(info.value)
    assert message.startswith("--listen: ")
    assert f": cannot resolve {shown(host)}" in message or "cannot resolve '" + host in message
    assert len(message) < 300


@pytest.mark.parametrize("text", [":9637", "127.0.0.1:0", "[::1]:0", "localhost:9637", ""])
def test_listen_takes_addresses_and_names(text: str) -> None:
    assert resolve(RUN_OPTIONS, {"listen": text}, NO_ENV)["listen"] == text


@pytest.mark.parametrize("option", RUN_OPTIONS, ids=lambda option: option.flag)
def test_every_value_repeated_in_an_error_is_cut(option: Option) -> None:
    long = "x" * 10_000 + ":1"
    try:
        resolve(RUN_OPTIONS, {option.dest: long}, NO_ENV)
    except ConfigError as error:
        message = str(error)
    else:  # a path or a name: taken as written (memguard.cli.main cuts any error line)
        return
    assert len(message) < 400
    assert "x" * 61 not in message


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MEMGUARD_POLICY": "noop"}, None),
        ({"MEMGUARD_CONFIG": "a.yaml", "MEMGUARD_STATUS_SOCKET": "off"}, None),
        ({"HOME": "/root", "memguard_policy": "x"}, None),
        (
            {"MEMGUARD_POLICI": "noop"},
            "ignoring unknown environment variable: 'MEMGUARD_POLICI' "
            "(did you mean MEMGUARD_POLICY?)",
        ),
        (
            {"MEMGUARD_DRYRUN": "true", "MEMGUARD_ZZZZ": "1"},
            "ignoring unknown environment variables: 'MEMGUARD_DRYRUN' "
            "(did you mean MEMGUARD_DRY_RUN?), 'MEMGUARD_ZZZZ'",
        ),
    ],
)
def test_unknown_memguard_variables_are_named_with_the_closest_one(
    environ: dict[str, str], expected: str | None
) -> None:
    assert unknown_environment(RUN_OPTIONS, environ) == expected


def test_many_unknown_variables_are_counted_not_all_named() -> None:
    environ = {f"MEMGUARD_UNKNOWN_{n:03d}": "" for n in range(100)}
    warning = unknown_environment(RUN_OPTIONS, environ)
    assert warning is not None
    assert warning.endswith(", and 92 more")
    assert len(warning) < 1000


@pytest.mark.parametrize("via", ["evict", "delete"])
def test_graceful_via_the_api_server_needs_kubernetes(via: str) -> None:
    given = {"policy": "graceful", "graceful_via": via, "kubernetes": "off"}
    with pytest.raises(ConfigError) as info:
        build_run_config(resolve(RUN_OPTIONS, given, NO_ENV))
    assert str(info.value).startswith(f"--graceful-via {via} ")
    assert "but --kubernetes is off" in str(info.value)


@pytest.mark.parametrize(
    ("given", "warned"),
    [
        ({"policy": "process", "graceful_via": "delete"}, True),
        ({"policy": "evict", "graceful_via": "evict"}, True),  # evict evicts anyway
        ({"policy": "graceful", "graceful_via": "delete"}, False),
        ({"policy": "process", "graceful_via": "evict", "swap_trigger": "true"}, False),
        ({"policy": "process", "graceful_via": "process"}, False),
        ({"policy": "process", "graceful_via": "process", "kubernetes": "off"}, False),
    ],
)
def test_graceful_via_without_a_graceful_policy_is_a_warning(
    given: dict[str, str], warned: bool
) -> None:
    values = resolve(RUN_OPTIONS, given, NO_ENV)
    build_run_config(values)  # accepted
    warnings = run_warnings(values)
    assert bool(warnings) is warned
    if warned:
        assert warnings[0].startswith(f"--graceful-via {given['graceful_via']} only applies to")
        assert "memguard.io/policy: graceful" in warnings[0]


def test_only_comma_list_options_are_lists() -> None:
    lists = {option.flag for option in RUN_OPTIONS if option.is_list}
    assert lists == {"--v2-signals", "--protected-namespaces"}


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("--url http://user:pw@host:1/x: refused", "--url http://user:***@host:1/x: refused"),
        ("'https://user:p:w@a@host'", "'https://user:***@host'"),
        ("https://t0ken@host/", "https://***@host/"),
        ("no url user:pw here", "no url user:pw here"),
        ("two\nlines", "two\\x0alines"),
        ("x" * 5000, "x" * MAX_ERROR_CHARS + "..."),
    ],
)
def test_an_error_line_is_one_bounded_line_without_url_passwords(message: str, line: str) -> None:
    assert one_line(message) == line
