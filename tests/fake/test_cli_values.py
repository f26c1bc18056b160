"""The real `memguard` console script refuses, in one line and exit 2, what the README
says it does not take (the second input audit): kubeconfig-named files that are no
small regular files, hosts --listen cannot resolve, values repeated without bound,
YAML lists for single-value flags, words that are no booleans, spaces in numbers,
fractional bytes, case-insensitive size suffixes, an empty --config, a
--graceful-via that cannot work; and it warns, without refusing, of unknown
MEMGUARD_* variables and of a --graceful-via only annotated pods use.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.fake.test_cli_inputs import (
    MEMGUARD,
    TIMEOUT_S,
    _clean_environment,
    assert_refused,
    error_line,
    memguard,
)

TWO_MIB = 2 << 20
QUIET = ["--status-socket", "off", "--priority", "off"]


def kubeconfig(directory: pathlib.Path, user: dict[str, Any], cluster: dict[str, Any]) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", **cluster}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
        "users": [{"name": "u", "user": user}],
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config))
    return str(path)


def _fifo(tmp: pathlib.Path) -> str:
    os.mkfifo(tmp / "fifo")
    return str(tmp / "fifo")


def _big(tmp: pathlib.Path) -> str:
    (tmp / "big").write_bytes(b"x" * TWO_MIB)
    return str(tmp / "big")


FILES: dict[str, tuple[str, Callable[[pathlib.Path], str], str]] = {
    "token-zero": ("tokenFile", lambda tmp: "/dev/zero", "not a regular file (a character device)"),
    "token-fifo": ("tokenFile", _fifo, "not a regular file (a FIFO)"),
    "token-2MiB": ("tokenFile", _big, "larger than 1 MiB"),
    "token-missing": ("tokenFile", lambda tmp: str(tmp / "absent"), "no such file"),
    "ca-directory": ("certificate-authority", str, "not a regular file (a directory)"),
    "ca-zero": ("certificate-authority", lambda tmp: "/dev/zero", "not a regular file (a char"),
    "cert-fifo": ("client-certificate", _fifo, "not a regular file (a FIFO)"),
    "key-2MiB": ("client-key", _big, "larger than 1 MiB"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_a_file_the_kubeconfig_names_is_checked_before_it_is_read(
    empty_fake_root: str, tmp_path: pathlib.Path, case: str
) -> None:
    key, make, problem = FILES[case]
    named = make(tmp_path)
    in_cluster = key == "certificate-authority"
    path = kubeconfig(
        tmp_path, {} if in_cluster else {key: named}, {key: named} if in_cluster else {}
    )
    result = memguard("run", "--parent", empty_fake_root, *QUIET, "--kubeconfig", path)
    who = "cluster 'c'" if in_cluster else "user 'u'"
    assert_refused(result, f"--kubeconfig {path}: {who}: {key} {named}: {problem}")


def test_an_exec_plugin_that_is_not_there_is_named(
    empty_fake_root: str, tmp_path: pathlib.Path
) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "no-plugin-x"}}
    path = kubeconfig(tmp_path, user, {})
    result = memguard("run", "--parent", empty_fake_root, *QUIET, "--kubeconfig", path)
    assert_refused(result, "user 'u': exec command 'no-plugin-x': not found in $PATH")


# --- --listen and status --url: hosts the resolver cannot take ---------------------------------


@pytest.mark.parametrize("host", [".", "a..b", "a" * 64])
def test_listen_with_a_host_that_cannot_be_resolved_is_one_line(
    empty_fake_root: str, host: str
) -> None:
    value = f"{host}:0"
    for result in (
        memguard("run", "--parent", empty_fake_root, *QUIET, "--listen", value),
        memguard("run", "--parent", empty_fake_root, *QUIET, env={"MEMGUARD_LISTEN": value}),
    ):
        line = error_line(result)
        assert line.startswith(("memguard run: error: --listen: ", "memguard run: error: $MEMG"))
        assert f"{value[:20]}" in line
        assert ": cannot resolve '" in line


def test_listen_in_a_config_file_with_a_host_that_cannot_be_resolved(
    empty_fake_root: str, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "memguard.yaml"
    config.write_text("listen: '.:0'\n")
    result = memguard("run", "--parent", empty_fake_root, *QUIET, "--config", str(config))
    assert_refused(result, f"--config {config}: listen: '.:0': cannot resolve '.'")


# --- values repeated in errors are cut, and URL credentials masked -----------------------------


def test_a_long_config_path_is_cut_in_the_error() -> None:
    path = "/tmp/" + "d" * 12_000 + ".yaml"
    line = error_line(memguard("run", "--config", path))
    assert line.startswith("memguard run: error: --config /tmp/ddd")
    assert len(line) < 400


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--policy", "p" * 10_000),
        ("--cooldown", "1" * 10_000 + "x"),
        ("--listen", "h" * 10_000 + ":1"),
        ("--protected-namespaces", "N" * 10_000),
        ("--hold-ledger", "relative" * 1000),
    ],
)
def test_a_long_value_is_cut_in_the_error(flag: str, value: str) -> None:
    line = error_line(memguard("run", flag, value))
    assert line.startswith(f"memguard run: error: {flag}: ")
    assert len(line) < 400


def test_an_error_line_never_repeats_a_url_password() -> None:
    # memguard status parses --url itself (memguard.cli.status); whatever it says, the
    # error line is cut and masked where it is written (memguard.cli.main.one_line)
    line = error_line(memguard("status", "--once", "--url", "ftp://user:pw@127.0.0.1:9"))
    assert "pw" not in line
    assert "user" not in line or "user:***@" in line
    line = error_line(memguard("status", "--once", "--url", "ftp://" + "u" * 10_000))
    assert len(line) < 1100


# --- parsers and the README agree ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--cooldown", "5 s"], "--cooldown: '5 s' is not a duration"),
        (["--cooldown", " 5s"], "(write it without spaces)"),
        (["--min-margin", "5 Mi"], "--min-margin: '5 Mi' is not a size"),
        (["--min-margin", "1.5"], "--min-margin: '1.5' is not a whole number of bytes"),
        (["--min-margin", "1mi"], "case-sensitive"),
        (["--min-margin", "1MI"], "case-sensitive"),
        (["--policy", "noop "], "--policy: 'noop ' is not one of"),
        (["--config", ""], "--config: an empty path"),
        (["--config", "  "], "--config: an empty path"),
        (["--graceful-via", "evict", "--kubernetes", "off"], "but --kubernetes is off"),
        (["--graceful-via", "delete", "--kubernetes", "off"], "--graceful-via delete deletes"),
    ],
)
def test_values_the_readme_does_not_take_are_refused(
    empty_fake_root: str, args: list[str], needle: str
) -> None:
    result = memguard("run", "--parent", empty_fake_root, *QUIET, *args)
    assert_refused(result, needle)


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "1", "0"])
def test_booleans_are_true_or_false(empty_fake_root: str, word: str) -> None:
    result = memguard("run", "--parent", empty_fake_root, *QUIET, env={"MEMGUARD_DRY_RUN": word})
    assert_refused(result, f"$MEMGUARD_DRY_RUN: '{word}' is not a boolean: write true or false")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("policy: [process]\n", "policy: expected a single value, got a list"),
        ("policy: [noop, process]\n", "policy: expected a single value, got a list"),
        ("dry-run: yes\n", "dry-run: 'yes' is not a boolean: write true or false"),
        ("cooldown: 5 s\n", "cooldown: '5 s' is not a duration"),
    ],
)
def test_config_file_values_follow_the_same_rules(
    empty_fake_root: str, tmp_path: pathlib.Path, text: str, needle: str
) -> None:
    config = tmp_path / "memguard.yaml"
    config.write_text(text)
    result = memguard("run", "--parent", empty_fake_root, *QUIET, "--config", str(config))
    assert_refused(result, f"--config {config}: {needle}")


def test_an_empty_memguard_config_is_refused(empty_fake_root: str) -> None:
    result = memguard("run", "--parent", empty_fake_root, *QUIET, env={"MEMGUARD_CONFIG": ""})
    assert_refused(result, "$MEMGUARD_CONFIG: an empty path")


# --- accepted, with a warning at start ----------------------------------------------------------


def first_log_lines(args: list[str], env: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The first `count` JSON log lines of a `memguard run` that starts; then SIGTERM."""
    command = [MEMGUARD, "run", "--log-format", "json", *QUIET, *args]  # no cluster: auto is off
    environment = {**_clean_environment(), **env}
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=environment
    ) as process:
        assert process.stderr is not None
        try:
            lines = [json.loads(process.stderr.readline()) for _ in range(count)]
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                pytest.fail(f"memguard did not stop within {TIMEOUT_S} s of SIGTERM")
    return lines


def test_unknown_memguard_variables_are_one_warning_at_start(empty_fake_root: str) -> None:
    env = {"MEMGUARD_POLICI": "noop", "MEMGUARD_POLICY": "noop"}
    first = first_log_lines(["--parent", empty_fake_root], env, 1)[0]
    assert first["level"] == "warning"
    assert first["msg"] == (
        "ignoring unknown environment variable: 'MEMGUARD_POLICI' (did you mean MEMGUARD_POLICY?)"
    )


def test_graceful_via_without_a_graceful_policy_is_a_warning_at_start(
    empty_fake_root: str,
) -> None:
    args = ["--parent", empty_fake_root, "--policy", "process", "--graceful-via", "delete"]
    first = first_log_lines(args, {}, 1)[0]
    assert first["level"] == "warning"
    assert first["msg"].startswith("--graceful-via delete only applies to --policy graceful")
