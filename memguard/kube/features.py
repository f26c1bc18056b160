"""Turning the Kubernetes features on (or off, with one clear log line).

Connection: an explicit --kubeconfig, else the in-cluster service account,
else $KUBECONFIG; with none of them the agent still guards and says once that
Kubernetes features are off. An explicit --kubeconfig that cannot be loaded is
a configuration error (exit 2); a failing in-cluster setup is logged and the
agent guards without Events rather than crash-looping.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from memguard.errors import ConfigError
from memguard.kube.bridge import AsyncioBridge
from memguard.kube.client import Connection, KubeClient, find_connection
from memguard.kube.podcache import PodCache
from memguard.kube.sink import EventPoster, KubeEventSink

log = logging.getLogger(__name__)


def node_name_from(flag: str, environ: Mapping[str, str]) -> str:
    return flag or environ.get("NODE_NAME") or socket.gethostname()


@dataclass
class KubeFeatures:
    bridge: AsyncioBridge
    client: KubeClient
    cache: PodCache
    poster: EventPoster
    sink: KubeEventSink
    node_name: str

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pod cache current until cancelled (then close everything)."""
        task_status.started()
        try:
            await self.bridge.run(self.cache.run())
        finally:
            with trio.CancelScope(shield=True):
                await self.bridge.run(self.client.close())
            self.bridge.stop()


async def open_kube(connection: Connection, node_name: str, explicit: bool) -> KubeFeatures | None:
    bridge = AsyncioBridge("memguard-kubernetes")
    bridge.start()
    try:
        client = await bridge.run(KubeClient.connect(connection))
    except Exception as error:
        bridge.stop()
        detail = " ".join(str(error).split())  # YAML errors span lines: keep one
        message = f"cannot load Kubernetes config ({connection.describe()}): {detail}"
        if explicit:
            raise ConfigError(message) from None
        log.error("%s; Kubernetes features are off", message)
        return None
    cache = PodCache(client, node_name)
    poster = EventPoster(client, node_name)
    sink = KubeEventSink(bridge, poster, cache, node_name)
    log.info("Kubernetes features on: %s, node %s", connection.describe(), node_name)
    return KubeFeatures(bridge, client, cache, poster, sink, node_name)


async def kube_from_options(
    mode: str, kubeconfig: str, node_flag: str, environ: Mapping[str, str] = os.environ
) -> KubeFeatures | None:
    if mode == "off":
        log.info("Kubernetes features are off (--kubernetes off)")
        return None
    connection = find_connection(kubeconfig or None, environ)
    if connection is None:
        log.info("Kubernetes features are off: not in a cluster, no --kubeconfig, no $KUBECONFIG")
        return None
    return await open_kube(connection, node_name_from(node_flag, environ), bool(kubeconfig))
