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
8; this loader keeps every other plain scalar as the text written. A YAML
list is taken only where the flag is a comma list (v2-signals,
protected-namespaces: `[psi, poll]` is `psi,poll`); `policy: [process]` is
refused, as a mapping is anywhere.
Any problem (no file, bad YAML, an unknown key, a bad value) is a ConfigError
naming the file: exit 2, one line.

Bounded, because a config file is input like any other: read with
memguard.safeyaml (regular files only, at most MAX_FILE_BYTES; nesting and
size bounded as the parser goes). Keys are strings; explicit tags are limited
to str, bool, null, seq and map (no !!python/..., !!binary, !!timestamp: values
are the flags' text).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from memguard.cli.options import Option
from memguard.errors import ConfigError
from memguard.policy.qos import QosConfig, parse_qos_config
from memguard.safeyaml import (
    BoundedLoader,
    read_regular_file,
    refuse,
    shown_path,
    yaml_error_text,
)
from memguard.units import shown

QOS_KEYS = ("classes", "unifiedannotations")
MAX_FILE_BYTES = 1 << 20

_TAG = "tag:yaml.org,2002:"


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
                kind = "null" if key is None else type(key).__name__
                refuse(f"a key must be a string, not {kind}", key_node)
            if key in seen:
                refuse(f"duplicate key {key!r}", key_node)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_strict_bool(self, node: yaml.ScalarNode) -> bool:
        value = self.construct_scalar(node)
        if value not in ("true", "True", "TRUE", "false", "False", "FALSE"):
            refuse(f"!!bool {value!r} is not true or false", node)
        return value.lower() == "true"

    def construct_undefined(self, node: yaml.Node) -> Any:
        refuse(
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


def _text(value: Any, key: str, option: Option) -> str:
    """A YAML scalar as the flag's text; a list only for a comma-list flag."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and option.is_list:
        if not all(isinstance(item, str) and item and "," not in item for item in value):
            raise ValueError(f"{key}: expected a list of names (no empty ones, no commas)")
        return ",".join(value)
    kind = "a list" if isinstance(value, list) else "a mapping"  # YAML has no other
    raise ValueError(f"{key}: expected a single value, got {kind}")


def _read(path: str) -> Any:
    where = f"--config {shown_path(path)}"
    try:
        data = read_regular_file(path, MAX_FILE_BYTES)
    except OSError as error:
        raise ConfigError(f"{where}: {error.strerror or error}") from None
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no objects
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: {yaml_error_text(error)}") from None
    except RecursionError:  # not expected within MAX_DEPTH: never a traceback
        raise ConfigError(f"{where}: nested too deeply") from None


def load_config_file(path: str, options: Sequence[Option]) -> ConfigFile:
    where = f"--config {shown_path(path)}"
    data = _read(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of flag names to values")
    by_key = {option.flag.removeprefix("--"): option for option in options}
    values: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("_", "-")
        if key in spelled:
            raise ConfigError(f"{where}: {shown(raw_key)} and {shown(spelled[key])} are one key")
        spelled[key] = str(raw_key)
        if key in QOS_KEYS:
            continue
        option = by_key.get(key)
        if option is None:
            known = [*by_key, *QOS_KEYS]
            close = difflib.get_close_matches(key[:100], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if key == "config":
                hint = " (config files do not include others)"
            raise ConfigError(f"{where}: unknown key {shown(raw_key)}{hint}")
        try:
            values[option.dest] = _text(value, key, option)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
    qos: QosConfig | None = None
    if any(key in data for key in QOS_KEYS):
        try:
            qos = parse_qos_config(data.get("classes"), data.get("unifiedannotations"))
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
    return ConfigFile(path, values, qos)
