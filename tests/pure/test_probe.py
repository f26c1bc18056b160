"""`memguard probe`'s pure parts: arguments, /proc/self/cgroup, the kubelet's arithmetic."""

from __future__ import annotations

import ast
import os
import pathlib
import stat

import pytest

from memguard import probe
from memguard.probe import (
    UNLIMITED_AT_BYTES,
    CgroupError,
    Measurement,
    Options,
    UsageError,
    format_line,
    level_for,
    open_log,
    parse_args,
    parse_percent,
    parse_proc_self_cgroup,
    parse_stat,
    percent_of_limit,
    read_int,
    read_text,
    smallest_limit,
    verdict,
    working_set_bytes,
    write_line,
)

MIB = 1024 * 1024
UNLIMITED_AS_READ = 9223372036854771712  # cgroup v1 "unlimited", as this 6.18 kernel prints it

# /proc/self/cgroup of a process on this host (cgroup v1 hierarchies + an empty v2 mount).
GOLDEN_HOST_V1 = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/273ae1aec30e905a1ce5d19ba646d480
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
KUBEPODS_V1 = "11:memory:/kubepods/burstable/pod0f1e/3c2d\n10:cpu,cpuacct:/kubepods/x\n"
SYSTEMD_V2 = "0::/kubepods.slice/kubepods-pod0f1e.slice/cri-containerd-3c2d.scope\n"
CGROUPNS_V2 = "0::/\n"
COMBINED_CONTROLLERS = "5:cpu,memory:/docker/ab12\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOLDEN_HOST_V1, ("/process_api/273ae1aec30e905a1ce5d19ba646d480", "/")),
        (KUBEPODS_V1, ("/kubepods/burstable/pod0f1e/3c2d", None)),
        (SYSTEMD_V2, (None, "/kubepods.slice/kubepods-pod0f1e.slice/cri-containerd-3c2d.scope")),
        (CGROUPNS_V2, (None, "/")),
        (COMBINED_CONTROLLERS, ("/docker/ab12", None)),
        ("3:name=memory:/not-the-controller\n", (None, None)),  # a named hierarchy, not memory
        ("4:memory:/a:b\n0::/c:d\n", ("/a:b", "/c:d")),  # a colon inside a path survives
        ("garbage\n\n4:memory\n", (None, None)),
        ("", (None, None)),
    ],
    ids=["host-hybrid", "kubepods-v1", "systemd-v2", "cgroupns-v2", "combined", "named",
         "colons", "garbage", "empty"],
)  # fmt: skip
def test_proc_self_cgroup_forms(text: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_proc_self_cgroup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected_pct"),
    [("85", 85.0), ("85%", 85.0), (" 85 % ", 85.0), ("85.5", 85.5), (".5", 0.5), ("100", 100.0),
     ("100%", 100.0), ("0.01", 0.01)],
)  # fmt: skip
def test_percentages_accepted(text: str, expected_pct: float) -> None:
    assert parse_percent(text, "--warning") == expected_pct


@pytest.mark.parametrize(
    ("text", "needle"),
    [("abc", "not a percentage"), ("", "not a percentage"), ("%", "not a percentage"),
     ("85%%", "not a percentage"), ("1e2", "not a percentage"), ("nan", "not a percentage"),
     ("inf", "not a percentage"), ("-5", "not a percentage"), ("8.5.5", "not a percentage"),
     ("\uff18\uff15", "not a percentage"), ("120", "out of range"), ("100.1", "out of range"),
     ("0", "out of range"), ("0%", "out of range"), ("0.0", "out of range")],
)  # fmt: skip
def test_bad_percentages_name_the_flag_and_the_value(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_percent(text, "--failure")
    assert str(raised.value).startswith(f"--failure: {text!r} ")
    assert needle in str(raised.value)


def test_defaults() -> None:
    options = parse_args([])
    assert options is not None
    assert (options.warning_pct, options.failure_pct) == (85.0, 95.0)
    assert options.logfile is None
    assert (options.include_cache, options.verbose) == (False, False)
    assert (options.cgroup_root, options.proc_self_cgroup) == (
        "/sys/fs/cgroup",
        "/proc/self/cgroup",
    )


def test_every_flag_in_both_spellings() -> None:
    options = parse_args(
        ["--warning=70%", "--failure", "80", "--logfile", "/proc/1/fd/1", "--include-cache",
         "--verbose", "--cgroup-root=/x/", "--proc-self-cgroup", "/y"]
    )  # fmt: skip
    assert options is not None
    assert (options.warning_pct, options.failure_pct, options.logfile) == (
        70.0,
        80.0,
        "/proc/1/fd/1",
    )
    assert (options.include_cache, options.verbose) == (True, True)
    assert (options.cgroup_root, options.proc_self_cgroup) == ("/x", "/y")


def test_warning_equal_to_failure_is_allowed() -> None:
    options = parse_args(["--warning", "90", "--failure", "90%"])
    assert options is not None
    assert options.warning_pct == options.failure_pct == 90.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--warning", "90", "--failure", "80"], "--warning 90% is above --failure 80%"),
        (["--warning", "96"], "--warning 96% is above --failure 95%"),
        (["--warning"], "--warning needs a value"),
        (["--logfile", "--verbose"], "--logfile needs a value"),
        (["--logfile="], "--logfile needs a non-empty value"),
        (["--warn", "85"], "unrecognized argument '--warn'"),
        (["85"], "unrecognized argument '85'"),
        (["--verbose=yes"], "unrecognized argument '--verbose=yes'"),
    ],
)
def test_bad_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["--warning", "abc", "--help"]])
def test_help_is_asked_for(argv: list[str]) -> None:
    assert parse_args(argv) is None


@pytest.mark.parametrize(
    ("usage_bytes", "inactive_file_bytes", "expected_bytes"),
    [(900 * MIB, 100 * MIB, 800 * MIB), (100, 100, 0), (100, 250, 0), (0, 0, 0), (5, 0, 5)],
)
def test_working_set_is_usage_minus_inactive_file_floored_at_zero(
    usage_bytes: int, inactive_file_bytes: int, expected_bytes: int
) -> None:
    assert working_set_bytes(usage_bytes, inactive_file_bytes) == expected_bytes


@pytest.mark.parametrize(
    ("used_bytes", "limit_bytes", "expected_pct"),
    [(512 * MIB, 1024 * MIB, 50.0), (0, 1024, 0.0), (2048, 1024, 200.0), (0, 0, 100.0),
     (1, 0, 100.0)],
)  # fmt: skip
def test_percent_of_limit_never_divides_by_zero(
    used_bytes: int, limit_bytes: int, expected_pct: float
) -> None:
    assert percent_of_limit(used_bytes, limit_bytes) == expected_pct


@pytest.mark.parametrize(
    ("percent", "warning_pct", "failure_pct", "level"),
    [(84.99, 85, 95, "INFO"), (85.0, 85, 95, "WARN"), (94.99, 85, 95, "WARN"),
     (95.0, 85, 95, "ERROR"), (150.0, 85, 95, "ERROR"), (89.9, 90, 90, "INFO"),
     (90.0, 90, 90, "ERROR"), (100.0, 100, 100, "ERROR")],
)  # fmt: skip
def test_levels_at_and_above_thresholds(
    percent: float, warning_pct: float, failure_pct: float, level: str
) -> None:
    assert level_for(percent, warning_pct, failure_pct) == level


@pytest.mark.parametrize(
    ("limits_bytes", "expected"),
    [([], None), ([UNLIMITED_AS_READ], None), ([UNLIMITED_AT_BYTES], None),
     ([UNLIMITED_AT_BYTES - 1], UNLIMITED_AT_BYTES - 1),
     ([UNLIMITED_AS_READ, 256 * MIB], 256 * MIB),
     ([512 * MIB, 256 * MIB, UNLIMITED_AS_READ], 256 * MIB), ([0], 0)],
)  # fmt: skip
def test_the_tightest_limit_wins(limits_bytes: list[int], expected: int | None) -> None:
    assert smallest_limit(limits_bytes) == expected


def test_memory_stat_parsing_skips_malformed_lines() -> None:
    text = (
        "cache 10\ninactive_file 7\nhierarchical_memory_limit 9223372036854771712\nbad\nx y\n-1 z\n"
    )
    assert parse_stat(text) == {
        "cache": 10,
        "inactive_file": 7,
        "hierarchical_memory_limit": UNLIMITED_AS_READ,
    }


def _options(*argv: str) -> Options:
    options = parse_args(list(argv))
    assert options is not None
    return options


def _measurement(
    usage_bytes: int, inactive_bytes: int | None, limit_bytes: int | None
) -> Measurement:
    return Measurement(2, "/sys/fs/cgroup", usage_bytes, inactive_bytes, limit_bytes)


def test_verdict_line_carries_every_number() -> None:
    level, message, percent = verdict(_measurement(980 * MIB, 100 * MIB, 1024 * MIB), _options())
    assert (level, percent) == ("WARN", 85.9375)
    assert message == (
        "working set 880.0MiB is 85.9% of limit 1024.0MiB (warning 85%, failure 95%); "
        "usage 980.0MiB, inactive_file 100.0MiB; cgroup v2 /sys/fs/cgroup"
    )


def test_shown_percent_is_truncated_so_it_never_reads_as_the_threshold() -> None:
    level, message, _ = verdict(_measurement(870 * MIB, 0, 1024 * MIB), _options())
    assert level == "INFO"  # 84.96 %: under 85
    assert "is 84.9% of limit" in message


def test_include_cache_compares_all_of_usage() -> None:
    measurement = _measurement(980 * MIB, 500 * MIB, 1024 * MIB)
    assert verdict(measurement, _options())[0] == "INFO"
    level, message, _ = verdict(measurement, _options("--include-cache"))
    assert level == "ERROR"
    assert message.startswith("usage (cache included) 980.0MiB is 95.7% of limit 1024.0MiB")
    assert "inactive_file" not in message


def test_unlimited_is_ok_with_a_note_and_no_percent() -> None:
    level, message, percent = verdict(_measurement(10 * MIB, MIB, None), _options())
    assert (level, percent) == ("INFO", None)
    assert (
        message == "no memory limit, nothing to check; working set 9.0MiB; cgroup v2 /sys/fs/cgroup"
    )


def test_log_line_format() -> None:
    line = format_line("WARN", "working set ...", 1_700_000_000.5)
    assert line == "2023-11-14T22:13:20.500Z WARN memguard probe: working set ..."


def test_help_documents_every_exit_code() -> None:
    for code, meaning in [
        (probe.EXIT_OK, "ok"),
        (probe.EXIT_FAILURE, "working set at or above --failure"),
        (probe.EXIT_USAGE, "bad arguments"),
        (probe.EXIT_CGROUP, "cannot read the memory cgroup"),
        (probe.EXIT_LOG, "cannot write the log"),
    ]:
        assert f"  {code}  {meaning}" in probe.HELP
        assert f"    {code}  " in (probe.__doc__ or "")
    assert [probe.EXIT_OK, probe.EXIT_FAILURE, probe.EXIT_USAGE] == [0, 1, 2]
    assert [probe.EXIT_CGROUP, probe.EXIT_LOG] == [3, 4]


def test_the_probe_imports_only_cheap_standard_modules() -> None:
    tree = ast.parse(pathlib.Path(probe.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported == {"__future__", "os", "sys", "time"}


# --- files that are not regular files, numbers too long (issue 9) ----------------------------


def test_percentages_need_ascii_digits_and_a_sane_length() -> None:
    with pytest.raises(UsageError, match="not a percentage"):
        parse_percent("\u0668\u0665", "--warning")  # ARABIC-INDIC 8 5
    with pytest.raises(UsageError, match="out of range"):
        parse_percent("9" * 5000, "--warning")


def test_a_proc_self_cgroup_that_is_not_a_regular_file_is_a_bad_argument(
    tmp_path: pathlib.Path,
) -> None:
    fifo = tmp_path / "cgroup"
    os.mkfifo(fifo)
    for path, kind in [(str(fifo), "a FIFO"), (str(tmp_path), "a directory"),
                       ("/dev/null", "a character device")]:  # fmt: skip
        with pytest.raises(UsageError) as raised:
            parse_args(["--proc-self-cgroup", path])
        assert str(raised.value) == f"--proc-self-cgroup {path}: not a regular file ({kind})"
    # A missing file is no bad argument: reading it fails (exit 3), as the real one would.
    assert _options("--proc-self-cgroup", str(tmp_path / "absent")).proc_self_cgroup.endswith(
        "absent"
    )


def test_proc_self_cgroup_is_a_regular_file_on_this_kernel() -> None:
    assert stat.S_ISREG(os.stat(probe.DEFAULT_PROC_SELF_CGROUP).st_mode)
    assert "::" in read_text(probe.DEFAULT_PROC_SELF_CGROUP) or ":memory:" in read_text(
        probe.DEFAULT_PROC_SELF_CGROUP
    )


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_read_text_refuses_what_is_not_a_regular_file_without_blocking(
    tmp_path: pathlib.Path, kind: str
) -> None:
    path = {"fifo": str(tmp_path / "memory.stat"), "device": "/dev/zero", "directory": "/"}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # no writer: open() without O_NONBLOCK would block
    with pytest.raises(CgroupError, match=r"^cannot read .*: not a regular file \(a "):
        read_text(path)


def test_read_text_reads_at_most_a_mebibyte(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memory.stat"
    path.write_bytes(b"cache 1\n" * (probe.MAX_READ_BYTES // 8))
    assert len(read_text(str(path))) == probe.MAX_READ_BYTES
    path.write_bytes(b"x" * (probe.MAX_READ_BYTES + 1))
    with pytest.raises(CgroupError, match="larger than 1048576 bytes"):
        read_text(str(path))


def test_numbers_longer_than_20_digits_are_garbage(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memory.usage_in_bytes"
    path.write_text("9" * 5000 + "\n")  # int() would raise past 4300 digits
    with pytest.raises(CgroupError, match="expected a number, got '9999"):
        read_int(str(path))
    path.write_text("18446744073709551615\n")  # 2**64 - 1: 20 digits, still a number
    assert read_int(str(path)) == 2**64 - 1
    path.write_text("\u0663\n")
    with pytest.raises(CgroupError, match="expected a number"):
        read_int(str(path))
    assert parse_stat(f"cache {'9' * 5000}\ninactive_file 5\nx \u0663\n") == {"inactive_file": 5}


def test_the_log_opens_a_fifo_only_when_someone_reads_it(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="a FIFO with no reader"):
        open_log(str(fifo))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fd = open_log(str(fifo))
        try:
            assert not os.get_blocking(fd)  # a write waits for room LOG_WAIT_S at most
            write_line(fd, "a line")
            assert os.read(reader, 100) == b"a line\n"
        finally:
            os.close(fd)
    finally:
        os.close(reader)
