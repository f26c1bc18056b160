"""`memguard run --config FILE`: every flag, and memory QoS, from one YAML file.

    policy: process
    flush-cache-above: 25%
    high-tripwire: true
    classes:
    - name: silver
      swaplimitratio: 0.2
    unifiedannotations: [memory.high, memory.swap.max]

Keys are the flags without "--" (underscores work too); values are what the
flag takes, as written, parsed by the same parsers. Precedence: flag, then
environment, then the file, then the default. Only true/false are booleans
here: YAML 1.1 would read `kubernetes: off` as false and `report-queue: 010` as
8; this loader keeps every other plain scalar as the text written.
Any problem (no file, bad YAML, an unknown key, a bad value) is a ConfigError
naming the file: exit 2, one line.

Bounded, because a config file is input like any other (the kubeconfig check
in memguard.kube.connection uses the same reader and limits):
- Regular files only, opened without blocking: a FIFO with no writer, a
  device or a directory is refused, never read (reading a FIFO would hang).
  At most MAX_FILE_BYTES are read.
- Nesting is bounded (MAX_DEPTH) and so is the document's size with aliases
  expanded (MAX_NODES: a "billion laughs" is refused), both checked on each
  parser event as the composer takes it, so the composer never recurses past
  MAX_DEPTH and nothing is constructed from a document over the limits.
- Keys are strings; explicit tags are limited to str, bool, null, seq and
  map (no !!python/..., !!binary, !!timestamp: values are the flags' text).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor

from memguard.cli.options import Option
from memguard.errors import ConfigError
from memguard.policy.qos import QosConfig, parse_qos_config

QOS_KEYS = ("classes", "unifiedannotations")
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32  # nested lists and mappings, aliases expanded
MAX_NODES = 100_000  # scalars, lists and mappings, aliases expanded

_TAG = "tag:yaml.org,2002:"
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


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
                _refuse("a recursive alias", event)
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
            _refuse(f"nested deeper than {MAX_DEPTH} levels", event)
        if self._node_count > MAX_NODES:
            _refuse(f"more than {MAX_NODES} values (aliases expanded)", event)


def _refuse(problem: str, where: Any) -> NoReturn:
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


class _Loader(BoundedLoader):
    """A bounded SafeLoader that keeps plain scalars as written, except true/false and null.

    YAML 1.1 would turn `off` into false, `010` into 8, `1:30` into 90 and
    `1.10` into 1.1 before the flag's parser saw them. Keys are strings, and
    duplicate keys are errors.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                shown = "null" if key is None else type(key).__name__
                _refuse(f"a key must be a string, not {shown}", key_node)
            if key in seen:
                _refuse(f"duplicate key {key!r}", key_node)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_strict_bool(self, node: yaml.ScalarNode) -> bool:
        value = self.construct_scalar(node)
        if value not in ("true", "True", "TRUE", "false", "False", "FALSE"):
            _refuse(f"!!bool {value!r} is not true or false", node)
        return value.lower() == "true"

    def construct_undefined(self, node: yaml.Node) -> Any:
        _refuse(
            f"the tag {node.tag!r} is not allowed: write values plain, as the flags take them", node
        )


_Loader.yaml_constructors = {
    f"{_TAG}null": SafeConstructor.construct_yaml_null,
    f"{_TAG}bool": _Loader.construct_strict_bool,
    f"{_TAG}str": SafeConstructor.construct_yaml_str,
    f"{_TAG}seq": SafeConstructor.construct_yaml_seq,
    f"{_TAG}map": SafeConstructor.construct_yaml_map,
    None: _Loader.construct_undefined,
}
_Loader.yaml_multi_constructors = {}
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


@dataclass(frozen=True)
class ConfigFile:
    path: str
    values: Mapping[str, str]  # option dest -> the flag's text
    memory_qos: QosConfig | None


def _text(value: Any, key: str) -> str:
    """A YAML scalar (or a list, for comma-separated flags) as the flag's text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    raise ValueError(f"{key}: expected a single value, got {type(value).__name__}")


def compose_bounded(text: str) -> yaml.Node | None:
    """The YAML node graph of one document (SafeLoader's tags), within the limits.

    Nothing is constructed: for checking a file's shape, e.g. a kubeconfig that
    another library will load. yaml.YAMLError when it is not valid or too big.
    """
    return yaml.compose(text, Loader=BoundedLoader)


def _read(path: str) -> Any:
    try:
        data = read_regular_file(path, MAX_FILE_BYTES)
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ConfigError(f"--config {path}: {error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no objects
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path}: {yaml_error_text(error)}") from None
    except RecursionError:  # not expected within MAX_DEPTH: never a traceback
        raise ConfigError(f"--config {path}: nested too deeply") from None


def load_config_file(path: str, options: Sequence[Option]) -> ConfigFile:
    data = _read(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values")
    by_key = {option.flag.removeprefix("--"): option for option in options}
    values: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("_", "-")
        if key in spelled:
            raise ConfigError(f"--config {path}: {raw_key!r} and {spelled[key]!r} are one key")
        spelled[key] = str(raw_key)
        if key in QOS_KEYS:
            continue
        option = by_key.get(key)
        if option is None:
            known = [*by_key, *QOS_KEYS]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if key == "config":
                hint = " (config files do not include others)"
            raise ConfigError(f"--config {path}: unknown key {raw_key!r}{hint}")
        try:
            values[option.dest] = _text(value, key)
        except ValueError as error:
            raise ConfigError(f"--config {path}: {error}") from None
    qos: QosConfig | None = None
    if any(key in data for key in QOS_KEYS):
        try:
            qos = parse_qos_config(data.get("classes"), data.get("unifiedannotations"))
        except ValueError as error:
            raise ConfigError(f"--config {path}: {error}") from None
    return ConfigFile(path, values, qos)
