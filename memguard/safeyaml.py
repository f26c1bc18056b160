"""Reading input files that are not ours, bounded: regular files, bounded YAML.

Used for --config (memguard.cli.configfile), for a kubeconfig and the files it
names (memguard.kube.connection: read here, handed to kubernetes-asyncio as
data) and for the service-account token (memguard.kube.client):
- Regular files only, opened without blocking: a FIFO with no writer, a
  device or a directory is refused, never read (reading a FIFO would hang).
  At most max_bytes are read.
- YAML nesting is bounded (MAX_DEPTH) and so is the document's size with
  aliases expanded (MAX_NODES: a "billion laughs" is refused), both checked on
  each parser event as the composer takes it, so the composer never recurses
  past MAX_DEPTH and nothing is constructed from a document over the limits.
"""

from __future__ import annotations

import os
import stat
from typing import Any, NoReturn

import yaml

from memguard.text import escape_controls

MAX_SHOWN_PATH_CHARS = 200  # of a path repeated in a message; beyond, cut with "..."
MAX_DEPTH = 32  # nested lists and mappings, aliases expanded
MAX_NODES = 100_000  # scalars, lists and mappings, aliases expanded
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def shown_path(path: str) -> str:
    """A path for a one-line message: control characters escaped, at most
    MAX_SHOWN_PATH_CHARS (a 12 KB --config path is not repeated whole)."""
    if len(path) > MAX_SHOWN_PATH_CHARS:
        path = path[:MAX_SHOWN_PATH_CHARS] + "..."
    return escape_controls(path)


def _not_regular(mode: int) -> ValueError | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    return ValueError(f"not a regular file ({kind})")


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes, without ever blocking.

    OSError when it cannot be opened or read; ValueError (the reason, one line)
    when it is not a regular file or holds more than max_bytes. The path is
    stat'ed before it is opened (opening a device can have effects), and the
    open fd again (the path may change in between); O_NONBLOCK makes opening a
    FIFO return at once even without a writer.
    """
    problem = _not_regular(os.stat(path).st_mode)
    if problem is not None:
        raise problem
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        problem = _not_regular(os.fstat(fd).st_mode)
        if problem is not None:
            raise problem
        chunks: list[bytes] = []
        size_bytes = 0
        while size_bytes <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size_bytes)
            if not chunk:
                break
            chunks.append(chunk)
            size_bytes += len(chunk)
    finally:
        os.close(fd)
    if size_bytes > max_bytes:
        raise ValueError(f"larger than {max_bytes / (1 << 20):g} MiB")
    return b"".join(chunks)


class YamlRefusal(yaml.MarkedYAMLError):
    """Valid YAML that memguard refuses: too deep or large, a recursive alias, a bad key."""


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses deep or huge documents before composing them.

    Every event the composer takes passes through get_event: a collection
    opened past MAX_DEPTH, or a document whose node count (aliases expanded)
    passes MAX_NODES, stops the load there. An alias counts the nodes and depth
    of its anchor's subtree; an alias to a collection still open (a recursive
    structure) is refused.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[list[Any]] = []  # per open collection: [anchor, nodes, child height]
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height)
        self._node_count = 0

    def get_event(self) -> Any:
        event: Any = super().get_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.CollectionStartEvent):
            self._count(event, 1, 1)
            self._open.append([event.anchor, 1, 0])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes, child_height = self._open.pop()
            if anchor is not None:
                self._anchored[anchor] = (nodes, child_height + 1)
            if self._open:
                self._open[-1][2] = max(self._open[-1][2], child_height + 1)
        elif isinstance(event, yaml.ScalarEvent):
            self._count(event, 1, 0)
            if event.anchor is not None:
                self._anchored[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            if any(frame[0] == event.anchor for frame in self._open):
                refuse("a recursive alias", event)
            nodes, height = self._anchored.get(event.anchor or "", (0, 0))  # unknown: composer says
            self._count(event, nodes, height)
            if self._open:
                self._open[-1][2] = max(self._open[-1][2], height)
        return event

    def _count(self, event: Any, nodes: int, height: int) -> None:
        """Add nodes (an alias: its anchor's subtree) at the current level; check the limits.

        height is the number of collection levels the nodes add (a scalar 0, a
        new collection 1, an alias its anchor's).
        """
        self._node_count += nodes
        for frame in self._open:
            frame[1] += nodes
        if len(self._open) + height > MAX_DEPTH:
            refuse(f"nested deeper than {MAX_DEPTH} levels", event)
        if self._node_count > MAX_NODES:
            refuse(f"more than {MAX_NODES} values (aliases expanded)", event)


def refuse(problem: str, where: Any) -> NoReturn:
    """Raise YamlRefusal at an event's or a node's start."""
    raise YamlRefusal(problem=problem, problem_mark=where.start_mark)


def yaml_error_text(error: yaml.YAMLError) -> str:
    """One line: 'line 3, column 7: not valid YAML (found ...)' or the limit passed."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if isinstance(error, YamlRefusal):
        return f"{where}{problem}"
    return f"{where}not valid YAML ({problem})"


def compose_bounded(text: str) -> yaml.Node | None:
    """The YAML node graph of one document (SafeLoader's tags), within the limits.

    Nothing is constructed: for checking a file's shape, e.g. a kubeconfig that
    another library will load. yaml.YAMLError when it is not valid or too big.
    """
    return yaml.compose(text, Loader=BoundedLoader)


def load_bounded(text: str) -> Any:
    """One document as yaml.safe_load reads it (SafeLoader's types), within the limits.

    For a file another library would read with safe_load (a kubeconfig): the
    same values, but never past MAX_DEPTH or MAX_NODES. yaml.YAMLError when it
    is not valid or too big; ValueError for a scalar SafeLoader cannot make (a
    date such as 2001-02-30, an integer of more than 4300 digits).
    """
    return yaml.load(text, Loader=BoundedLoader)  # a SafeLoader subclass: no objects
