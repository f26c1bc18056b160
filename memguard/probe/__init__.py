"""`memguard probe`: an exec liveness probe run inside the application container.

    memguard probe --warning 85 --failure 95 --logfile /proc/1/fd/1

It reads the container's own memory cgroup (v1 or v2, detected), computes the
working set the way the kubelet does, appends a WARN line to --logfile at or
above --warning and exits 1 at or above --failure, so the kubelet restarts the
container (SIGTERM and its grace period) before the kernel OOM-kills it.

Exit codes (any non-zero exit fails the probe):
    0  ok: under --failure (a WARN line at or above --warning), or no memory limit
    1  working set at or above --failure: an ERROR line in the log and on stderr
    2  bad arguments
    3  cannot read the memory cgroup
    4  cannot write the log (--logfile, stderr by default); a log that stays
       full for LOG_WAIT_S loses the line instead (said on stderr)
Checked in this order: arguments, log (opened on every run, so a misconfigured
--logfile fails from the first run, not at the first warning), cgroup, limits.

Rules, because it runs every few seconds in every pod (target <= 40 ms wall,
measured by bench/probe.py):
- Standard library modules that cost nothing at startup only (os, sys, time):
  no argparse (~8 ms here), no re, no dataclasses, no typing at run time. It is
  packaged alone into a zipapp (packaging/build_probe_zipapp.py), and runs on
  Python >= 3.8, because application images are not ours.
- Never a traceback: every failure is one line on stderr and its exit code.
- Never a hang: files are opened with O_NONBLOCK (a FIFO opens at once, with
  or without a writer) and read only if fstat says they are regular files,
  at most MAX_READ_BYTES; --logfile opens without blocking (a FIFO with no
  reader fails, exit 4) and stays non-blocking: a line waits at most
  LOG_WAIT_S for room in it (stderr, inherited, keeps its flags and blocks
  as it always did; the kubelet's probe timeout bounds it): a pipe whose
  reader stalled (a stuck runtime log reader behind /proc/1/fd/1) loses the line,
  said on stderr, and the verdict stands - the probe never hangs, nor fails
  the container for a stalled log. A --proc-self-cgroup that exists but is
  not a regular file is a bad argument (exit 2).

Kernel facts:
- /proc/self/cgroup and cgroupfs files are regular files to stat (size 0).
- /proc/self/cgroup: "0::<path>" is the v2 line; a v1 line is
  "<id>:<controllers>:<path>" and the memory one lists "memory".
- With a cgroup namespace, or a runtime that mounts only the container's own
  subtree, the path does not exist under the mount: the mount root is the
  container's cgroup. So the directory is the mount joined with the longest
  suffix of the path that exists there.
- Unlimited: v1 prints 9223372036854771712 (anything >= 2**62 is unlimited),
  v2 prints "max". v1 memory.stat carries hierarchical_memory_limit (the pod's
  limit applies even when the container's own is unlimited); on v2 the
  ancestors' memory.max up to the mount root are read instead.
- The kubelet's working set (container_memory_working_set_bytes) is usage
  minus inactive_file (v1: total_inactive_file), floored at 0.
"""

from __future__ import annotations

import os
import sys
import time

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CGROUP = 3
EXIT_LOG = 4

DEFAULT_WARNING_PCT = 85.0
DEFAULT_FAILURE_PCT = 95.0
DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"
DEFAULT_PROC_SELF_CGROUP = "/proc/self/cgroup"
UNLIMITED_AT_BYTES = 2**62
MAX_READ_BYTES = 1 << 20  # memory.stat is a few KiB
LOG_WAIT_S = 0.2  # for room in the log: a probe runs every few seconds, within a 1 s timeout
LOG_RETRY_S = 0.005
MAX_NUMBER_DIGITS = 20  # 2**64 has 20 digits: longer is garbage, never int()ed
STDERR_FD = 2
_S_IFMT, _S_IFREG = 0o170000, 0o100000  # <sys/stat.h>; the stat module is not imported
_FILE_KINDS = {
    0o040000: "a directory",
    0o010000: "a FIFO",
    0o020000: "a character device",
    0o060000: "a block device",
    0o140000: "a socket",
}
_MIB = 1024 * 1024
_PROG = "memguard probe"

HELP = f"""\
usage: {_PROG} [--warning PCT] [--failure PCT] [--logfile PATH] [--include-cache] [--verbose]

An exec liveness probe for the application container. Reads the container's own
memory cgroup (v1 or v2), computes the working set as the kubelet does (usage
minus inactive_file) and compares it with the limit (the smallest of its own
and its ancestors' limits that it can see).

options:
  --warning PCT       append a WARN line to the log at or above PCT of the limit
                      (default {DEFAULT_WARNING_PCT:g}; "85" or "85%")
  --failure PCT       append an ERROR line and exit 1 at or above PCT (default
                      {DEFAULT_FAILURE_PCT:g}); 0 < warning <= failure <= 100 (equal: no WARN band)
  --logfile PATH      append log lines to PATH (default: stderr); /proc/1/fd/1 is
                      PID 1's stdout, i.e. the container's log
  --include-cache     compare all of usage, page cache included, with the limit
  --verbose           also log an INFO line when under --warning or unlimited
  --cgroup-root DIR   cgroupfs mount (default {DEFAULT_CGROUP_ROOT}; a testing aid)
  --proc-self-cgroup FILE
                      this process's cgroups (default {DEFAULT_PROC_SELF_CGROUP}; a testing aid)
  -h, --help          show this help and exit

exit codes (any non-zero exit fails the probe):
  {EXIT_OK}  ok: under --failure, or no memory limit (a note on stdout)
  {EXIT_FAILURE}  working set at or above --failure
  {EXIT_USAGE}  bad arguments
  {EXIT_CGROUP}  cannot read the memory cgroup
  {EXIT_LOG}  cannot write the log
"""


class UsageError(Exception):
    """Bad arguments: exit 2."""


class CgroupError(Exception):
    """The memory cgroup cannot be found or read: exit 3."""


class Options:
    __slots__ = (
        "cgroup_root",
        "failure_pct",
        "include_cache",
        "logfile",
        "proc_self_cgroup",
        "verbose",
        "warning_pct",
    )

    def __init__(self) -> None:
        self.warning_pct = DEFAULT_WARNING_PCT
        self.failure_pct = DEFAULT_FAILURE_PCT
        self.logfile: str | None = None  # None: stderr
        self.include_cache = False
        self.verbose = False
        self.cgroup_root = DEFAULT_CGROUP_ROOT
        self.proc_self_cgroup = DEFAULT_PROC_SELF_CGROUP


class Measurement:
    """One reading of the container's memory cgroup; limit_bytes None = unlimited."""

    __slots__ = ("directory", "inactive_file_bytes", "limit_bytes", "usage_bytes", "version")

    def __init__(
        self,
        version: int,
        directory: str,
        usage_bytes: int,
        inactive_file_bytes: int | None,
        limit_bytes: int | None,
    ) -> None:
        self.version = version
        self.directory = directory
        self.usage_bytes = usage_bytes
        self.inactive_file_bytes = inactive_file_bytes
        self.limit_bytes = limit_bytes


# --- arguments -------------------------------------------------------------

_VALUE_FLAGS = ("--warning", "--failure", "--logfile", "--cgroup-root", "--proc-self-cgroup")
_SWITCHES = ("--include-cache", "--verbose")


def parse_percent(text: str, flag: str) -> float:
    """A percentage in (0, 100] from '85', '85%' or '85.5'; UsageError otherwise."""
    number = text.strip()
    if number.endswith("%"):
        number = number[:-1].rstrip()
    digits = number.replace(".", "", 1)
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"{flag}: {text!r} is not a percentage such as 85 or 85%")
    value = float(number)
    if not 0.0 < value <= 100.0:
        raise UsageError(f"{flag}: {text!r} is out of range: above 0 and at most 100")
    return value


def _split(argv: list[str]) -> tuple[dict[str, str], set[str]] | None:
    """Flag values and switches given; None when help is asked for."""
    values: dict[str, str] = {}
    switches: set[str] = set()
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        flag, equals, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            return None
        if flag in _VALUE_FLAGS:
            if equals:
                values[flag] = inline
            elif index < len(argv) and not argv[index].startswith("--"):
                values[flag] = argv[index]
                index += 1
            else:
                raise UsageError(f"{flag} needs a value")
        elif arg in _SWITCHES:
            switches.add(arg)
        else:
            raise UsageError(f"unrecognized argument {arg!r}")
    return values, switches


def parse_args(argv: list[str]) -> Options | None:
    """Options from the command line, None for --help; UsageError when bad."""
    split = _split(argv)
    if split is None:
        return None
    values, switches = split
    options = Options()
    if "--warning" in values:
        options.warning_pct = parse_percent(values["--warning"], "--warning")
    if "--failure" in values:
        options.failure_pct = parse_percent(values["--failure"], "--failure")
    if options.warning_pct > options.failure_pct:
        raise UsageError(
            f"--warning {options.warning_pct:g}% is above --failure {options.failure_pct:g}%"
        )
    for flag in ("--logfile", "--cgroup-root", "--proc-self-cgroup"):
        if flag in values and not values[flag]:
            raise UsageError(f"{flag} needs a non-empty value")
    if "--proc-self-cgroup" in values:
        _check_regular_if_present("--proc-self-cgroup", values["--proc-self-cgroup"])
    options.logfile = values.get("--logfile")
    options.cgroup_root = os.path.normpath(values.get("--cgroup-root", DEFAULT_CGROUP_ROOT))
    options.proc_self_cgroup = values.get("--proc-self-cgroup", DEFAULT_PROC_SELF_CGROUP)
    options.include_cache = "--include-cache" in switches
    options.verbose = "--verbose" in switches
    return options


def _check_regular_if_present(flag: str, path: str) -> None:
    """UsageError when path exists but is not a regular file (missing: exit 3 later)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the read says why, with the cgroup's exit code
    if mode & _S_IFMT != _S_IFREG:
        raise UsageError(f"{flag} {path}: {_not_regular(mode)}")


def _not_regular(mode: int) -> str:
    return f"not a regular file ({_FILE_KINDS.get(mode & _S_IFMT, 'unknown type')})"


# --- the cgroup ------------------------------------------------------------


def parse_proc_self_cgroup(text: str) -> tuple[str | None, str | None]:
    """(v1 memory path, v2 path) from /proc/self/cgroup; None where absent."""
    v1_path: str | None = None
    v2_path: str | None = None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, colon, path = rest.partition(":")
        if not colon:
            continue
        if hierarchy == "0" and not controllers:
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    return v1_path, v2_path


def cgroup_directory(mount: str, path: str) -> str:
    """The mount joined with the longest suffix of path that exists there."""
    parts = [part for part in path.split("/") if part not in ("", ".", "..")]
    for start in range(len(parts)):
        candidate = os.path.join(mount, *parts[start:])
        if os.path.isdir(candidate):
            return candidate
    return mount


def locate(cgroup_root: str, proc_self_cgroup: str) -> tuple[int, str, str]:
    """(version, cgroup directory, mount) of this process's memory cgroup."""
    v1_path, v2_path = parse_proc_self_cgroup(read_text(proc_self_cgroup))
    if os.path.isfile(os.path.join(cgroup_root, "cgroup.controllers")):
        if v2_path is None:
            raise CgroupError(f"{cgroup_root} is cgroup v2 but {proc_self_cgroup} has no 0:: line")
        return 2, cgroup_directory(cgroup_root, v2_path), cgroup_root
    memory_mount = os.path.join(cgroup_root, "memory")
    if v1_path is not None and os.path.isdir(memory_mount):
        return 1, cgroup_directory(memory_mount, v1_path), memory_mount
    raise CgroupError(
        f"no memory cgroup: neither {cgroup_root}/cgroup.controllers (v2) nor "
        f"{memory_mount}/ with a memory line in {proc_self_cgroup} (v1)"
    )


def read_text(path: str) -> str:
    """A regular file's text, never blocking (see the rules above); CgroupError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise CgroupError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & _S_IFMT != _S_IFREG:
            raise CgroupError(f"cannot read {path}: {_not_regular(mode)}")
        chunks = []
        size_bytes = 0
        while size_bytes <= MAX_READ_BYTES:
            chunk = os.read(fd, MAX_READ_BYTES + 1 - size_bytes)
            if not chunk:
                break
            chunks.append(chunk)
            size_bytes += len(chunk)
    except OSError as error:
        raise CgroupError(f"cannot read {path}: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if size_bytes > MAX_READ_BYTES:
        raise CgroupError(f"cannot read {path}: larger than {MAX_READ_BYTES} bytes")
    return b"".join(chunks).decode("ascii", "replace")


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_NUMBER_DIGITS


def read_int(path: str) -> int:
    """An integer file; the v2 word "max" (unlimited) reads as UNLIMITED_AT_BYTES."""
    text = read_text(path).strip()
    if text == "max":
        return UNLIMITED_AT_BYTES
    if not _is_number(text):
        raise CgroupError(f"{path}: expected a number, got {text[:40]!r}")
    return int(text)


def parse_stat(text: str) -> dict[str, int]:
    """memory.stat: 'key value' lines; malformed lines are skipped."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and _is_number(parts[1]):
            fields[parts[0]] = int(parts[1])
    return fields


def limit_or_none(limit_bytes: int) -> int | None:
    return None if limit_bytes >= UNLIMITED_AT_BYTES else limit_bytes


def smallest_limit(limits_bytes: list[int]) -> int | None:
    """The tightest of several limits; None when every one is unlimited."""
    return limit_or_none(min(limits_bytes, default=UNLIMITED_AT_BYTES))


def read_v1(directory: str) -> Measurement:
    stat = parse_stat(read_text(os.path.join(directory, "memory.stat")))
    inactive_file_bytes = stat.get("total_inactive_file", stat.get("inactive_file"))
    limits_bytes = [read_int(os.path.join(directory, "memory.limit_in_bytes"))]
    limits_bytes.append(stat.get("hierarchical_memory_limit", UNLIMITED_AT_BYTES))
    usage_bytes = read_int(os.path.join(directory, "memory.usage_in_bytes"))
    return Measurement(1, directory, usage_bytes, inactive_file_bytes, smallest_limit(limits_bytes))


def ancestor_limits_v2(directory: str, mount: str) -> list[int]:
    """memory.max of the ancestors below and at the mount root, where readable."""
    limits_bytes: list[int] = []
    current = directory
    while current != mount and os.path.dirname(current) != current:
        current = os.path.dirname(current)
        try:
            limits_bytes.append(read_int(os.path.join(current, "memory.max")))
        except CgroupError:
            continue  # the root cgroup has no memory.max; others may be unreadable
    return limits_bytes


def read_v2(directory: str, mount: str) -> Measurement:
    stat = parse_stat(read_text(os.path.join(directory, "memory.stat")))
    limits_bytes = [read_int(os.path.join(directory, "memory.max"))]
    limits_bytes += ancestor_limits_v2(directory, mount)
    usage_bytes = read_int(os.path.join(directory, "memory.current"))
    limit_bytes = smallest_limit(limits_bytes)
    return Measurement(2, directory, usage_bytes, stat.get("inactive_file"), limit_bytes)


def measure(options: Options) -> Measurement:
    version, directory, mount = locate(options.cgroup_root, options.proc_self_cgroup)
    measurement = read_v1(directory) if version == 1 else read_v2(directory, mount)
    if measurement.inactive_file_bytes is None and not options.include_cache:
        raise CgroupError(f"{directory}/memory.stat has no inactive_file (see --include-cache)")
    return measurement


# --- the verdict -----------------------------------------------------------


def working_set_bytes(usage_bytes: int, inactive_file_bytes: int) -> int:
    """The kubelet's container_memory_working_set_bytes."""
    return max(0, usage_bytes - inactive_file_bytes)


def percent_of_limit(used_bytes: int, limit_bytes: int) -> float:
    if limit_bytes <= 0:
        return 100.0  # v2 memory.max may be 0: nothing fits
    return 100.0 * used_bytes / limit_bytes


def level_for(percent: float, warning_pct: float, failure_pct: float) -> str:
    if percent >= failure_pct:
        return "ERROR"
    return "WARN" if percent >= warning_pct else "INFO"


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / _MIB:.1f}MiB"


def verdict(measurement: Measurement, options: Options) -> tuple[str, str, float | None]:
    """(level, message, percent); percent is None when there is no limit."""
    usage_bytes = measurement.usage_bytes
    inactive_bytes = measurement.inactive_file_bytes
    if options.include_cache or inactive_bytes is None:
        name, used_bytes, detail = "usage (cache included)", usage_bytes, ""
    else:
        name, used_bytes = "working set", working_set_bytes(usage_bytes, inactive_bytes)
        detail = f"usage {_mib(usage_bytes)}, inactive_file {_mib(inactive_bytes)}; "
    where = f"cgroup v{measurement.version} {measurement.directory}"
    limit_bytes = measurement.limit_bytes
    if limit_bytes is None:
        note = f"no memory limit, nothing to check; {name} {_mib(used_bytes)}; {where}"
        return "INFO", note, None
    percent = percent_of_limit(used_bytes, limit_bytes)
    shown_pct = int(percent * 10) / 10  # truncated: 84.96 must not read as 85.0
    message = (
        f"{name} {_mib(used_bytes)} is {shown_pct:.1f}% of limit {_mib(limit_bytes)} "
        f"(warning {options.warning_pct:g}%, failure {options.failure_pct:g}%); {detail}{where}"
    )
    return level_for(percent, options.warning_pct, options.failure_pct), message, percent


def format_line(level: str, message: str, now_s: float) -> str:
    """'2025-01-31T12:00:00.123Z WARN memguard probe: ...' (UTC)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_s))
    millis = int(now_s * 1000) % 1000
    return f"{stamp}.{millis:03d}Z {level} {_PROG}: {message}"


# --- output and main -------------------------------------------------------


def open_log(logfile: str | None) -> int:
    """An fd to append log lines to; stderr when no --logfile. OSError if it cannot.

    Opened with O_NONBLOCK, so a FIFO without a reader fails (ENXIO) instead of
    blocking the open; it stays non-blocking: a write waits for room at most
    LOG_WAIT_S (write_line).
    """
    if logfile is None:
        return STDERR_FD
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(logfile, flags, 0o644)
    except OSError as error:
        if _is_fifo(logfile):
            raise OSError(error.errno, f"a FIFO with no reader ({error.strerror})") from None
        raise
    return fd


def _is_fifo(path: str) -> bool:
    try:
        return os.stat(path).st_mode & _S_IFMT == 0o010000
    except OSError:
        return False


class LogFull(OSError):
    """The log had no room for LOG_WAIT_S (a pipe nobody reads)."""


def write_line(fd: int, line: str, wait_s: float = LOG_WAIT_S) -> None:
    """One line in as few writes as the fd allows (one: a pipe keeps it whole);
    on a non-blocking fd (--logfile) waiting at most wait_s for room (LogFull)."""
    data = (line + "\n").encode("utf-8", "replace")
    deadline_s = time.monotonic() + wait_s
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            if time.monotonic() >= deadline_s:
                raise LogFull(
                    f"no room for {wait_s * 1000:.0f} ms (is its reader stuck?)"
                ) from None
            time.sleep(LOG_RETRY_S)
            continue
        if written <= 0:
            raise OSError(f"wrote {written} bytes")
        data = data[written:]


def _say(fd: int, line: str) -> bool:
    """Best effort, for stdout and stderr: False when they are gone."""
    try:
        write_line(fd, line)
    except OSError:
        return False
    return True


def _error(message: str) -> None:
    _say(STDERR_FD, f"{_PROG}: error: {message}")


def run(options: Options, log_fd: int, log_name: str) -> int:
    """Measure, decide, log; the exit code."""
    now_s = time.time()
    try:
        level, message, percent = verdict(measure(options), options)
    except CgroupError as error:
        _error(str(error))
        if log_fd != STDERR_FD:  # the application's log says why the probe fails
            _say(log_fd, format_line("ERROR", str(error), now_s))
        return EXIT_CGROUP
    line = format_line(level, message, now_s)
    if percent is None and not options.verbose:
        _say(1, line)  # the note: probe output, which the kubelet keeps at -v=4 only
        return EXIT_OK
    if level != "INFO" or options.verbose:
        try:
            write_line(log_fd, line)
        except LogFull as error:  # the verdict stands: a stalled log is not the app's fault
            _error(f"log {log_name} full, line not written: {error}")
        except OSError as error:
            _error(f"cannot write log {log_name}: {error.strerror or error}")
            return EXIT_LOG
    if level == "ERROR":
        if log_fd != STDERR_FD:  # probe output: `kubectl describe pod` shows it
            _say(STDERR_FD, line)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """`memguard probe ARGS`: the exit code (see the module docstring)."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else list(argv))
    except UsageError as error:
        _error(f"{error} (see {_PROG} --help)")
        return EXIT_USAGE
    if options is None:
        _say(1, HELP.rstrip("\n"))
        return EXIT_OK
    log_name = options.logfile or "stderr"
    try:
        log_fd = open_log(options.logfile)
    except OSError as error:
        _error(f"cannot open log {log_name}: {error.strerror or error}")
        return EXIT_LOG
    try:
        return run(options, log_fd, log_name)
    finally:
        if log_fd != STDERR_FD:
            os.close(log_fd)


if __name__ == "__main__":
    sys.exit(main())
