"""The files a kubeconfig names, and the service account's, are checked before
kubernetes-asyncio reads them (memguard.kube.connection): regular, readable, at
most 1 MiB; the token is read here and handed over as data; the in-cluster token
is re-read bounded (memguard.kube.client.TokenFile)."""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from memguard.kube.client import TOKEN_REFRESH_S, TokenFile
from memguard.kube.connection import (
    MAX_CREDENTIAL_FILE_BYTES,
    Connection,
    KubeconfigProblem,
    checked_kubeconfig,
    find_connection,
    kubeconfig_problem,
)

TWO_MIB = 2 << 20
ZERO = "tokenFile /dev/zero: not a regular file (a character device)"


def kubeconfig(
    directory: pathlib.Path,
    user: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    **top: Any,
) -> str:
    """A kubeconfig with one context x -> cluster c, user u; written as JSON (YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:1", **(cluster or {})}}
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
        "users": [{"name": "u", "user": user or {}}],
        **top,
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config))
    return str(path)


def big_file(directory: pathlib.Path) -> str:
    path = directory / "big"
    path.write_bytes(b"x" * TWO_MIB)
    return str(path)


def fifo(directory: pathlib.Path) -> str:
    path = directory / "fifo"
    os.mkfifo(path)  # no writer: open() for reading would block for ever
    return str(path)


# case -> (make the file, the problem)
BAD_FILES: dict[str, tuple[Callable[[pathlib.Path], str], str]] = {
    "zero": (lambda tmp: "/dev/zero", "not a regular file (a character device)"),
    "fifo": (fifo, "not a regular file (a FIFO)"),
    "2MiB": (big_file, "larger than 1 MiB"),
    "missing": (lambda tmp: str(tmp / "absent"), "no such file"),
    "directory": (lambda tmp: str(tmp), "not a regular file (a directory)"),
}
KEYS = [
    ("user", "tokenFile"),
    ("user", "client-certificate"),
    ("user", "client-key"),
    ("cluster", "certificate-authority"),
]


@pytest.mark.parametrize(("section", "key"), KEYS)
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_named_file_that_is_not_a_small_regular_file_is_a_problem_naming_key_and_file(
    tmp_path: pathlib.Path, section: str, key: str, case: str
) -> None:
    make, problem = BAD_FILES[case]
    named = make(tmp_path)
    path = kubeconfig(tmp_path, **{section: {key: named}})
    who = "user 'u'" if section == "user" else "cluster 'c'"
    assert kubeconfig_problem(path) == f"{who}: {key} {os.path.normpath(named)}: {problem}"


def test_a_relative_name_is_the_kubeconfig_directory_s(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    path = kubeconfig(tmp_path, {"tokenFile": "token"}, {"certificate-authority": "ca.crt"})
    monkeypatch.chdir("/")  # not the kubeconfig's directory
    config = checked_kubeconfig(path)
    user = config["users"][0]["user"]
    assert user == {"token": "s3cret"}  # read here, stripped; the loader gets data
    cluster = config["clusters"][0]["cluster"]
    assert cluster["certificate-authority"] == str(tmp_path / "ca.crt")  # made absolute


def test_data_wins_over_a_file_so_the_file_is_not_read(tmp_path: pathlib.Path) -> None:
    user = {"token": "t", "tokenFile": "/dev/zero", "client-key-data": "a2V5", "client-key": "/"}
    cluster = {"certificate-authority-data": "Y2E=", "certificate-authority": "/dev/zero"}
    assert kubeconfig_problem(kubeconfig(tmp_path, user, cluster)) is None


def test_only_the_current_context_is_checked(tmp_path: pathlib.Path) -> None:
    other_user = {"name": "v", "user": {"tokenFile": "/dev/zero"}}
    path = kubeconfig(tmp_path, {"token": "t"})
    config = json.loads(pathlib.Path(path).read_text())
    config["users"].append(other_user)
    pathlib.Path(path).write_text(json.dumps(config))
    assert kubeconfig_problem(path) is None
    config["contexts"][0]["context"]["user"] = "v"
    pathlib.Path(path).write_text(json.dumps(config))
    assert kubeconfig_problem(path) == f"user 'v': {ZERO}"


def test_the_first_entry_of_a_name_is_the_one_used_as_the_loader_merges(
    tmp_path: pathlib.Path,
) -> None:
    path = kubeconfig(tmp_path, {"token": "t"})
    config = json.loads(pathlib.Path(path).read_text())
    config["users"].append({"name": "u", "user": {"tokenFile": "/dev/zero"}})
    pathlib.Path(path).write_text(json.dumps(config))
    checked = checked_kubeconfig(path)
    assert checked["users"] == [{"name": "u", "user": {"token": "t"}}]


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ({"tokenFile": 5}, "user 'u': tokenFile: expected a file name, got 5"),
        (
            {"exec": {"apiVersion": "v1", "command": "memguard-no-such-plugin"}},
            "user 'u': exec command 'memguard-no-such-plugin': not found in $PATH, "
            "or not an executable file",
        ),
        (
            {"exec": {"apiVersion": "v1", "command": "/dev/zero"}},
            "user 'u': exec command '/dev/zero': not found, or not an executable file",
        ),
    ],
)
def test_values_the_loader_cannot_use(
    tmp_path: pathlib.Path, user: dict[str, Any], problem: str
) -> None:
    assert kubeconfig_problem(kubeconfig(tmp_path, user)) == problem


def test_an_exec_plugin_found_in_its_own_path_passes(tmp_path: pathlib.Path) -> None:
    plugin = tmp_path / "bin" / "get-token"
    plugin.parent.mkdir()
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    env = [{"name": "PATH", "value": str(plugin.parent)}]
    user = {"exec": {"apiVersion": "v1", "command": "get-token", "env": env}}
    assert kubeconfig_problem(kubeconfig(tmp_path, user)) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("clusters: []\ncontexts: []\nx: 2001-02-30\n", "day is out of range for month"),
        ("clusters: []\ncontexts: []\nx: " + "1" * 5000 + "\n", "Exceeds the limit"),
    ],
)
def test_scalars_safe_load_cannot_make_are_one_line(
    tmp_path: pathlib.Path, text: str, problem: str
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    message = kubeconfig_problem(str(path))
    assert message is not None
    assert message.startswith("cannot load Kubernetes config: ")
    assert problem in message
    assert len(message) < 300


def test_an_explicit_kubeconfig_naming_a_bad_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    from memguard.errors import ConfigError

    path = kubeconfig(tmp_path, {"tokenFile": "/dev/zero"})
    with pytest.raises(ConfigError) as info:
        find_connection(path, {})
    assert str(info.value) == (
        f"--kubeconfig {path}: user 'u': tokenFile /dev/zero: not a regular file "
        "(a character device)"
    )
    connection = find_connection(None, {"KUBECONFIG": path})  # the environment's: one line, off
    assert connection is not None
    assert connection.problem == f"user 'u': {ZERO}"


# --- in-cluster ------------------------------------------------------------------------------

IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}


def service_account(directory: pathlib.Path, token: str | None = "t", ca: str | None = "c") -> str:
    account = directory / "serviceaccount"
    account.mkdir()
    if token is not None:
        (account / "token").write_text(token)
    if ca is not None:
        (account / "ca.crt").write_text(ca)
    return str(account)


def test_a_usable_service_account_is_in_cluster(tmp_path: pathlib.Path) -> None:
    account = service_account(tmp_path)
    assert find_connection(None, IN_CLUSTER, account) == Connection(
        True, token_file=f"{account}/token", ca_file=f"{account}/ca.crt"
    )


@pytest.mark.parametrize(
    ("which", "make", "problem"),
    [
        ("token", lambda path: os.mkfifo(path), "not a regular file (a FIFO)"),
        ("token", lambda path: os.symlink("/dev/zero", path), "not a regular file (a char"),
        ("token", lambda path: path.write_bytes(b"t" * TWO_MIB), "larger than 1 MiB"),
        ("ca.crt", lambda path: path.mkdir(), "not a regular file (a directory)"),
        ("ca.crt", lambda path: None, "no such file"),
    ],
)
def test_a_service_account_file_that_is_no_small_regular_file_is_its_problem(
    tmp_path: pathlib.Path, which: str, make: Any, problem: str
) -> None:
    account = service_account(tmp_path, token=None, ca=None)
    other = "ca.crt" if which == "token" else "token"
    (tmp_path / "serviceaccount" / other).write_text("x")
    make(tmp_path / "serviceaccount" / which)
    connection = find_connection(None, IN_CLUSTER, account)
    assert connection is not None
    assert connection.in_cluster
    assert connection.problem is not None
    assert connection.problem.startswith(f"service account {which} {account}/{which}: {problem}")


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class Configuration:
    def __init__(self) -> None:
        self.api_key: dict[str, str] = {}


def test_the_in_cluster_token_is_re_read_bounded_and_kept_when_it_goes_bad(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    clock = Clock()
    hook = TokenFile(str(token), "Bearer first\n", clock)
    configuration = Configuration()
    hook(configuration)
    assert configuration.api_key["BearerToken"] == "Bearer first"  # stripped at once
    token.write_text("second")
    hook(configuration)
    assert configuration.api_key["BearerToken"] == "Bearer first"  # not yet due
    clock.now_s += TOKEN_REFRESH_S
    hook(configuration)
    assert configuration.api_key["BearerToken"] == "Bearer second"
    for bad in ("fifo", "zero", "huge", "empty"):
        token.unlink()
        if bad == "fifo":
            os.mkfifo(token)
        elif bad == "zero":
            os.symlink("/dev/zero", token)
        else:
            token.write_bytes(b"x" * (MAX_CREDENTIAL_FILE_BYTES + 1) if bad == "huge" else b"")
        clock.now_s += TOKEN_REFRESH_S
        with caplog.at_level(logging.WARNING):
            hook(configuration)
        assert configuration.api_key["BearerToken"] == "Bearer second"
    assert hook.failures == 4
    assert "not a regular file (a FIFO); keeping the last one (1 times)" in caplog.text
    assert len(caplog.records) == 1  # then the 10th, the 100th ...


def test_checked_kubeconfig_refuses_what_kubeconfig_problem_names(tmp_path: pathlib.Path) -> None:
    path = kubeconfig(tmp_path, {"tokenFile": "/dev/zero"})
    with pytest.raises(KubeconfigProblem, match="tokenFile /dev/zero"):
        checked_kubeconfig(path)
