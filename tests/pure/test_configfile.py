"""`memguard run --config FILE`: keys, YAML values, precedence, and errors naming the file."""

from __future__ import annotations

import os
import pathlib
import socket
from fractions import Fraction
from typing import Any

import pytest
import yaml

from memguard.cli.configfile import ConfigFile, load_config_file
from memguard.cli.options import RUN_OPTIONS, resolve
from memguard.errors import ConfigError
from memguard.policy.model import CacheLimit
from memguard.policy.qos import QosClass, parse_qos_config
from memguard.safeyaml import YamlRefusal, compose_bounded, read_regular_file

MIB = 1 << 20
NO_FLAGS: dict[str, str | None] = {}
NO_ENV: dict[str, str] = {}


def write(tmp_path: pathlib.Path, text: str, name: str = "memguard.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(tmp_path: pathlib.Path, text: str) -> ConfigFile:
    return load_config_file(write(tmp_path, text), RUN_OPTIONS)


def resolved(
    file: ConfigFile,
    given: dict[str, str | None] | None = None,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    return resolve(RUN_OPTIONS, given or NO_FLAGS, environ or NO_ENV, file.values, file.path)


# keys ----------------------------------------------------------------------------------------


def test_dashes_and_underscores_map_to_option_dests(tmp_path: pathlib.Path) -> None:
    file = load(
        tmp_path,
        "margin-ratio: 3%\nmin_margin: 4Mi\nflush_cache_above: 25%\nhot-recheck-interval: 250ms\n",
    )
    assert set(file.values) == {
        "margin_ratio",
        "min_margin",
        "flush_cache_above",
        "hot_recheck_interval",
    }
    assert file.memory_qos is None
    values = resolved(file)
    assert values["margin_ratio"] == pytest.approx(0.03)
    assert values["min_margin"] == 4 * MIB
    assert values["flush_cache_above"] == CacheLimit(ratio=0.25)
    assert values["hot_recheck_interval"] == pytest.approx(0.25)


def test_every_flag_is_accepted_as_a_key(tmp_path: pathlib.Path) -> None:
    keys = [option.flag.removeprefix("--") for option in RUN_OPTIONS]
    text = "".join(
        f"{key}: {option.default!r}\n" for key, option in zip(keys, RUN_OPTIONS, strict=True)
    )
    file = load(tmp_path, text)
    assert set(file.values) == {option.dest for option in RUN_OPTIONS}
    # the defaults written out in a file resolve exactly like no file at all
    assert resolved(file) == resolve(RUN_OPTIONS, NO_FLAGS, NO_ENV)


# values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dest", "expected"),
    [
        ("policy: process", "policy", "process"),
        ("policy: noop", "policy", "noop"),
        ("flush-cache-above: 25%", "flush_cache_above", CacheLimit(ratio=0.25)),
        ("flush-cache-above: 512Mi", "flush_cache_above", CacheLimit(size_bytes=512 * MIB)),
        ("flush-cache-above: ''", "flush_cache_above", None),
        ("flush-cache-above:", "flush_cache_above", None),
        ("margin-ratio: 0.03", "margin_ratio", 0.03),
        ("margin-ratio: 3%", "margin_ratio", 0.03),
        ("high-tripwire: true", "high_tripwire", "on"),
        ("high-tripwire: True", "high_tripwire", "on"),
        ("high-tripwire: false", "high_tripwire", "off"),
        ("high-tripwire: FALSE", "high_tripwire", "off"),
        ("high-tripwire: auto", "high_tripwire", "auto"),
        ("high-tripwire: on", "high_tripwire", "on"),
        ("high-tripwire: off", "high_tripwire", "off"),
        ("v2-signals: [events, poll]", "v2_signals", frozenset({"events", "poll"})),
        ("v2-signals:\n- psi\n", "v2_signals", frozenset({"psi"})),
        ("v2-signals: events,psi", "v2_signals", frozenset({"events", "psi"})),
        ("report-queue: 7", "report_queue", 7),
        ("min-margin: 4194304", "min_margin", 4 * MIB),
        ("flush-cooldown: 2.5", "flush_cooldown", 2.5),
        ("psi-trigger: some 10000 1000000", "psi_trigger", "some 10000 1000000"),
        ("kubeconfig: ~", "kubeconfig", ""),
        ("node-name: '12345'", "node_name", "12345"),
        ("listen: ':9637'", "listen", ":9637"),
        ("log-level: debug", "log_level", "debug"),
        # only true/false are YAML booleans: the rest reach the flag's own parser as text
        ("kubernetes: off", "kubernetes", "off"),
        ("kubernetes: auto", "kubernetes", "auto"),
        ("dry-run: true", "dry_run", True),
        ("dry-run: False", "dry_run", False),
        ("dry-run:", "dry_run", False),
        ("protected-namespaces: [kube-system, infra]", "protected_namespaces",
         frozenset({"kube-system", "infra"})),
        ("protected-namespaces: []", "protected_namespaces", frozenset()),
    ],
)  # fmt: skip
def test_values_are_parsed_by_the_flags_parser(
    tmp_path: pathlib.Path, text: str, dest: str, expected: Any
) -> None:
    file = load(tmp_path, text + "\n")
    assert set(file.values) == {dest}
    got = resolved(file)[dest]
    assert type(got) is type(expected)
    assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize(
    ("text", "dest", "raw"),
    [
        ("kubernetes: off", "kubernetes", "off"),
        ("dry-run: yes", "dry_run", "yes"),
        ("dry-run: No", "dry_run", "No"),
        ("kubernetes: ON", "kubernetes", "ON"),
        ("high-tripwire: true", "high_tripwire", "true"),
        ("high-tripwire: False", "high_tripwire", "false"),
        ("v2-signals: [events, poll]", "v2_signals", "events,poll"),
        ("policy: ~", "policy", ""),
    ],
)
def test_yaml_1_1_words_stay_text(tmp_path: pathlib.Path, text: str, dest: str, raw: str) -> None:
    assert dict(load(tmp_path, text + "\n").values) == {dest: raw}


def test_a_yaml_boolean_is_not_a_choice(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "kubernetes: false\n")
    file = load_config_file(path, RUN_OPTIONS)
    with pytest.raises(ConfigError) as info:
        resolved(file)
    message = str(info.value)
    assert path in message
    assert "kubernetes" in message
    assert "'false'" in message


def test_other_options_keep_their_defaults(tmp_path: pathlib.Path) -> None:
    values = resolved(load(tmp_path, "policy: process\n"))
    defaults = resolve(RUN_OPTIONS, NO_FLAGS, NO_ENV)
    assert values["policy"] == "process" != defaults["policy"]
    assert {k: v for k, v in values.items() if k != "policy"} == {
        k: v for k, v in defaults.items() if k != "policy"
    }


# precedence ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_file", "given", "environ", "expected"),
    [
        (False, {}, {}, 1 * MIB),  # the default
        (True, {}, {}, 4 * MIB),  # the file beats the default
        (True, {}, {"MEMGUARD_MIN_MARGIN": "8Mi"}, 8 * MIB),  # env beats the file
        (False, {}, {"MEMGUARD_MIN_MARGIN": "8Mi"}, 8 * MIB),
        (True, {"min_margin": "2Mi"}, {"MEMGUARD_MIN_MARGIN": "8Mi"}, 2 * MIB),  # flag beats all
        (True, {"min_margin": "2Mi"}, {}, 2 * MIB),
        (True, {"min_margin": None}, {}, 4 * MIB),  # a flag not given is no value
        (True, {}, {"MEMGUARD_MAX_MARGIN": "8Mi", "memguard_min_margin": "8Mi"}, 4 * MIB),
    ],
)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: pathlib.Path,
    in_file: bool,
    given: dict[str, str | None],
    environ: dict[str, str],
    expected: int,
) -> None:
    text = "min-margin: 4Mi\n" if in_file else "policy: process\n"
    values = resolved(load(tmp_path, text), given, environ)
    assert values["min_margin"] == expected


def test_a_bad_file_value_is_harmless_when_overridden(tmp_path: pathlib.Path) -> None:
    file = load(tmp_path, "policy: kill\n")
    assert resolved(file, {"policy": "noop"})["policy"] == "noop"
    assert resolved(file, environ={"MEMGUARD_POLICY": "process"})["policy"] == "process"
    with pytest.raises(ConfigError, match="policy"):
        resolved(file)


# errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("policy: [unclosed\n", ["not valid YAML", "line 2"]),
        ("policy: process\n  bad: indent\n", ["not valid YAML", "line 2"]),
        ("policy: process\ndry-run: @x\n", ["not valid YAML", "line 2", "'@'"]),
        ("- policy\n- process\n", ["mapping"]),
        ("just text\n", ["mapping"]),
        ("42\n", ["mapping"]),
        ("polcy: process\n", ["'polcy'", "did you mean 'policy'"]),
        ("margin_ratoi: 0.1\n", ["'margin_ratoi'", "did you mean 'margin-ratio'"]),
        ("Policy: process\n", ["'Policy'"]),
        ("unified_annotations: [memory.high]\n", ["did you mean 'unifiedannotations'"]),
        ("class: [{name: silver}]\n", ["'class'", "did you mean 'classes'"]),
        ("zzzzzzzz: 1\n", ["'zzzzzzzz'"]),
        ("config: other.yaml\n", ["'config'", "do not include"]),
        ("v2-signals: {events: true}\n", ["v2-signals", "expected a single value, got a mapping"]),
        ("policy:\n  name: process\n", ["policy", "got a mapping"]),
        ("v2-signals: [[events], poll]\n", ["v2-signals", "expected a list of names"]),
        ("policy: [process]\n", ["policy: expected a single value, got a list"]),
        ("policy: [noop, process]\n", ["policy: expected a single value, got a list"]),
        ("min-margin: [1Mi]\n", ["min-margin: expected a single value, got a list"]),
        ("protected-namespaces: [a, ~]\n", ["protected-namespaces: expected a list of names"]),
        ("protected-namespaces: ['a,b']\n", ["no commas"]),
        ("v2-signals: [true]\n", ["v2-signals: expected a list of names"]),
        ("? " + "p" * 5000 + "\n: 1\n", ["unknown key 'ppppp", "'..."]),
        ("classes: [{name: silver, swaplimitratio: 2}]\n", ["classes[0]", "swaplimitratio", "2"]),
        ("classes: [{name: a}, {name: a}]\n", ["classes[1]", "'a'"]),
        ("classes: [{name: a, ratio: 0.1}]\n", ["classes[0]", "ratio"]),
        ("classes: {name: silver}\n", ["classes"]),
        ("unifiedannotations: [cgroup.procs]\n", ["unifiedannotations[0]", "cgroup.procs"]),
        ("unifiedannotations: memory.high\n", ["unifiedannotations"]),
    ],
)
def test_errors_name_the_file_and_the_culprit(
    tmp_path: pathlib.Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path, RUN_OPTIONS)
    message = str(info.value)
    assert message.startswith(f"--config {path}:")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_invalid_yaml_reports_the_line_where_it_broke(tmp_path: pathlib.Path) -> None:
    lines = ["policy: process", "dry-run: true", "min-margin: 4Mi", "v2-signals: [events", "x: 1"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path, RUN_OPTIONS)
    # the flow sequence opened on line 4 breaks at the next key, line 5
    assert " line 5," in str(info.value)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError) as info:
        load_config_file(path, RUN_OPTIONS)
    assert str(info.value).startswith(f"--config {path}:")
    assert "No such file" in str(info.value)


def test_a_directory_is_not_a_config_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(str(tmp_path), RUN_OPTIONS)
    assert str(info.value).startswith(f"--config {tmp_path}:")


def test_a_file_that_is_not_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("node-name: n\xe9ud\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path), RUN_OPTIONS)
    assert str(info.value).startswith(f"--config {path}:")
    assert "UTF-8" in str(info.value)


def test_a_file_larger_than_a_mebibyte(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "policy: process\n" + "#" * MIB + "\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path, RUN_OPTIONS)
    assert str(info.value).startswith(f"--config {path}:")
    assert "1 MiB" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("margin-ratio: 2x\n", "margin-ratio", "'2x'"),
        ("margin_ratio: 150%\n", "margin-ratio", "'150%'"),
        ("policy: kill\n", "policy", "'kill'"),
        ("dry-run: maybe\n", "dry-run", "'maybe'"),
        ("v2-signals: [events, smoke]\n", "v2-signals", "'events,smoke'"),
        ("report-queue: 0\n", "report-queue", "'0'"),
        ("flush-timeout: 0s\n", "flush-timeout", "'0s'"),
    ],
)
def test_a_bad_value_is_reported_by_resolve_with_file_and_key(
    tmp_path: pathlib.Path, text: str, key: str, value: str
) -> None:
    path = write(tmp_path, text)
    file = load_config_file(path, RUN_OPTIONS)  # loading takes any text; parsing judges it
    with pytest.raises(ConfigError) as info:
        resolved(file)
    message = str(info.value)
    assert message.startswith(f"--config {path}: {key}:")
    assert value in message


def test_classes_that_is_a_number_is_a_config_error(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "classes: 5\n")
    with pytest.raises(ConfigError, match="classes"):
        load_config_file(path, RUN_OPTIONS)


# empty files and memory QoS ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "# nothing here yet\n", "---\n", "~\n"])
def test_an_empty_file_gives_nothing(tmp_path: pathlib.Path, text: str) -> None:
    path = write(tmp_path, text)
    file = load_config_file(path, RUN_OPTIONS)
    assert file.path == path
    assert dict(file.values) == {}
    assert file.memory_qos is None
    assert resolved(file) == resolve(RUN_OPTIONS, NO_FLAGS, NO_ENV)


def test_classes_and_unified_annotations_give_a_qos_config(tmp_path: pathlib.Path) -> None:
    file = load(
        tmp_path,
        "policy: process\n"
        "classes:\n"
        "- name: bronze\n"
        "  swaplimitratio: 0.5\n"
        "- name: silver\n"
        "  swaplimitratio: 0.2\n"
        "unifiedannotations: [memory.high, memory.swap.max]\n",
    )
    assert dict(file.values) == {"policy": "process"}  # the QoS keys are not flags
    qos = file.memory_qos
    assert qos is not None
    assert qos.enabled
    assert dict(qos.classes) == {
        "bronze": QosClass("bronze", Fraction(1, 2)),
        "silver": QosClass("silver", Fraction(1, 5)),
    }
    assert qos.unified_files == frozenset({"memory.high", "memory.swap.max"})


@pytest.mark.parametrize(
    ("text", "classes", "unified"),
    [
        ("classes: [{name: gold}]\n", [{"name": "gold"}], None),
        ("unifiedannotations: [memory.high]\n", None, ["memory.high"]),
        ("classes: []\n", [], None),
        ("classes:\nunifiedannotations:\n", None, None),
    ],
)
def test_either_qos_key_alone_gives_a_qos_config(
    tmp_path: pathlib.Path, text: str, classes: Any, unified: Any
) -> None:
    qos = load(tmp_path, text).memory_qos
    assert qos is not None
    assert qos == parse_qos_config(classes, unified)
    assert qos.enabled is bool(classes or unified)


# scalars are kept as written -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dest", "want"),
    [
        ("report-queue: 010\n", "report_queue", 10),  # YAML 1.1: octal 8
        ("cooldown: 1:30\n", "cooldown", None),  # YAML 1.1: sexagesimal 90 -> refused here
        ("node-name: 1.10\n", "node_name", "1.10"),  # YAML 1.1: float 1.1
        ("margin-ratio: 0.00001\n", "margin_ratio", 0.00001),
    ],
)
def test_plain_scalars_reach_the_parser_as_written(
    tmp_path: pathlib.Path, text: str, dest: str, want: Any
) -> None:
    file = load(tmp_path, text)
    assert file.values[dest] == text.split(": ", 1)[1].strip()
    if want is None:
        with pytest.raises(ConfigError, match="1:30"):
            resolved(file)
    else:
        assert resolved(file)[dest] == want


def test_a_key_given_twice_is_an_error(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "policy: process\npolicy: noop\n")
    with pytest.raises(ConfigError, match="duplicate key 'policy'"):
        load_config_file(path, RUN_OPTIONS)


def test_two_spellings_of_one_key_are_an_error(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "dry-run: true\ndry_run: false\n")
    with pytest.raises(ConfigError, match="are one key"):
        load_config_file(path, RUN_OPTIONS)


# hostile files (issue 9) -----------------------------------------------------------------------


def _laughs(levels: int) -> str:
    """A "billion laughs": each level ten aliases of the one before (10**levels values)."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def load_error(tmp_path: pathlib.Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path, RUN_OPTIONS)
    message = str(info.value)
    assert message.startswith(f"--config {path}: ")
    assert "\n" not in message
    return message.removeprefix(f"--config {path}: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("? [a, b]\n: 1\n", "line 1, column 3: a key must be a string, not list"),
        ("? {a: 1}\n: 1\n", "line 1, column 3: a key must be a string, not dict"),
        ("~: 1\n", "line 1, column 1: a key must be a string, not null"),
        ("true: 1\n", "line 1, column 1: a key must be a string, not bool"),
        ("classes: [{? [a]\n : 1}]\n", "line 1, column 14: a key must be a string, not list"),
        ("policy: process\npolicy: noop\n", "line 2, column 1: duplicate key 'policy'"),
    ],
)
def test_keys_must_be_strings(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 1000, "line 1, column 33: nested deeper than 32 levels"),
        ("{" * 1000, "line 1, column 33: nested deeper than 32 levels"),
        ("[" * 33 + "]" * 33, "line 1, column 33: nested deeper than 32 levels"),
        ("".join("  " * n + "a:\n" for n in range(40)), "line 33, column 65: nested deeper"),
        ("".join(" " * n + "- \n" for n in range(1000)), "nested deeper than 32 levels"),
        # depth through an alias counts the anchor's depth
        ("a: &a " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 12 + "*a" + "]" * 12, "nested deeper"),
        (_laughs(9), "more than 100000 values (aliases expanded)"),
        (_laughs(6), "more than 100000 values (aliases expanded)"),
        ("policy: &a [*a]\n", "line 1, column 13: a recursive alias"),
        ("policy: &a {x: *a}\n", "a recursive alias"),
        ("policy: *nowhere\n", "not valid YAML (found undefined alias 'nowhere')"),
    ],
)
def test_deep_large_and_recursive_documents_are_refused(
    tmp_path: pathlib.Path, text: str, expected: str
) -> None:
    assert expected in load_error(tmp_path, text)


def test_32_levels_are_allowed_and_benign_aliases_work(tmp_path: pathlib.Path) -> None:
    text = "policy: " + "[" * 31 + "]" * 31 + "\n"
    assert "policy: expected a single value, got a list" in load_error(tmp_path, text)
    file = load(
        tmp_path,
        "policy: &p process\nnode-name: *p\nclasses:\n- &silver {name: silver, swaplimitratio: "
        "0.2}\nunifiedannotations: &files [memory.high]\n",
    )
    assert dict(file.values) == {"policy": "process", "node_name": "process"}
    assert file.memory_qos is not None
    assert sorted(file.memory_qos.classes) == ["silver"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policy: !!python/object/apply:os.system [true]\n", "python/object/apply:os.system'"),
        ("policy: !!python/name:os.system ''\n", "'tag:yaml.org,2002:python/name:os.system'"),
        ("report-queue: !!int abc\n", "'tag:yaml.org,2002:int' is not allowed"),
        ("report-queue: !!int 12\n", "'tag:yaml.org,2002:int' is not allowed"),
        ("cooldown: !!float nan\n", "'tag:yaml.org,2002:float' is not allowed"),
        ("node-name: !!timestamp x\n", "'tag:yaml.org,2002:timestamp' is not allowed"),
        ("node-name: !!binary '%%%'\n", "'tag:yaml.org,2002:binary' is not allowed"),
        ("node-name: !!set {a}\n", "'tag:yaml.org,2002:set' is not allowed"),
        ("classes: !!omap [a: 1]\n", "'tag:yaml.org,2002:omap' is not allowed"),
        ("policy: !custom x\n", "the tag '!custom' is not allowed"),
        ("dry-run: !!bool maybe\n", "line 1, column 10: !!bool 'maybe' is not true or false"),
        ("? !!merge <<\n: {policy: process}\n", "'tag:yaml.org,2002:merge' is not allowed"),
    ],
)
def test_only_plain_tags_are_allowed(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "dest", "raw"),
    [
        ("policy: !!str process\n", "policy", "process"),
        ("dry-run: !!bool true\n", "dry_run", "true"),
        ("kubeconfig: !!null ''\n", "kubeconfig", ""),
        ("v2-signals: !!seq [events]\n", "v2_signals", "events"),
    ],
)
def test_the_plain_tags_still_work(tmp_path: pathlib.Path, text: str, dest: str, raw: str) -> None:
    assert dict(load(tmp_path, text).values) == {dest: raw}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes(range(256)), "not UTF-8 text"),
        (b"policy: a\x00b\n", "not valid YAML (unacceptable character #x0000"),
        (b"\x7fELF\x02\x01\x01\x00", "not valid YAML (unacceptable character #x007f"),
        (b"\xef\xbb\xbfpolicy: noop\n", None),  # a UTF-8 byte order mark is fine
    ],
)
def test_binary_files(tmp_path: pathlib.Path, data: bytes, expected: str | None) -> None:
    path = tmp_path / "memguard.yaml"
    path.write_bytes(data)
    if expected is None:
        assert dict(load_config_file(str(path), RUN_OPTIONS).values) == {"policy": "noop"}
        return
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path), RUN_OPTIONS)
    assert str(info.value).startswith(f"--config {path}: {expected}")


def test_a_fifo_is_refused_without_blocking(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "memguard.yaml"
    os.mkfifo(fifo)  # no writer: a plain open() would block here for ever
    with pytest.raises(ConfigError) as info:
        load_config_file(str(fifo), RUN_OPTIONS)
    assert str(info.value) == f"--config {fifo}: not a regular file (a FIFO)"


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/dev/null", "a character device"), ("/dev/zero", "a character device"),
     ("{tmp}", "a directory")],
)  # fmt: skip
def test_devices_and_directories_are_refused(tmp_path: pathlib.Path, path: str, kind: str) -> None:
    path = path.format(tmp=tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config_file(path, RUN_OPTIONS)
    assert str(info.value) == f"--config {path}: not a regular file ({kind})"


def test_a_socket_is_refused(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        with pytest.raises(ValueError, match=r"^not a regular file \(a socket\)$"):
            read_regular_file(path, 100)


def test_read_regular_file_reads_at_most_the_limit(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(str(path), 100) == b"x" * 100
    with pytest.raises(ValueError, match="larger than"):
        read_regular_file(str(path), 99)
    with pytest.raises(FileNotFoundError):
        read_regular_file(str(tmp_path / "absent"), 100)


def test_compose_bounded_gives_nodes_and_keeps_the_limits() -> None:
    node = compose_bounded("clusters: []\ncontexts: [{name: a}]\n")
    assert isinstance(node, yaml.MappingNode)
    assert compose_bounded("") is None
    with pytest.raises(YamlRefusal, match="nested deeper"):
        compose_bounded("[" * 100)
    with pytest.raises(YamlRefusal, match="aliases expanded"):
        compose_bounded(_laughs(9))
