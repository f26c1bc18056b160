"""Hostile input to the real `memguard` console script: one line on stderr, the exit code, no
traceback and never a hang.

Each case runs .venv/bin/memguard (memguard.entry, the probe's fast path included) as a
subprocess with a timeout: a hang fails the test instead of blocking the run. The inputs are
the minor input defects of issue 9: numbers without an upper bound, non-ASCII digits, YAML
that crashed the loader, FIFOs and devices where a file is read, and files given as a
kubeconfig that are none.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import pytest

from memguard.cli.options import RUN_OPTIONS, Option
from memguard.cli.values import Bounded
from memguard.kube.connection import Connection, find_connection
from memguard.kube.features import open_kube

MEMGUARD = os.path.join(os.path.dirname(sys.executable), "memguard")  # the console script
TIMEOUT_S = 30
HUGE = "99999999999999999999"  # 20 digits: above every range (and 2**64)
NOT_A_KUBECONFIG = "not a kubeconfig (expected a YAML mapping with clusters, contexts and users)"
BOUNDED = [option for option in RUN_OPTIONS if isinstance(option.parse, Bounded)]


def _clean_environment() -> dict[str, str]:
    """The test's environment without memguard's and Kubernetes' variables, output in UTF-8."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MEMGUARD_")
        and name not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    }
    return {**kept, "PYTHONIOENCODING": "utf-8"}


def memguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert os.access(MEMGUARD, os.X_OK), f"no console script at {MEMGUARD}: pip install -e ."
    try:
        return subprocess.run(
            [MEMGUARD, *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=TIMEOUT_S,
            env={**_clean_environment(), **(env or {})},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        shown = " ".join(args)[:200]
        pytest.fail(f"`memguard {shown}` hung: no exit within {TIMEOUT_S} s")


def error_line(result: subprocess.CompletedProcess[str], exit_code: int = 2) -> str:
    """The one stderr line of a refused command (after checking the exit code)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    line = error_line(result)
    assert line.startswith("memguard run: error: "), line
    for needle in needles:
        assert needle in line, line


# --- 1. numbers without an upper bound -------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "needles"),
    [
        ("--cooldown", f"{HUGE}h", ["'99999999999999999999h' is out of range", "at most 1h"]),
        ("--report-queue", HUGE, [f"'{HUGE}' is out of range", "at least 1, at most 1000000"]),
        ("--report-queue", "9" * 5000, ["is out of range", "at most 1000000"]),  # > int() limit
        ("--cooldown", "1" + "0" * 400 + "s", ["is out of range", "at most 1h"]),  # float: inf
        ("--recheck-interval", "2h", ["'2h' is out of range: at least 100ms, at most 1h"]),
        ("--flush-timeout", "11m", ["'11m' is out of range: at least 10ms, at most 10m"]),
        ("--flush-timeout", "0", ["'0' is out of range: at least 10ms"]),
        ("--poll-assumed-rate", "65Gi", ["'65Gi' is out of range: at least 1, at most 64Gi"]),
        ("--poll-assumed-rate", "0", ["'0' is out of range: at least 1"]),
        ("--min-margin", f"{HUGE}Ei", ["is out of range: at least 0, at most 1Ti"]),
        ("--flush-cache-above", HUGE, ["is out of range: at least 1, at most 4Ei"]),
        ("--psi-trigger", f"some 50000 {'9' * 5000}", ["WINDOW_US <= 10000000"]),
        ("--cooldown", "inf", ["'inf' is not a duration"]),
        ("--cooldown", "nan", ["'nan' is not a duration"]),
        ("--margin-ratio", "1e999", ["out of range", "between 0 and 1"]),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else None,
)
def test_numbers_beyond_their_range_are_refused_with_the_range(
    flag: str, value: str, needles: list[str]
) -> None:
    assert_refused(memguard("run", flag, value), f"{flag}: ", *needles)


@pytest.mark.parametrize("option", BOUNDED, ids=lambda option: option.flag)
def test_every_bounded_flag_refuses_a_huge_value_and_names_its_range(option: Option) -> None:
    bounded = option.parse
    assert isinstance(bounded, Bounded)
    value = HUGE + ("h" if bounded.high.endswith(("h", "m", "s")) else "")  # a duration's unit
    result = memguard("run", option.flag, value)
    expected = f"{option.flag}: '{value}' is out of range: at least {bounded.low}, at most "
    assert_refused(result, expected + bounded.high)


def test_the_range_applies_to_environment_variables_and_config_files(
    tmp_path: pathlib.Path,
) -> None:
    result = memguard("run", env={"MEMGUARD_COOLDOWN": "2h"})
    assert_refused(result, "$MEMGUARD_COOLDOWN: '2h' is out of range: at least 0s, at most 1h")
    config = tmp_path / "memguard.yaml"
    config.write_text(f"report-queue: {HUGE}\n")
    assert_refused(
        memguard("run", "--config", str(config)),
        f"--config {config}: report-queue: '{HUGE}' is out of range",
    )


# --- 2. digits are ASCII ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--report-queue", "\u0663", "is not a whole number"),  # ARABIC-INDIC DIGIT THREE
        ("--report-queue", "\uff11\uff10", "is not a whole number"),  # FULLWIDTH 1 0
        ("--cooldown", "\u0663s", "is not a duration"),
        ("--min-margin", "\u0663Mi", "is not a size"),
        ("--margin-ratio", "0.\u0660\u0662", "is not a ratio"),
        ("--listen", ":\u0669\u0666\u0663\u0667", "is not HOST:PORT"),
        ("--psi-trigger", "some \u0665\u0660\u0660\u0660\u0660 500000", "is not 'some|full"),
    ],
    ids=["arabic-queue", "fullwidth-queue", "duration", "size", "ratio", "listen", "psi"],
)
def test_non_ascii_digits_are_refused(flag: str, value: str, needle: str) -> None:
    assert_refused(memguard("run", flag, value), f"{flag}: ", needle)


def test_the_probe_refuses_non_ascii_digits() -> None:
    line = error_line(memguard("probe", "--warning", "\u0668\u0665"))
    assert line.startswith("memguard probe: error: --warning: "), line
    assert "is not a percentage" in line


# --- 6. --listen ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (":65536", "the port is out of range: at least 0, at most 65535"),
        (f":{HUGE}", "the port is out of range"),
        ("127.0.0.1:", "is not HOST:PORT"),
        (":-1", "is not HOST:PORT"),
        (":+80", "is not HOST:PORT"),
        (": 80", "is not HOST:PORT"),
    ],
)
def test_listen_needs_an_ascii_port_in_range(value: str, needle: str) -> None:
    assert_refused(memguard("run", "--listen", value), "--listen: ", needle)


# --- 3. config YAML that crashed the loader ---------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("? [a, b]\n: 1\n", "line 1, column 3: a key must be a string, not list"),
        ("? {a: 1}\n: 1\n", "a key must be a string, not dict"),
        ("~: 1\n", "a key must be a string, not null"),
        ("[" * 1000 + "\n", "line 1, column 33: nested deeper than 32 levels"),
        ("{" * 1000 + "\n", "nested deeper than 32 levels"),
        ("".join("  " * depth + "a:\n" for depth in range(1000)), "nested deeper than 32"),
        (LAUGHS, "more than 100000 values (aliases expanded)"),
        ("policy: &a [*a]\n", "a recursive alias"),
        ("policy: !!python/object/apply:os.system [true]\n", "the tag "),
        ("policy: !!python/object:os.system x\n", "is not allowed"),
        ("report-queue: !!int abc\n", "'tag:yaml.org,2002:int' is not allowed"),
        ("dry-run: !!bool maybe\n", "!!bool 'maybe' is not true or false"),
        ("node-name: !!timestamp x\n", "'tag:yaml.org,2002:timestamp' is not allowed"),
        ("policy: a\x00\n", "not valid YAML (unacceptable character #x0000"),
        ("policy: a\n---\npolicy: b\n", "not valid YAML"),
        ("policy: [\n", "not valid YAML"),
    ],
    ids=[
        "list-key", "mapping-key", "null-key", "deep-flow-list", "deep-flow-map", "deep-block",
        "billion-laughs", "recursive-alias", "python-apply", "python-object", "int-tag",
        "bool-tag", "timestamp-tag", "nul", "two-documents", "unclosed",
    ],
)  # fmt: skip
def test_config_yaml_the_loader_refuses_is_one_line(
    tmp_path: pathlib.Path, text: str, needle: str
) -> None:
    config = tmp_path / "memguard.yaml"
    config.write_text(text)
    assert_refused(memguard("run", "--config", str(config)), f"--config {config}: ", needle)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (bytes(range(256)) * 4, "not UTF-8 text"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "not valid YAML"),
        (b"policy: process\n" + b"#" * (1 << 20), "larger than 1 MiB"),
    ],
    ids=["binary", "elf", "too-large"],
)
def test_a_binary_or_huge_config_file_is_one_line(
    tmp_path: pathlib.Path, data: bytes, needle: str
) -> None:
    config = tmp_path / "memguard.yaml"
    config.write_bytes(data)
    assert_refused(memguard("run", "--config", str(config)), f"--config {config}: ", needle)


def test_an_empty_config_file_is_no_settings(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "memguard.yaml"
    config.write_bytes(b"")
    # The file loads (nothing in it); the bad flag after it is what is refused.
    result = memguard("run", "--config", str(config), "--report-queue", "0")
    assert_refused(result, "--report-queue: '0' is out of range")


# --- 4. FIFOs, devices and directories where a file is read ------------------------------


def test_a_config_that_is_a_fifo_is_refused_without_reading_it(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "memguard.yaml"
    os.mkfifo(fifo)  # no writer: reading it would block for ever
    result = memguard("run", "--config", str(fifo))
    assert_refused(result, f"--config {fifo}: not a regular file (a FIFO)")
    result = memguard("run", env={"MEMGUARD_CONFIG": str(fifo)})
    assert_refused(result, f"--config {fifo}: not a regular file (a FIFO)")


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a character device"), ("{tmp}", "a directory")]
)
def test_a_config_that_is_a_device_or_directory_is_refused(
    tmp_path: pathlib.Path, path: str, kind: str
) -> None:
    config = path.format(tmp=tmp_path)
    assert_refused(memguard("run", "--config", config), f"--config {config}: ", kind)


def test_probe_proc_self_cgroup_that_is_a_fifo_is_a_bad_argument(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "cgroup"
    os.mkfifo(fifo)
    line = error_line(memguard("probe", "--proc-self-cgroup", str(fifo)))
    assert line == (
        f"memguard probe: error: --proc-self-cgroup {fifo}: not a regular file (a FIFO) "
        "(see memguard probe --help)"
    )


def test_probe_proc_self_cgroup_that_is_a_device_is_a_bad_argument() -> None:
    line = error_line(memguard("probe", "--proc-self-cgroup", "/dev/zero"))
    assert "--proc-self-cgroup /dev/zero: not a regular file (a character device)" in line


@pytest.mark.parametrize("name", ["memory.stat", "memory.limit_in_bytes", "memory.usage_in_bytes"])
def test_probe_never_hangs_on_a_fifo_in_the_cgroup(tmp_path: pathlib.Path, name: str) -> None:
    directory = tmp_path / "memory" / "kubepods" / "pod1" / "ctr"
    directory.mkdir(parents=True)
    for file in ("memory.stat", "memory.limit_in_bytes", "memory.usage_in_bytes"):
        (directory / file).write_text("inactive_file 0\n" if file == "memory.stat" else "100\n")
    (directory / name).unlink()
    os.mkfifo(directory / name)
    (tmp_path / "cgroup").write_text("4:memory:/kubepods/pod1/ctr\n")
    flags = ["--cgroup-root", str(tmp_path), "--proc-self-cgroup", str(tmp_path / "cgroup")]
    line = error_line(memguard("probe", *flags), exit_code=3)
    assert (
        line
        == f"memguard probe: error: cannot read {directory / name}: not a regular file (a FIFO)"
    )


def test_probe_logfile_that_is_a_fifo_without_reader_fails_at_once(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    line = error_line(memguard("probe", "--logfile", str(fifo)), exit_code=4)
    assert line.startswith(f"memguard probe: error: cannot open log {fifo}: a FIFO with no reader")


# --- 5. --kubeconfig that is no kubeconfig -----------------------------------------------

PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


def _write(tmp_path: pathlib.Path, data: bytes) -> str:
    path = tmp_path / "kubeconfig"
    path.write_bytes(data)
    return str(path)


def _fifo(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "kubeconfig"
    os.mkfifo(path)
    return str(path)


KUBECONFIGS: dict[str, tuple[Callable[[pathlib.Path], str], str]] = {
    "etc-passwd": (lambda tmp: "/etc/passwd", NOT_A_KUBECONFIG),
    "passwd-copy": (lambda tmp: _write(tmp, PASSWD.encode()), NOT_A_KUBECONFIG),
    "empty": (lambda tmp: _write(tmp, b""), NOT_A_KUBECONFIG),
    "yaml-list": (lambda tmp: _write(tmp, b"- clusters\n- contexts\n"), NOT_A_KUBECONFIG),
    "clusters-not-a-list": (
        lambda tmp: _write(tmp, b"clusters: x\ncontexts: []\nusers: []\n"),
        NOT_A_KUBECONFIG,
    ),
    "garbage": (lambda tmp: _write(tmp, bytes(range(256)) * 8), "not a kubeconfig (not UTF-8"),
    "deep": (lambda tmp: _write(tmp, b"[" * 5000), "nested deeper than 32 levels"),
    "fifo": (_fifo, "not a regular file (a FIFO)"),
    "directory": (lambda tmp: str(tmp), "not a regular file (a directory)"),
    "device": (lambda tmp: "/dev/zero", "not a regular file (a character device)"),
    "missing": (lambda tmp: str(tmp / "absent"), "no such file"),
}


@pytest.mark.parametrize("case", sorted(KUBECONFIGS))
def test_a_kubeconfig_that_is_none_is_refused_in_one_line(
    empty_fake_root: str, tmp_path: pathlib.Path, case: str
) -> None:
    make, needle = KUBECONFIGS[case]
    path = make(tmp_path)
    result = memguard("run", "--parent", empty_fake_root, "--kubeconfig", path)
    assert_refused(result, f"--kubeconfig {path}: ", needle)


async def test_a_kubeconfig_env_var_that_is_a_fifo_turns_kubernetes_off(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    fifo = _fifo(tmp_path)
    connection = find_connection(None, {"KUBECONFIG": fifo})
    assert connection is not None
    assert connection.problem == "not a regular file (a FIFO)"
    assert await open_kube(connection, "node-1", explicit=False) is None  # never opened
    assert f"cannot load Kubernetes config (kubeconfig {fifo}): not a regular file" in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        '{"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": {}}],'
        ' "contexts": [{"name": "x", "context": {"cluster": "c"}}], "current-context": "x",'
        ' "users": [{"name": "u", "user": {"token": "t"}}]}',
        "clusters:\n- name: c\n  cluster: {server: 'https://k:6443'}\ncontexts:\n- name: x\n"
        "  context: {cluster: c}\ncurrent-context: x\nusers:\n",
        "clusters: []\ncontexts: []\n",
    ],
    ids=["json", "users-null", "no-users"],
)
def test_a_kubeconfig_passes_the_check(tmp_path: pathlib.Path, text: str) -> None:
    path = _write(tmp_path, text.encode())
    assert find_connection(path, {}) == Connection(False, path)
    assert find_connection(None, {"KUBECONFIG": path}) == Connection(False, path)
