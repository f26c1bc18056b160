"""Where the API server is, decided without importing any client code (light).

An explicit --kubeconfig wins, then the in-cluster service account, then
$KUBECONFIG; with none of them Kubernetes features are off.

Nothing kubernetes-asyncio would read is handed to it unchecked, because it
reads on its own thread with plain open().read(): a FIFO blocks it for ever,
/dev/zero or a huge file grows memguard until the node kills it.
- A kubeconfig is read here (memguard.safeyaml: a regular file of at most
  MAX_KUBECONFIG_BYTES, YAML within memguard.configfile's limits) and must be
  a mapping whose clusters and contexts (and users, when present) are lists.
- The files it names for the current context - the cluster's
  certificate-authority, the user's tokenFile, client-certificate and
  client-key, each only where its -data twin (or `token`) is absent, as the
  loader reads them; relative to the kubeconfig's directory - must be regular
  readable files of at most MAX_CREDENTIAL_FILE_BYTES, and an exec plugin's
  command must be an executable found as the loader would run it. The loader
  then gets the kubeconfig as data (checked_kubeconfig): the token read here,
  the other files by absolute path. (kubernetes-asyncio's auth providers read
  no file: oidc takes idp-certificate-authority-data only, gcp needs google-auth.)
- In a cluster, the service account's token and ca.crt are checked the same
  way, and the token, which kubernetes-asyncio re-reads every minute, is
  re-read bounded (memguard.kube.client.TokenFile).
An explicit --kubeconfig that fails is a ConfigError (exit 2, one line naming
the key and the file); a $KUBECONFIG or a service account that fails carries
its problem in the Connection, so memguard.kube.features logs it once and goes
on guarding without Kubernetes (a DaemonSet that exits would guard nothing).
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memguard.errors import ConfigError
from memguard.units import shown

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_TOKEN = f"{SERVICE_ACCOUNT_DIR}/token"
SERVICE_ACCOUNT_CA = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
MAX_KUBECONFIG_BYTES = 4 << 20
MAX_CREDENTIAL_FILE_BYTES = 1 << 20  # a token, a key, a certificate or a CA bundle
NOT_A_KUBECONFIG = "not a kubeconfig (expected a YAML mapping with clusters, contexts and users)"
# (file key, the key whose data wins over it) as kubernetes-asyncio's FileOrData reads them
CLUSTER_FILES = (("certificate-authority", "certificate-authority-data"),)
USER_FILES = (
    ("tokenFile", "token"),
    ("client-certificate", "client-certificate-data"),
    ("client-key", "client-key-data"),
)


@dataclass(frozen=True)
class Connection:
    """How to reach the API server: in-cluster or a kubeconfig file.

    problem: why the kubeconfig or service account cannot be used (one line),
    None when it can. token_file, ca_file: the service account's (in-cluster).
    """

    in_cluster: bool
    kubeconfig: str | None = None
    problem: str | None = None
    token_file: str = SERVICE_ACCOUNT_TOKEN
    ca_file: str = SERVICE_ACCOUNT_CA

    def describe(self) -> str:
        return "in-cluster service account" if self.in_cluster else f"kubeconfig {self.kubeconfig}"


class KubeconfigProblem(ValueError):
    """Why a kubeconfig (or a file it names) is not handed to kubernetes-asyncio: one line."""


def file_problem(path: str) -> str | None:
    """Why path is not a credential file memguard lets kubernetes-asyncio read; None if it is."""
    from memguard.safeyaml import read_regular_file

    try:
        read_regular_file(path, MAX_CREDENTIAL_FILE_BYTES)
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return str(error.strerror or error)
    except ValueError as error:
        return str(error)
    return None


def read_token(path: str) -> str:
    """A token file's text, stripped (as client-go does); KubeconfigProblem (the
    reason) when it is not a regular UTF-8 file of at most MAX_CREDENTIAL_FILE_BYTES."""
    from memguard.safeyaml import read_regular_file

    try:
        return read_regular_file(path, MAX_CREDENTIAL_FILE_BYTES).decode("utf-8").strip()
    except FileNotFoundError:
        raise KubeconfigProblem("no such file") from None
    except OSError as error:
        raise KubeconfigProblem(str(error.strerror or error)) from None
    except UnicodeDecodeError:
        raise KubeconfigProblem("not UTF-8 text") from None
    except ValueError as error:
        raise KubeconfigProblem(str(error)) from None


def _read_kubeconfig(path: str) -> Any:
    import yaml  # only when a kubeconfig is given: kubernetes-asyncio loads it anyway

    from memguard.safeyaml import load_bounded, read_regular_file, yaml_error_text

    try:
        data = read_regular_file(path, MAX_KUBECONFIG_BYTES)
    except FileNotFoundError:
        raise KubeconfigProblem("no such file") from None
    except OSError as error:
        raise KubeconfigProblem(str(error.strerror or error)) from None
    except ValueError as error:  # not a regular file, too large
        raise KubeconfigProblem(str(error)) from None
    try:
        return load_bounded(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise KubeconfigProblem("not a kubeconfig (not UTF-8 text)") from None
    except yaml.YAMLError as error:
        problem = f"cannot load Kubernetes config: {yaml_error_text(error)}"
        raise KubeconfigProblem(problem) from None
    except (ValueError, RecursionError) as error:  # a date or an integer SafeLoader refuses
        problem = f"cannot load Kubernetes config: {' '.join(str(error).split())[:200]}"
        raise KubeconfigProblem(problem) from None


def _looks_like_a_kubeconfig(config: Any) -> bool:
    """A mapping with lists of clusters and contexts; users a list too, or absent/null."""
    return (
        isinstance(config, dict)
        and isinstance(config.get("clusters"), list)
        and isinstance(config.get("contexts"), list)
        and isinstance(config.get("users", []), list | None)
    )


def _entry(items: Any, name: Any, inner: str) -> dict[str, Any] | None:
    """The inner mapping (`cluster`, `user`, `context`) of the first list entry with
    this name, as the loader merges a file (the first of a name wins); None if none."""
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and "name" in item and item["name"] == name:
            value = item.get(inner)
            return value if isinstance(value, dict) else None
    return None


def _first_of_each_name(items: list[Any]) -> list[Any]:
    """A list without later entries of a name already seen, as load_kube_config
    merges a file (load_kube_config_from_dict would refuse the duplicates)."""
    seen: set[str] = set()
    kept = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                continue
            seen.add(name)
        kept.append(item)
    return kept


def _inline_files(
    section: dict[str, Any], keys: tuple[tuple[str, str], ...], base: str, where: str
) -> None:
    """Check each file the section names (unless its data twin is there): the token
    is read and put in as `token`, the other names made absolute."""
    for file_key, data_key in keys:
        if data_key in section or file_key not in section:
            continue
        value = section[file_key]
        if not isinstance(value, str):
            raise KubeconfigProblem(f"{where} {file_key}: expected a file name, got {value!r:.60}")
        path = os.path.normpath(os.path.join(base, value))
        shown_file = f"{where} {file_key} {_shown_path(path)}"
        if file_key == "tokenFile":
            try:
                section["token"] = read_token(path)
            except KubeconfigProblem as error:
                raise KubeconfigProblem(f"{shown_file}: {error}") from None
            del section["tokenFile"]
            continue
        problem = file_problem(path)
        if problem is not None:
            raise KubeconfigProblem(f"{shown_file}: {problem}")
        section[file_key] = path


def _check_exec(user: dict[str, Any], where: str) -> None:
    """An exec plugin's command must be found as the loader runs it: a path as
    given, a bare name in $PATH (the plugin's env may set its own PATH)."""
    plugin = user.get("exec")
    if not isinstance(plugin, dict) or not isinstance(plugin.get("command"), str):
        return  # the loader says what is missing
    command = plugin["command"]
    env = plugin.get("env")
    items = env if isinstance(env, list) else []
    variables = {item.get("name"): item.get("value") for item in items if isinstance(item, dict)}
    search = variables.get("PATH")  # the plugin's env wins, as the loader builds it
    if not command or shutil.which(command, path=search if isinstance(search, str) else None):
        return
    place = "" if "/" in command else " in $PATH"
    raise KubeconfigProblem(
        f"{where} exec command {shown(command)}: not found{place}, or not an executable file"
    )


def checked_kubeconfig(path: str) -> dict[str, Any]:
    """The kubeconfig at path as data for kubernetes-asyncio's load_kube_config_from_dict,
    every file its current context names checked (module docstring); KubeconfigProblem
    (one line) when it or one of them is not usable."""
    loaded = _read_kubeconfig(path)
    if not _looks_like_a_kubeconfig(loaded):
        raise KubeconfigProblem(NOT_A_KUBECONFIG)
    config: dict[str, Any] = copy.deepcopy(loaded)  # aliased nodes are shared: change copies
    for key in ("clusters", "contexts", "users"):
        if isinstance(config.get(key), list):
            config[key] = _first_of_each_name(config[key])
    base = os.path.dirname(os.path.abspath(path))
    context = _entry(config["contexts"], config.get("current-context"), "context")
    if context is None:
        return config  # no current context: the loader says so
    cluster_name, user_name = context.get("cluster"), context.get("user")
    cluster = _entry(config["clusters"], cluster_name, "cluster")
    if cluster is not None:
        _inline_files(cluster, CLUSTER_FILES, base, f"cluster {shown(str(cluster_name))}:")
    user = _entry(config.get("users"), user_name, "user")
    if user is not None:
        where = f"user {shown(str(user_name))}:"
        _check_exec(user, where)
        _inline_files(user, USER_FILES, base, where)
    return config


def kubeconfig_problem(path: str) -> str | None:
    """Why path is not a kubeconfig memguard will hand to kubernetes-asyncio; None if it is."""
    try:
        checked_kubeconfig(path)
    except KubeconfigProblem as error:
        return str(error)
    return None


def service_account_problem(token_file: str, ca_file: str) -> str | None:
    """Why the in-cluster token or CA is not usable (checked as a kubeconfig's files)."""
    for key, path in (("token", token_file), ("ca.crt", ca_file)):
        problem = file_problem(path)
        if problem is not None:
            return f"service account {key} {_shown_path(path)}: {problem}"
    return None


def _shown_path(path: str) -> str:
    from memguard.safeyaml import shown_path

    return shown_path(path)


def find_connection(
    kubeconfig_flag: str | None,
    environ: Mapping[str, str],
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> Connection | None:
    if kubeconfig_flag:
        problem = kubeconfig_problem(kubeconfig_flag)
        if problem is not None:
            raise ConfigError(f"--kubeconfig {_shown_path(kubeconfig_flag)}: {problem}")
        return Connection(False, kubeconfig_flag)
    token_file = os.path.join(service_account_dir, "token")
    if environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(token_file):
        ca_file = os.path.join(service_account_dir, "ca.crt")
        problem = service_account_problem(token_file, ca_file)
        return Connection(True, problem=problem, token_file=token_file, ca_file=ca_file)
    if environ.get("KUBECONFIG"):
        path = environ["KUBECONFIG"].split(os.pathsep)[0]
        return Connection(False, path, kubeconfig_problem(path))
    return None


def node_name_from(flag: str, environ: Mapping[str, str]) -> str:
    return flag or environ.get("NODE_NAME") or socket.gethostname()
