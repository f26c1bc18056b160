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
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memguard.errors import MemguardError

DEFAULT_SOCKET_DIR = "/run/memguard"
SOCKET_NAME = "status.sock"
DEFAULT_URL = "http://127.0.0.1:9637"
REQUEST_TIMEOUT_S = 5.0
MAX_PAGE_BYTES = 64 << 20  # far above MAX_CONTAINERS rows: a bound, not a limit
SCREEN_ROWS_RESERVED = 7  # the headline, the table's borders and header, the caption


class NoAgent(MemguardError):
    """No memguard answered where `memguard status` looked."""


def socket_candidates(environ: Mapping[str, str]) -> list[str]:
    """Where `--status-socket auto` puts the socket, in order."""
    paths = [os.path.join(DEFAULT_SOCKET_DIR, SOCKET_NAME)]
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        paths.append(os.path.join(runtime, "memguard", SOCKET_NAME))
    return paths


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Source:
    """One place an agent may answer: a unix socket path or an http:// URL."""

    where: str
    unix: bool

    def describe(self) -> str:
        return self.where

    def fetch(self, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        """The agent's /status page; NoAgent (one line, where and why) otherwise."""
        try:
            body = self._get(timeout_s)
        except FileNotFoundError:
            raise NoAgent(f"{self.where}: no such socket") from None
        except (OSError, http.client.HTTPException) as error:
            raise NoAgent(f"{self.where}: {_reason(error)}") from None
        try:
            page = json.loads(body)
        except ValueError:
            raise NoAgent(f"{self.where}: the answer is not JSON (not a memguard?)") from None
        if not isinstance(page, dict) or not isinstance(page.get("containers"), list):
            raise NoAgent(f"{self.where}: the answer is not memguard's status")
        return page

    def _get(self, timeout_s: float) -> bytes:
        connection: http.client.HTTPConnection
        if self.unix:
            connection, path = _UnixConnection(self.where, timeout_s), "/status"
        else:
            parts = urllib.parse.urlsplit(self.where)
            connection = http.client.HTTPConnection(
                parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s
            )
            path = parts.path if parts.path not in ("", "/") else "/status"
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read(MAX_PAGE_BYTES + 1)
        finally:
            connection.close()
        if response.status != 200:
            raise http.client.HTTPException(f"HTTP {response.status} for {path}")
        if len(body) > MAX_PAGE_BYTES:
            raise http.client.HTTPException(f"an answer larger than {MAX_PAGE_BYTES} bytes")
        return body


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def url_source(text: str) -> Source:
    """--url: http://HOST:PORT[/PATH], or HOST:PORT / :PORT for short."""
    url = text if "://" in text else f"http://{text}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or (parts.port is None and not parts.hostname):
        raise ValueError(f"--url {text}: expected http://HOST:PORT")
    if parts.hostname is None:  # ":9637"
        url = f"http://127.0.0.1{url[len('http://') :]}"
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

        raise ConfigError(str(error)) from None
    source, page = first_answer(candidates)
    if args.json:
        sys.stdout.write(json.dumps(page, indent=2) + "\n")
        return 0
    if not sys.stdout.isatty():
        from memguard.cli.statusview import plain_table

        sys.stdout.write(plain_table(page))
        return 0
    if args.once:
        from rich.console import Console

        from memguard.cli.statusview import rich_table

        console = Console()
        console.print(rich_table(page, console.size.width))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        _live(source, page, args.interval)
    return 0
