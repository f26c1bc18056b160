"""Command line: `memguard run | demo | probe | status | fake init | fake drive | fake clean`.

Kept light at import (argparse only): each command imports what it needs, so
quick commands do not pay for trio. Errors are one line on stderr and a
non-zero exit: 2 for bad arguments or configuration, 1 for runtime failures.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from memguard.cli.config import RunConfig
    from memguard.cli.options import Option

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
MAX_ERROR_CHARS = 1000  # of one error line; the parsers cut the values they repeat first
# scheme://USERINFO@ in a URL: its password (or a token as the user) is never repeated
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s@]*@)+")


def _masked_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group(0)[len(match.group(1)) : -1]
    user, colon, _ = userinfo.partition(":")
    return f"{match.group(1)}{user}:***@" if colon else f"{match.group(1)}***@"


def one_line(message: str) -> str:
    """An error message as one bounded line: credentials in URLs masked (user:***@),
    control characters escaped, at most MAX_ERROR_CHARS."""
    from memguard.text import escape_controls

    line = escape_controls(_URL_USERINFO.sub(_masked_userinfo, message))
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS] + "..."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _add_run(commands: argparse._SubParsersAction[_Parser]) -> None:
    from memguard.cli.options import RUN_OPTIONS

    run = commands.add_parser(
        "run",
        help="guard the cgroups under --parent (the daemon)",
        description="Guard container cgroups. Every flag also reads MEMGUARD_<FLAG> "
        "(e.g. MEMGUARD_POLICY=process).",
    )
    run.add_argument(
        "--config",
        dest="config",
        default=None,
        metavar="FILE",
        help="YAML file with any of these flags (without --) and memory QoS classes; "
        "flags and env vars win over it [$MEMGUARD_CONFIG]",
    )
    for option in RUN_OPTIONS:
        run.add_argument(option.flag, **_run_argument(option))


def _run_argument(option: Option) -> dict[str, Any]:
    """add_argument's keywords for one `memguard run` option: a switch, a flag
    that may stand alone (bare), or a flag with a value. Every default is None: a
    flag not given leaves its value to resolve() (env var, --config file, default)."""
    text = option.help.replace("%", "%%")  # argparse %-formats help ("25%")
    default = option.default.replace("%", "%%") or "unset"
    if option.is_switch and option.bare is None:
        return {
            "dest": option.dest,
            "action": "store_const",
            "const": "true",
            "default": None,
            "help": f"{text} [${option.env}]",
        }
    bare = {"nargs": "?", "const": option.bare} if option.bare is not None else {}
    return {
        "dest": option.dest,
        **bare,
        "default": None,
        "metavar": "VALUE",
        "help": f"{text} (default {default}) [${option.env}]",
    }


def _add_fake(commands: argparse._SubParsersAction[_Parser]) -> None:
    fake = commands.add_parser("fake", help="build and drive a fake cgroupfs tree")
    fake_commands = fake.add_subparsers(dest="fake_command", required=True, metavar="COMMAND")
    init = fake_commands.add_parser("init", help="create a fake kubepods tree with real processes")
    init.add_argument("dir", help="directory to create (must be empty or absent)")
    init.add_argument(
        "--cgroup-version",
        type=int,
        choices=(1, 2),
        default=1,
        help="imitate cgroup v1 (default) or v2 files",
    )
    drive = fake_commands.add_parser(
        "drive", help="grow usage in a fake tree (the scripted flush/skip/kill scenario by default)"
    )
    drive.add_argument("dir", help="the fake tree's root")
    drive.add_argument("--container", help="drive only this container (name from `fake init`)")
    drive.add_argument("--kind", default="anon", choices=("anon", "cache", "dirty", "shmem"))
    drive.add_argument("--step", default="8Mi", help="bytes per step (default 8Mi)")
    drive.add_argument("--interval", default="40ms", help="time between steps (default 40ms)")
    drive.add_argument("--steps", default="100", help="number of steps (default 100)")
    clean = fake_commands.add_parser("clean", help="kill a fake tree's processes and remove it")
    clean.add_argument("dir", help="the fake tree's root")


def _add_status(commands: argparse._SubParsersAction[_Parser]) -> None:
    status = commands.add_parser(
        "status",
        help="a live view of a running agent: its containers, nearest the threshold first",
        description="Show what a running memguard's guards know, refreshed in place. Without "
        "--socket or --url: $MEMGUARD_STATUS_SOCKET, /run/memguard/status.sock, "
        "$XDG_RUNTIME_DIR/memguard/status.sock, then http://127.0.0.1:9637.",
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the agent's --status-socket")
    where.add_argument(
        "--url", metavar="URL", help="the agent's --listen, e.g. http://127.0.0.1:9637"
    )
    status.add_argument("--once", action="store_true", help="print one table and exit")
    status.add_argument("--json", action="store_true", help="print the agent's JSON and exit")
    status.add_argument(
        "--interval", default="1s", help="time between refreshes (default 1s; 100ms .. 1h)"
    )


def build_parser() -> _Parser:
    parser = _Parser(prog="memguard", description="Act before the cgroup OOM killer does.")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_run(commands)
    demo = commands.add_parser(
        "demo", help="run the agent on a fake tree: a flush, a skip and a kill"
    )
    demo.add_argument(
        "--cgroup-version",
        type=int,
        choices=(1, 2),
        default=1,
        help="the fake tree imitates cgroup v1 (default) or v2",
    )
    commands.add_parser(
        "probe", help="exec liveness probe: the container's memory against its limit (see --help)"
    )
    _add_fake(commands)
    _add_status(commands)
    return parser


def _config_path(args: argparse.Namespace) -> tuple[str, str] | None:
    """(path, where it came from) of --config, else $MEMGUARD_CONFIG; None: no file.
    An empty one is refused: `--config "$UNSET"` is not silently no file."""
    from memguard.errors import ConfigError

    if args.config is not None:
        path, source = args.config, "--config"
    elif "MEMGUARD_CONFIG" in os.environ:
        path, source = os.environ["MEMGUARD_CONFIG"], "$MEMGUARD_CONFIG"
    else:
        return None
    if not path.strip():
        raise ConfigError(f"{source}: an empty path (leave it out for no config file)")
    return path.strip(), source


def _cmd_run(args: argparse.Namespace) -> int:
    from memguard.cli.config import build_run_config, run_warnings
    from memguard.cli.options import RUN_OPTIONS, resolve, unknown_environment
    from memguard.cli.run import serve

    given = _config_path(args)
    file = None
    if given is not None:
        from memguard.cli.configfile import load_config_file  # yaml only when a file is given

        file = load_config_file(given[0], RUN_OPTIONS)
    shown = ""
    if file is not None:
        from memguard.safeyaml import shown_path

        shown = shown_path(file.path)
    values = resolve(RUN_OPTIONS, vars(args), os.environ, file.values if file else None, shown)
    values["memory_qos"] = file.memory_qos if file else None
    config = build_run_config(values)
    unknown = unknown_environment(RUN_OPTIONS, os.environ)
    _warn(config, [*([unknown] if unknown else []), *run_warnings(values)])
    return serve(config)


def _warn(config: RunConfig, messages: list[str]) -> None:
    """Start-up warnings, once the configuration is known to be good: one line each,
    in the log's format (the log itself starts in memguard.cli.run.serve)."""
    if not messages or config.log_level == "error":
        return
    import logging

    from memguard.cli.logsetup import JsonFormatter, TextFormatter

    formatter = JsonFormatter() if config.log_format == "json" else TextFormatter()
    for message in messages:
        record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, message, None, None)
        sys.stderr.write(formatter.format(record) + "\n")
    sys.stderr.flush()


def _cmd_demo(args: argparse.Namespace) -> int:
    from memguard.cli.demo import main

    return main(args.cgroup_version)


def _cmd_status(args: argparse.Namespace) -> int:
    from memguard.cli import status
    from memguard.errors import ConfigError
    from memguard.units import parse_duration

    try:
        args.interval = parse_duration(args.interval, 0.1, 3600.0)
    except ValueError as error:
        raise ConfigError(f"--interval: {error}") from None
    return status.run(args)


def _cmd_fake(args: argparse.Namespace) -> int:
    from memguard.cli import fake as fake_cli

    return fake_cli.dispatch(args)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["probe"]:
        # Fast path: the liveness probe runs every few seconds in every pod and
        # parses its own arguments; it must not pay for the big parser.
        from memguard import probe

        return probe.main(arguments[1:])
    from memguard.errors import ConfigError, MemguardError

    args = build_parser().parse_args(arguments)
    # probe: above
    handlers = {"run": _cmd_run, "demo": _cmd_demo, "fake": _cmd_fake, "status": _cmd_status}
    handler = handlers[args.command]
    try:
        return handler(args)
    except ConfigError as error:
        sys.stderr.write(f"memguard {args.command}: error: {one_line(str(error))}\n")
        return EXIT_USAGE
    except (MemguardError, OSError) as error:
        sys.stderr.write(f"memguard {args.command}: error: {one_line(str(error))}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
