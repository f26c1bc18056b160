"""`memguard probe` as the kubelet runs it: a real process, fake cgroup trees, real exit codes.

Fake trees are made in tmp_path for cgroup v1 and v2 and passed with the
testing aids --cgroup-root and --proc-self-cgroup; one test reads this
machine's real memory cgroup (the test process's own). The zipapp is built
into tmp_path and run the ways an application image runs it.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import zipfile
from types import ModuleType

import pytest

from memguard.probe import cgroup_directory

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILDER = ROOT / "packaging" / "build_probe_zipapp.py"
MEMGUARD_PROBE = [sys.executable, "-m", "memguard.cli", "probe"]
MIB = 1024 * 1024
UNLIMITED_AS_READ = 9223372036854771712
V1_PATH = "/kubepods/burstable/pod0f1e/3c2d"


def run(
    *args: str, command: list[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(command or MEMGUARD_PROBE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def assert_error(result: subprocess.CompletedProcess[str], exit_code: int, *needles: str) -> None:
    assert result.returncode == exit_code, result
    line = one_line(result.stderr)
    assert line.startswith("memguard probe: error: "), line
    for needle in needles:
        assert needle in line, line
    assert result.stdout == ""


def write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_v1(
    root: pathlib.Path,
    usage_bytes: int,
    limit_bytes: int,
    stat: str,
    path: str = V1_PATH,
) -> list[str]:
    """A v1 memory cgroup at <root>/memory<path>; the flags that point the probe at it."""
    directory = root / "memory" / path.strip("/")
    write(directory / "memory.usage_in_bytes", f"{usage_bytes}\n")
    write(directory / "memory.limit_in_bytes", f"{limit_bytes}\n")
    write(directory / "memory.stat", stat)
    write(root / "proc-self-cgroup", f"12:pids:/x\n4:memory:{path}\n1:name=systemd:/y\n0::/\n")
    return ["--cgroup-root", str(root), "--proc-self-cgroup", str(root / "proc-self-cgroup")]


def v1_stat(inactive_bytes: int, hierarchical_bytes: int = UNLIMITED_AS_READ) -> str:
    return (
        f"cache {2 * inactive_bytes}\ninactive_file 1\nhierarchical_memory_limit "
        f"{hierarchical_bytes}\ntotal_cache {2 * inactive_bytes}\n"
        f"total_inactive_file {inactive_bytes}\n"
    )


def fake_v2(
    root: pathlib.Path,
    usage_bytes: int,
    max_text: str,
    inactive_bytes: int,
    path: str = "/kubepods.slice/pod.slice/ctr.scope",
    ancestor_max: dict[str, str] | None = None,
) -> list[str]:
    """A v2 cgroup at <root><path> with memory.max of ancestors (relative paths)."""
    write(root / "cgroup.controllers", "cpu memory pids\n")
    directory = root / path.strip("/")
    write(directory / "cgroup.controllers", "memory\n")
    write(directory / "memory.current", f"{usage_bytes}\n")
    write(directory / "memory.max", f"{max_text}\n")
    write(directory / "memory.stat", f"anon 1\nfile 2\ninactive_file {inactive_bytes}\n")
    for relative, text in (ancestor_max or {}).items():
        write(root / relative / "memory.max", f"{text}\n")
    write(root / "proc-self-cgroup", f"0::{path}\n")
    return ["--cgroup-root", str(root), "--proc-self-cgroup", str(root / "proc-self-cgroup")]


# --- cgroup v1 ---------------------------------------------------------------


def test_v1_under_warning_is_silent(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 900 * MIB, 1024 * MIB, v1_stat(100 * MIB))  # 78.1 %
    result = run(*flags)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_v1_over_warning_appends_one_warn_line_and_exits_0(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 980 * MIB, 1024 * MIB, v1_stat(100 * MIB))  # 85.9 %
    log = tmp_path / "app.log"
    log.write_text("an earlier line\n")
    result = run(*flags, "--logfile", str(log))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    earlier, line = log.read_text().splitlines()
    assert earlier == "an earlier line"
    assert line.endswith(
        "Z WARN memguard probe: working set 880.0MiB is 85.9% of limit 1024.0MiB "
        "(warning 85%, failure 95%); usage 980.0MiB, inactive_file 100.0MiB; "
        f"cgroup v1 {tmp_path}/memory{V1_PATH}"
    )
    assert line[:11].count("-") == 2  # an ISO 8601 timestamp first
    assert line[10] == "T"


def test_v1_over_failure_exits_1_with_the_line_in_the_log_and_on_stderr(
    tmp_path: pathlib.Path,
) -> None:
    flags = fake_v1(tmp_path, 1000 * MIB, 1024 * MIB, v1_stat(10 * MIB))  # 96.7 %
    log = tmp_path / "app.log"
    result = run(*flags, "--warning", "80%", "--failure", "96", "--logfile", str(log))
    assert result.returncode == 1, result
    [line] = log.read_text().splitlines()
    assert " ERROR memguard probe: working set 990.0MiB is 96.6% of limit 1024.0MiB" in line
    assert "(warning 80%, failure 96%)" in line
    assert one_line(result.stderr) == line  # probe output: what `kubectl describe pod` shows
    assert result.stdout == ""


def test_v1_default_log_is_stderr(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 1000 * MIB, 1024 * MIB, v1_stat(0))
    result = run(*flags)
    assert result.returncode == 1
    assert " ERROR memguard probe: working set 1000.0MiB is 97.6% " in one_line(result.stderr)


def test_v1_hierarchical_limit_is_used_when_tighter(tmp_path: pathlib.Path) -> None:
    # The container is unlimited, its pod is not: 300 MiB of 320 MiB.
    stat = v1_stat(0, hierarchical_bytes=320 * MIB)
    flags = fake_v1(tmp_path, 300 * MIB, UNLIMITED_AS_READ, stat)
    result = run(*flags)
    assert result.returncode == 0
    assert "working set 300.0MiB is 93.7% of limit 320.0MiB" in one_line(result.stderr)


def test_v1_inactive_file_is_the_fallback_for_total_inactive_file(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 1000 * MIB, 1024 * MIB, f"inactive_file {200 * MIB}\n")
    result = run(*flags, "--verbose")
    assert result.returncode == 0
    assert " INFO memguard probe: working set 800.0MiB is 78.1% " in one_line(result.stderr)


def test_v1_unlimited_is_ok_with_a_note_on_stdout(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 5 * MIB, UNLIMITED_AS_READ, v1_stat(MIB))
    log = tmp_path / "app.log"
    result = run(*flags, "--logfile", str(log))
    assert (result.returncode, result.stderr) == (0, "")
    assert "INFO memguard probe: no memory limit, nothing to check" in one_line(result.stdout)
    assert log.read_text() == ""
    verbose = run(*flags, "--logfile", str(log), "--verbose")
    assert (verbose.returncode, verbose.stdout, verbose.stderr) == (0, "", "")
    assert "no memory limit" in one_line(log.read_text())


def test_include_cache_counts_page_cache(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 1000 * MIB, 1024 * MIB, v1_stat(500 * MIB))
    assert run(*flags).returncode == 0
    result = run(*flags, "--include-cache")
    assert result.returncode == 1
    assert "usage (cache included) 1000.0MiB is 97.6%" in one_line(result.stderr)


def test_a_subtree_mount_is_the_containers_own_cgroup(tmp_path: pathlib.Path) -> None:
    # No cgroup namespace, but the runtime mounted only the container's subtree:
    # /proc/self/cgroup names a path that does not exist under the mount.
    flags = fake_v1(tmp_path, 990 * MIB, 1024 * MIB, v1_stat(0), path="/")
    (tmp_path / "proc-self-cgroup").write_text(f"4:memory:{V1_PATH}\n")
    result = run(*flags)
    assert result.returncode == 1
    assert one_line(result.stderr).endswith(f"cgroup v1 {tmp_path}/memory")


# --- cgroup v2 ---------------------------------------------------------------


def test_v2_over_failure(tmp_path: pathlib.Path) -> None:
    flags = fake_v2(tmp_path, 250 * MIB, str(256 * MIB), inactive_bytes=2 * MIB)
    result = run(*flags)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert " ERROR memguard probe: working set 248.0MiB is 96.8% of limit 256.0MiB " in line
    assert line.endswith(f"cgroup v2 {tmp_path}/kubepods.slice/pod.slice/ctr.scope")


def test_v2_ancestor_limit_applies_when_the_container_has_max(tmp_path: pathlib.Path) -> None:
    ancestors = {"kubepods.slice": "max", "kubepods.slice/pod.slice": str(200 * MIB)}
    flags = fake_v2(tmp_path, 180 * MIB, "max", inactive_bytes=0, ancestor_max=ancestors)
    result = run(*flags)
    assert result.returncode == 0
    assert "working set 180.0MiB is 90.0% of limit 200.0MiB" in one_line(result.stderr)


def test_v2_unlimited_everywhere_is_ok(tmp_path: pathlib.Path) -> None:
    flags = fake_v2(tmp_path, 180 * MIB, "max", 0, ancestor_max={"kubepods.slice": "max"})
    result = run(*flags)
    assert (result.returncode, result.stderr) == (0, "")
    assert "no memory limit" in one_line(result.stdout)


def test_v2_with_a_cgroup_namespace_reads_the_mount_root(tmp_path: pathlib.Path) -> None:
    flags = fake_v2(tmp_path, 100 * MIB, str(400 * MIB), inactive_bytes=50 * MIB, path="/")
    result = run(*flags, "--warning", "10", "--failure", "20")
    assert result.returncode == 0
    line = one_line(result.stderr)
    assert " WARN memguard probe: working set 50.0MiB is 12.5% of limit 400.0MiB " in line
    assert line.endswith(f"cgroup v2 {tmp_path}")


# --- this machine's real cgroup -------------------------------------------


def _own_memory_cgroup() -> tuple[int, str, int | None]:
    """(version, directory, limit) of this test process, read independently of the probe."""
    with open("/proc/self/cgroup") as file:
        lines = [line.split(":", 2) for line in file.read().splitlines()]
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        [path] = [p for h, c, p in lines if h == "0"]
        directory = os.path.normpath("/sys/fs/cgroup/" + path)
        text = pathlib.Path(directory, "memory.max").read_text().strip()
        return 2, directory, None if text == "max" else int(text)
    [path] = [p for _, controllers, p in lines if "memory" in controllers.split(",")]
    directory = os.path.normpath("/sys/fs/cgroup/memory/" + path)
    limit = int(pathlib.Path(directory, "memory.limit_in_bytes").read_text())
    return 1, directory, None if limit >= 2**62 else limit


def test_this_machines_own_cgroup(tmp_path: pathlib.Path) -> None:
    version, directory, own_limit = _own_memory_cgroup()
    assert os.path.isdir(directory)
    log = tmp_path / "app.log"
    result = run("--failure", "100", "--warning", "100", "--verbose", "--logfile", str(log))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result
    line = one_line(log.read_text())
    assert " INFO memguard probe: " in line
    assert line.endswith(f"; cgroup v{version} {directory}")
    if own_limit is None:  # this host's test cgroup: unlimited here and above
        assert "no memory limit, nothing to check; working set " in line
    else:
        assert "% of limit " in line


def test_logfile_through_proc_self_fd_reaches_the_pipe(tmp_path: pathlib.Path) -> None:
    # /proc/1/fd/1 is the kubemem trick: PID 1's stdout. /proc/self/fd/1 is ours, a pipe.
    flags = fake_v1(tmp_path, 980 * MIB, 1024 * MIB, v1_stat(0))
    result = run(*flags, "--failure", "99", "--logfile", "/proc/self/fd/1")
    assert (result.returncode, result.stderr) == (0, "")
    assert " WARN memguard probe: working set 980.0MiB is 95.7% " in one_line(result.stdout)


# --- exit codes 2, 3, 4 -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--warning", "abc"], ["--warning: 'abc' is not a percentage such as 85 or 85%"]),
        (["--failure", "120"], ["--failure: '120' is out of range"]),
        (["--warning", "0"], ["--warning: '0' is out of range"]),
        (["--warning", "90", "--failure", "80"], ["--warning 90% is above --failure 80%"]),
        (["--warning"], ["--warning needs a value"]),
        (["--frobnicate"], ["unrecognized argument '--frobnicate'"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], needles: list[str]) -> None:
    assert_error(run(*args), 2, *needles, "(see memguard probe --help)")


def test_help_lists_the_exit_codes() -> None:
    result = run("--help")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: memguard probe ")
    for line in ["0  ok", "1  working set at or above --failure", "2  bad arguments",
                 "3  cannot read the memory cgroup", "4  cannot write the log"]:  # fmt: skip
        assert f"\n  {line}" in result.stdout


def test_memguard_help_lists_probe() -> None:
    result = run("--help", command=[sys.executable, "-m", "memguard.cli"])
    assert result.returncode == 0
    assert "    probe     exec liveness probe" in result.stdout


def _missing(root: pathlib.Path, flags: list[str]) -> None:
    (root / "memory" / V1_PATH.strip("/") / "memory.usage_in_bytes").unlink()


def _garbage_limit(root: pathlib.Path, flags: list[str]) -> None:
    (root / "memory" / V1_PATH.strip("/") / "memory.limit_in_bytes").write_text("lots\n")


def _directory_for_a_file(root: pathlib.Path, flags: list[str]) -> None:
    path = root / "memory" / V1_PATH.strip("/") / "memory.stat"
    path.unlink()
    path.mkdir()


def _no_inactive_file(root: pathlib.Path, flags: list[str]) -> None:
    (root / "memory" / V1_PATH.strip("/") / "memory.stat").write_text("cache 5\n")


def _no_proc_self_cgroup(root: pathlib.Path, flags: list[str]) -> None:
    (root / "proc-self-cgroup").unlink()


def _no_memory_line(root: pathlib.Path, flags: list[str]) -> None:
    (root / "proc-self-cgroup").write_text("1:cpu:/\n")


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (_missing, ["cannot read ", "memory.usage_in_bytes: No such file or directory"]),
        (_garbage_limit, ["memory.limit_in_bytes: expected a number, got 'lots'"]),
        (_directory_for_a_file, ["cannot read ", "memory.stat: not a regular file (a directory)"]),
        (_no_inactive_file, ["memory.stat has no inactive_file (see --include-cache)"]),
        (_no_proc_self_cgroup, ["cannot read ", "proc-self-cgroup: No such file or directory"]),
        (_no_memory_line, ["no memory cgroup: neither "]),
    ],
    ids=lambda value: getattr(value, "__name__", "needles"),
)
def test_a_cgroup_that_cannot_be_read_exits_3(
    tmp_path: pathlib.Path, damage: object, needles: list[str]
) -> None:
    flags = fake_v1(tmp_path, 900 * MIB, 1024 * MIB, v1_stat(0))
    assert callable(damage)
    damage(tmp_path, flags)
    log = tmp_path / "app.log"
    result = run(*flags, "--logfile", str(log))
    assert_error(result, 3, *needles)
    # The application's log says why the probe fails, too.
    assert one_line(log.read_text()).endswith(
        result.stderr.strip()[len("memguard probe: error: ") :]
    )
    assert " ERROR memguard probe: " in log.read_text()


def test_a_cgroup_root_without_cgroups_exits_3(tmp_path: pathlib.Path) -> None:
    result = run("--cgroup-root", str(tmp_path / "nowhere"))
    assert_error(result, 3, f"neither {tmp_path}/nowhere/cgroup.controllers (v2) nor ")


def test_include_cache_needs_no_inactive_file(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 900 * MIB, 1024 * MIB, "cache 5\n")
    assert run(*flags, "--include-cache").returncode == 0


@pytest.mark.parametrize(
    ("logfile", "needle"),
    [
        ("{tmp}/no-such-dir/app.log", "cannot open log {tmp}/no-such-dir/app.log: No such file"),
        ("{tmp}", "cannot open log {tmp}: Is a directory"),
    ],
)
def test_a_log_that_cannot_be_opened_exits_4_on_every_run(
    tmp_path: pathlib.Path, logfile: str, needle: str
) -> None:
    flags = fake_v1(tmp_path, 100 * MIB, 1024 * MIB, v1_stat(0))  # 9.7 %: nothing to log
    result = run(*flags, "--logfile", logfile.format(tmp=tmp_path))
    assert_error(result, 4, needle.format(tmp=tmp_path))


def test_a_log_that_cannot_be_written_exits_4(tmp_path: pathlib.Path) -> None:
    flags = fake_v1(tmp_path, 1000 * MIB, 1024 * MIB, v1_stat(0))
    assert (
        run(*flags, "--warning", "99", "--failure", "100", "--logfile", "/dev/full").returncode == 0
    )
    result = run(*flags, "--logfile", "/dev/full")  # over --failure, but the log is full
    assert_error(result, 4, "cannot write log /dev/full: No space left on device")


def _full_fifo(tmp_path: pathlib.Path) -> tuple[pathlib.Path, int]:
    """A FIFO with a reader that never reads, its pipe already full (as behind
    /proc/1/fd/1 when the container runtime's log reader stalls)."""
    fifo = tmp_path / "stalled-log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:
            os.write(writer, b"x" * 4096)
    except BlockingIOError:
        pass
    finally:
        os.close(writer)
    return fifo, reader


@pytest.mark.parametrize(
    ("usage_mib", "exit_code", "level"), [(900, 0, "WARN"), (1000, 1, "ERROR")]
)
def test_a_stalled_log_loses_the_line_never_the_verdict_nor_hangs(
    tmp_path: pathlib.Path, usage_mib: int, exit_code: int, level: str
) -> None:
    flags = fake_v1(tmp_path, usage_mib * MIB, 1024 * MIB, v1_stat(0))
    fifo, reader = _full_fifo(tmp_path)
    try:
        result = run(*flags, "--logfile", str(fifo))  # run()'s timeout: it never hangs
    finally:
        os.close(reader)
    assert result.returncode == exit_code, result
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"memguard probe: error: log {fifo} full, line not written: "), lines
    assert "is its reader stuck?" in lines[0]
    if level == "ERROR":  # the probe's own output still says why it fails
        assert f" ERROR memguard probe: working set {usage_mib}.0MiB" in lines[1]
    assert "Traceback" not in result.stderr


# --- what it imports, and where it finds its cgroup --------------------------

HEAVY = ("trio", "kubernetes_asyncio", "aiohttp", "cffi", "_cffi_backend", "prometheus_client")


@pytest.mark.parametrize(
    ("entry", "modules_expected"),
    [
        # the console script: not even argparse
        ("cli.entry", ["memguard", "memguard.cli", "memguard.cli.entry", "memguard.probe"]),
        ("cli.main", ["memguard", "memguard.cli", "memguard.cli.main", "memguard.probe"]),
    ],
)
def test_memguard_probe_loads_only_its_entry_and_probe(
    entry: str, modules_expected: list[str]
) -> None:
    # A whole run on this machine's cgroup, through the fast path.
    call = "entry.main()" if entry == "cli.entry" else "main.main(sys.argv[1:])"
    code = (
        f"import sys\nfrom memguard.cli import {entry.split('.')[1]}\n"
        "sys.argv = ['memguard', 'probe', '--verbose', '--logfile', '/dev/null']\n"
        f"rc = {call}\n"
        "print(rc, ' '.join(sorted(sys.modules)))\n"
    )
    result = run(command=[sys.executable, "-c", code])
    rc, _, modules = result.stdout.strip().partition(" ")
    assert rc == "0", result
    loaded = modules.split()
    memguard_modules = [name for name in loaded if name.startswith("memguard")]
    assert memguard_modules == modules_expected
    assert [name for name in loaded if name.startswith(HEAVY)] == []
    if entry == "cli.entry":
        assert "argparse" not in loaded


def test_the_probe_module_alone_adds_nothing_beyond_os_and_time() -> None:
    code = (
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport __future__, os, time\n"
        "before = set(sys.modules)\nimport memguard.probe\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    result = run(command=[sys.executable, "-I", "-S", "-c", code])
    assert result.returncode == 0, result
    assert result.stdout.split() == ["memguard", "memguard.probe"]


@pytest.mark.parametrize(
    ("existing", "path", "expected"),
    [
        ("kubepods/pod1/ctr", "/kubepods/pod1/ctr", "kubepods/pod1/ctr"),
        ("ctr", "/kubepods/pod1/ctr", "ctr"),  # the mount root is the pod's cgroup
        ("", "/kubepods/pod1/ctr", ""),  # the mount root is the container's cgroup
        ("", "/", ""),  # a cgroup namespace
        ("a", "/../../a", "a"),  # outside the namespace's root: never above the mount
    ],
)
def test_cgroup_directory_is_the_longest_existing_suffix(
    tmp_path: pathlib.Path, existing: str, path: str, expected: str
) -> None:
    (tmp_path / existing).mkdir(parents=True, exist_ok=True)
    assert cgroup_directory(str(tmp_path), path) == str(tmp_path / expected)


# --- the zipapp --------------------------------------------------------------


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_probe_zipapp", BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_zipapp(output: pathlib.Path, *args: str) -> pathlib.Path:
    result = subprocess.run(
        [sys.executable, str(BUILDER), "--output", str(output), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return output


def test_the_zipapp_holds_only_the_probe_and_builds_the_same_bytes(
    tmp_path: pathlib.Path,
) -> None:
    first = build_zipapp(tmp_path / "one" / "memguard-probe")
    second = build_zipapp(tmp_path / "two" / "memguard-probe")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(first, os.X_OK)
    names = zipfile.ZipFile(first).namelist()
    assert sorted(names) == [
        "__main__.py", "__main__.pyc", "memguard/__init__.py", "memguard/__init__.pyc",
        "memguard/probe/__init__.py", "memguard/probe/__init__.pyc",
    ]  # fmt: skip
    assert (
        zipfile.ZipFile(first).read("memguard/probe/__init__.py")
        == (ROOT / "memguard/probe/__init__.py").read_bytes()
    )


def test_the_zipapp_runs_every_way_an_image_runs_it(tmp_path: pathlib.Path) -> None:
    zipapp = build_zipapp(tmp_path / "bin" / "memguard-probe")
    flags = fake_v1(tmp_path / "cgroup", 1000 * MIB, 1024 * MIB, v1_stat(0))
    path = {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
    for command in (
        [sys.executable, str(zipapp), "probe"],
        [sys.executable, "-I", "-S", str(zipapp), "probe"],
        [sys.executable, "-I", "-S", str(zipapp)],  # "probe" may be left out
        [str(zipapp), "probe"],  # through #!/usr/bin/env python3
    ):
        result = run(*flags, command=command, env=path)
        assert result.returncode == 1, (command, result)
        assert " ERROR memguard probe: working set 1000.0MiB is 97.6% " in one_line(result.stderr)
        assert_error(run("--warning", "abc", command=command, env=path), 2, "--warning")


def test_the_zipapp_interpreter_line_is_configurable(tmp_path: pathlib.Path) -> None:
    zipapp = build_zipapp(tmp_path / "memguard-probe", "--python", f"{sys.executable} -IS")
    assert zipapp.read_bytes().startswith(f"#!{sys.executable} -IS\n".encode())
    result = run("--help", command=[str(zipapp), "probe"])
    assert (result.returncode, result.stderr) == (0, ""), result
    assert "exit codes" in result.stdout


def test_the_builder_refuses_a_probe_that_imports_more() -> None:
    builder = _builder()
    with pytest.raises(SystemExit, match=r"imports \['trio'\]"):
        builder.archive_members(b"import os\nimport trio\n")
    with pytest.raises(SystemExit, match=r"imports \['\.'\]"):
        builder.archive_members(b"from . import units\n")
