"""Where the API server is, decided without importing any client code (light).

An explicit --kubeconfig wins, then the in-cluster service account, then
$KUBECONFIG; with none of them Kubernetes features are off.

A kubeconfig is checked here, before kubernetes-asyncio reads it on its own
thread (where a FIFO would block the open for ever and a YAML bomb would run
unbounded): a regular file of at most MAX_KUBECONFIG_BYTES, YAML within
memguard.configfile's limits, a mapping whose clusters and contexts (and
users, when present) are lists. An explicit --kubeconfig that fails is a
ConfigError (exit 2, one line); a $KUBECONFIG that fails carries its problem
in the Connection, so memguard.kube.features logs it once and goes on without
Kubernetes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from memguard.errors import ConfigError

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
MAX_KUBECONFIG_BYTES = 4 << 20
NOT_A_KUBECONFIG = "not a kubeconfig (expected a YAML mapping with clusters, contexts and users)"


@dataclass(frozen=True)
class Connection:
    """How to reach the API server: in-cluster or a kubeconfig file.

    problem: why the kubeconfig cannot be used (one line), None when it can.
    """

    in_cluster: bool
    kubeconfig: str | None = None
    problem: str | None = None

    def describe(self) -> str:
        return "in-cluster service account" if self.in_cluster else f"kubeconfig {self.kubeconfig}"


def kubeconfig_problem(path: str) -> str | None:
    """Why path is not a kubeconfig memguard will hand to kubernetes-asyncio; None if it is."""
    import yaml  # only when a kubeconfig is given: kubernetes-asyncio loads it anyway

    from memguard.safeyaml import compose_bounded, read_regular_file, yaml_error_text

    try:
        data = read_regular_file(path, MAX_KUBECONFIG_BYTES)
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return str(error.strerror or error)
    except ValueError as error:
        return str(error)
    try:
        root = compose_bounded(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "not a kubeconfig (not UTF-8 text)"
    except yaml.YAMLError as error:
        return f"cannot load Kubernetes config: {yaml_error_text(error)}"
    return None if _looks_like_a_kubeconfig(root) else NOT_A_KUBECONFIG


def _looks_like_a_kubeconfig(root: object) -> bool:
    """A mapping with lists of clusters and contexts; users a list too, or absent/null."""
    import yaml

    if not isinstance(root, yaml.MappingNode):
        return False
    fields = {key.value: value for key, value in root.value if isinstance(key, yaml.ScalarNode)}
    users = fields.get("users")
    users_null = isinstance(users, yaml.ScalarNode) and users.tag == "tag:yaml.org,2002:null"
    return (
        isinstance(fields.get("clusters"), yaml.SequenceNode)
        and isinstance(fields.get("contexts"), yaml.SequenceNode)
        and (users is None or users_null or isinstance(users, yaml.SequenceNode))
    )


def find_connection(kubeconfig_flag: str | None, environ: Mapping[str, str]) -> Connection | None:
    if kubeconfig_flag:
        problem = kubeconfig_problem(kubeconfig_flag)
        if problem is not None:
            raise ConfigError(f"--kubeconfig {kubeconfig_flag}: {problem}")
        return Connection(False, kubeconfig_flag)
    if environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(SERVICE_ACCOUNT_TOKEN):
        return Connection(True)
    if environ.get("KUBECONFIG"):
        path = environ["KUBECONFIG"].split(os.pathsep)[0]
        return Connection(False, path, kubeconfig_problem(path))
    return None


def node_name_from(flag: str, environ: Mapping[str, str]) -> str:
    return flag or environ.get("NODE_NAME") or socket.gethostname()
