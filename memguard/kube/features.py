"""Turning the Kubernetes features on: bridge, client, pod cache, Event sink.

Imported only when a connection was found (memguard.kube.connection), so an
agent without Kubernetes never loads aiohttp or kubernetes-asyncio. An
explicit --kubeconfig that cannot be loaded is a configuration error (exit 2);
a failing in-cluster setup is logged and the agent guards without Events
rather than crash-looping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from memguard.errors import ConfigError
from memguard.kube.bridge import AsyncioBridge
from memguard.kube.client import KubeClient
from memguard.kube.connection import Connection
from memguard.kube.podcache import PodCache
from memguard.kube.sink import EventPoster, KubeEventSink

log = logging.getLogger(__name__)


@dataclass
class KubeFeatures:
    bridge: AsyncioBridge
    client: KubeClient
    cache: PodCache
    poster: EventPoster
    sink: KubeEventSink
    node_name: str

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pod cache current until cancelled (then close everything).

        A failure leaves the client and its loop open: the agent's supervisor
        runs this again, on the same connection."""
        task_status.started()
        try:
            await self.bridge.run(self.cache.run())
        except Exception:
            raise
        except BaseException:  # cancelled: the agent stops
            with trio.CancelScope(shield=True):
                await self.bridge.run(self.client.close())
            self.bridge.stop()
            raise


async def open_kube(connection: Connection, node_name: str, explicit: bool) -> KubeFeatures | None:
    if connection.problem is not None:  # a $KUBECONFIG that is no kubeconfig: never read it
        message = f"cannot load Kubernetes config ({connection.describe()}): {connection.problem}"
        if explicit:
            raise ConfigError(message)
        log.error("%s; Kubernetes features are off", message)
        return None
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
