"""`memguard status`: a live view of a running agent, from its /status JSON.

Where the agent is: --socket PATH (its --status-socket), --url URL (its
--listen), else $MEMGUARD_STATUS_SOCKET, else the first that answers of the
places `--status-socket auto` uses (/run/memguard/status.sock, then
$XDG_RUNTIME_DIR/memguard/status.sock) and http://127.0.0.1:9637.

On a terminal the table is refreshed in place every --interval (rich's Live;
rich is imported only then); --once prints one table, --json the JSON; when
stdout is not a terminal one plain-text table is printed. When no agent
answers: one line on stderr saying where it looked, and exit 1. Light at
import (standard library only): the agent's modules are never loaded here.

Nothing of an answer is trusted: the whole fetch has one deadline
(REQUEST_TIMEOUT_S; memguard.cli.statusfetch), the page is checked field by
field before it is shown (memguard.cli.statusanswer), every text from it is
shown escaped (memguard.cli.statusview), and so is every error line. The live
view shows a failed refresh in red and tries again at the next one. stdout
closed or failing: one line on stderr (NoOutput), exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memguard.cli import statusanswer, statusfetch
from memguard.cli.values import host_problem
from memguard.errors import MemguardError
from memguard.text import escape_controls

DEFAULT_SOCKET_DIR = "/run/memguard"
SOCKET_NAME = "status.sock"
DEFAULT_URL = "http://127.0.0.1:9637"
REQUEST_TIMEOUT_S = 5.0
SCREEN_ROWS_RESERVED = 7  # the headline, the table's borders and header, the caption


class NoAgent(MemguardError):
    """No memguard answered where `memguard status` looked."""


class NoOutput(MemguardError):
    """stdout cannot take the status (closed, or a write failed)."""


def socket_candidates(environ: Mapping[str, str]) -> list[str]:
    """Where `--status-socket auto` puts the socket, in order."""
    paths = [os.path.join(DEFAULT_SOCKET_DIR, SOCKET_NAME)]
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        paths.append(os.path.join(runtime, "memguard", SOCKET_NAME))
    return paths


@dataclass(frozen=True)
class Source:
    """One place an agent may answer: a unix socket path or an http:// URL."""

    where: str
    unix: bool

    def describe(self) -> str:
        return escape_controls(self.where)

    def fetch(self, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        """The agent's /status page, checked (memguard.cli.statusanswer), all of
        it within timeout_s; NoAgent (one line: where and why) otherwise."""
        deadline_s = time.monotonic() + timeout_s
        try:
            if self.unix:
                body = statusfetch.get(self.where, "localhost", 80, "/status", deadline_s)
            else:
                parts = urllib.parse.urlsplit(self.where)
                path = parts.path if parts.path not in ("", "/") else "/status"
                host, port = parts.hostname or "127.0.0.1", parts.port or 80
                body = statusfetch.get(None, host, port, path, deadline_s)
            return statusanswer.parse(body)
        except FileNotFoundError:
            why = "no such socket"
        except TimeoutError:
            why = f"no answer in time ({timeout_s:g}s for the whole answer)"
        except (OSError, http.client.HTTPException, statusanswer.NotStatus) as error:
            why = statusfetch.reason(error)
        raise NoAgent(escape_controls(f"{self.where}: {why}"))


def url_source(text: str) -> Source:
    """--url: http://HOST:PORT[/PATH], or HOST:PORT / :PORT for short."""
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urllib.parse.urlsplit(url)
        # .port is a ValueError when it is not a port; no space or control character
        # may go into the request line
        usable = parts.scheme == "http" and (parts.port is not None or bool(parts.hostname))
    except ValueError:
        usable = False
    if not usable or not url.isprintable() or " " in url:
        raise ValueError(f"--url {text}: expected http://HOST:PORT")
    if parts.hostname is None:  # ":9637"
        url = f"http://127.0.0.1{url[len('http://') :]}"
    elif (problem := host_problem(parts.hostname)) is not None:  # '.', 'a..b', long labels
        raise ValueError(f"--url {text}: {problem}")
    return Source(url, unix=False)


def sources(args: argparse.Namespace, environ: Mapping[str, str]) -> list[Source]:
    """Where to look, in order (module docstring)."""
    if args.socket:
        return [Source(os.path.abspath(args.socket), unix=True)]
    if args.url:
        return [url_source(args.url)]
    configured = environ.get("MEMGUARD_STATUS_SOCKET", "").strip()
    if configured and configured not in ("auto", "off"):
        return [Source(os.path.abspath(configured), unix=True)]
    found = [Source(path, unix=True) for path in socket_candidates(environ)]
    return [*found, Source(DEFAULT_URL, unix=False)]


def first_answer(candidates: list[Source]) -> tuple[Source, dict[str, Any]]:
    """The first source that answers and its page; NoAgent naming every one tried."""
    problems = []
    for source in candidates:
        try:
            return source, source.fetch()
        except NoAgent as error:
            problems.append(str(error))
    hint = "" if len(candidates) == 1 else "; start `memguard run`, or give --socket or --url"
    raise NoAgent("no memguard agent answers: " + "; ".join(problems) + hint)


def _live(source: Source, page: dict[str, Any], interval_s: float) -> None:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from memguard.cli.statusview import rich_table

    console = Console()

    def screen(page: dict[str, Any], problem: str = "") -> Group:
        rows = max(1, console.size.height - SCREEN_ROWS_RESERVED)
        shown = {**page, "containers": page["containers"][:rows]}
        if len(page["containers"]) > rows:
            shown["omitted"] = int(page.get("omitted", 0)) + len(page["containers"]) - rows
        note = Text(problem, style="bold red") if problem else Text(f"from {source.describe()}")
        return Group(rich_table(shown, console.size.width), note)

    with Live(screen(page), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval_s)
            try:
                page = source.fetch()
                live.update(screen(page), refresh=True)
            except NoAgent as error:
                stamp = time.strftime("%H:%M:%S")
                live.update(screen(page, f"{stamp} no answer: {error} (retrying)"), refresh=True)


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        candidates = sources(args, environ)
    except ValueError as error:
        from memguard.errors import ConfigError

        raise ConfigError(escape_controls(str(error))) from None
    if sys.stdout is None:  # started with it closed (>&-): Python has none
        raise NoOutput("stdout is closed: nowhere to show the status")
    source, page = first_answer(candidates)
    try:
        _show(args, source, page)
    except BrokenPipeError:
        _stdout_to_devnull()
        return 1  # the reader left (`| head`): nothing more to say
    except OSError as error:
        _stdout_to_devnull()
        raise NoOutput(f"cannot write to stdout: {statusfetch.reason(error)}") from None
    return 0


def _show(args: argparse.Namespace, source: Source, page: dict[str, Any]) -> None:
    """The page on stdout: JSON, plain text (not a terminal), one rich table, or live."""
    if args.json:
        sys.stdout.write(json.dumps(page, indent=2) + "\n")
    elif not sys.stdout.isatty():
        from memguard.cli.statusview import plain_table

        sys.stdout.write(plain_table(page))
    elif args.once:
        from rich.console import Console

        from memguard.cli.statusview import rich_table

        console = Console()
        console.print(rich_table(page, console.size.width))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            _live(source, page, args.interval)
    sys.stdout.flush()


def _stdout_to_devnull() -> None:
    """What stdout still buffers goes nowhere (not a second error at exit)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
