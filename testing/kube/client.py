"""The client side of the tier-2 Kubernetes tests: kubernetes-asyncio, on its own loop.

Create and close ApiClients on the AsyncioThread that runs them: an aiohttp
ClientSession is bound to the loop it was created on, and one left unclosed is
a ResourceWarning at garbage collection, which `filterwarnings = error` turns
into a failure of whichever test happens to be running.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kubernetes_asyncio import client, config


@asynccontextmanager
async def api_client(kubeconfig: pathlib.Path) -> AsyncIterator[client.ApiClient]:
    """An ApiClient for the kubeconfig's current context; closed on exit."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    async with client.ApiClient(configuration) as api:
        yield api
