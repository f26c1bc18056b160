"""`memguard run --config FILE`: every flag, and memory QoS, from one YAML file.

    policy: process
    flush-cache-above: 25%
    high-tripwire: true
    classes:
    - name: silver
      swaplimitratio: 0.2
    unifiedannotations: [memory.high, memory.swap.max]

Keys are the flags without "--" (underscores work too); values are what the
flag takes, parsed by the same parsers. Precedence: flag, then environment,
then the file, then the default. Only true/false are booleans here: YAML 1.1
would read `kubernetes: off` as false, this loader keeps it the string "off".
Any problem (no file, bad YAML, an unknown key, a bad value) is a ConfigError
naming the file: exit 2, one line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from memguard.errors import ConfigError
from memguard.options import Option
from memguard.policy.qos import QosConfig, parse_qos_config

QOS_KEYS = ("classes", "unifiedannotations")
CONFIG_ENV = "MEMGUARD_CONFIG"
MAX_FILE_BYTES = 1 << 20


class _Loader(yaml.SafeLoader):
    """SafeLoader whose only booleans are true/false (not yes/no/on/off)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
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


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not UTF-8 text") from None
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"--config {path}: larger than 1 MiB")
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"--config {path}:{where}: not valid YAML ({problem})") from None


def load_config_file(path: str, options: Sequence[Option]) -> ConfigFile:
    data = _read(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values")
    by_key = {option.flag.removeprefix("--"): option for option in options}
    values: dict[str, str] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("_", "-")
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
