"""Where the API server is, decided without importing any client code (light).

An explicit --kubeconfig wins, then the in-cluster service account, then
$KUBECONFIG; with none of them Kubernetes features are off.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from memguard.errors import ConfigError

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class Connection:
    """How to reach the API server: in-cluster or a kubeconfig file."""

    in_cluster: bool
    kubeconfig: str | None = None

    def describe(self) -> str:
        return "in-cluster service account" if self.in_cluster else f"kubeconfig {self.kubeconfig}"


def find_connection(kubeconfig_flag: str | None, environ: Mapping[str, str]) -> Connection | None:
    if kubeconfig_flag:
        if not os.path.isfile(kubeconfig_flag):
            raise ConfigError(f"--kubeconfig {kubeconfig_flag}: no such file")
        return Connection(False, kubeconfig_flag)
    if environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(SERVICE_ACCOUNT_TOKEN):
        return Connection(True)
    if environ.get("KUBECONFIG"):
        return Connection(False, environ["KUBECONFIG"].split(os.pathsep)[0])
    return None


def node_name_from(flag: str, environ: Mapping[str, str]) -> str:
    return flag or environ.get("NODE_NAME") or socket.gethostname()
