"""kubernetes-asyncio, loaded light, for raw JSON calls to the API server.

memguard uses kubernetes-asyncio for what it is good at - kubeconfig and
in-cluster configuration, auth (bearer tokens, refreshed service-account
tokens, exec plugins), TLS and the aiohttp transport (ApiClient.call_api) - and
reads and writes plain JSON. It never needs the ~1,000 generated model classes
that `import kubernetes_asyncio` loads (measured here: +49 MiB RSS, 0.75 s),
so the three packages whose __init__ pulls them in are entered as empty
namespace modules and only the needed submodules are imported (+18 MiB,
0.36 s). If kubernetes_asyncio is already imported (tests), it is reused.
Everything in this module runs on the bridge's asyncio loop.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
import types
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from memguard.kube.connection import Connection

log = logging.getLogger(__name__)

# No answer (refused, cut, timed out): retryable, reported as status 0.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)

USER_AGENT = "memguard/0.1.0"
REQUEST_TIMEOUT_S = 10.0
MAX_WATCH_LINE_BYTES = 16 * 1024 * 1024
_LIGHT_PACKAGES = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.models",
)


def _load_light() -> tuple[Any, Any, Any]:
    """(ApiClient class, Configuration class, config package), models never loaded."""
    if "kubernetes_asyncio.client" not in sys.modules:
        spec = importlib.util.find_spec("kubernetes_asyncio")
        if spec is None or spec.origin is None:
            raise ImportError("kubernetes_asyncio is not installed")
        root = os.path.dirname(spec.origin)
        for name in _LIGHT_PACKAGES:
            package = types.ModuleType(name)
            package.__path__ = [os.path.join(root, *name.split(".")[1:])]
            sys.modules[name] = package
        client_package = sys.modules["kubernetes_asyncio.client"]
        configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
        api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
        client_package.Configuration = configuration.Configuration  # type: ignore[attr-defined]
        client_package.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
    client = sys.modules["kubernetes_asyncio.client"]
    config = importlib.import_module("kubernetes_asyncio.config")
    return client.ApiClient, client.Configuration, config


class ApiError(Exception):
    """A non-2xx answer (status > 0) or no answer at all (status 0)."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status} {reason}: {body[:300]}" if status else reason)
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


class KubeClient:
    """Raw JSON calls over kubernetes-asyncio's ApiClient (on the asyncio loop)."""

    def __init__(self, api: Any) -> None:
        self._api = api

    @classmethod
    async def connect(cls, connection: Connection) -> KubeClient:
        api_client_class, configuration_class, config = _load_light()
        configuration = configuration_class()
        if connection.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            await config.load_kube_config(
                config_file=connection.kubeconfig,
                client_configuration=configuration,
                persist_config=False,
            )
        api = api_client_class(configuration)
        api.user_agent = USER_AGENT
        return cls(api)

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        body: Any,
        content_type: str | None,
        timeout_spec: Any,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout_spec,
            )
        except _TRANSPORT_ERRORS as error:
            raise ApiError(0, f"{type(error).__name__}: {error}") from error

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> Any:
        """The decoded JSON answer; ApiError for any non-2xx or no answer."""
        response = await self._call(method, path, query, body, content_type, timeout_s)
        try:
            text = await response.text()
        except _TRANSPORT_ERRORS as error:
            raise ApiError(0, f"reading the answer: {error}") from error
        finally:
            response.release()
        if not 200 <= response.status <= 299:
            raise ApiError(response.status, str(response.reason), text)
        return json.loads(text) if text else None

    async def stream(
        self, path: str, query: list[tuple[str, str]], read_timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        """JSON objects, one per line, from a watch response."""
        timeout = (REQUEST_TIMEOUT_S, read_timeout_s)
        response = await self._call("GET", path, query, None, None, timeout)
        try:
            if not 200 <= response.status <= 299:
                raise ApiError(response.status, str(response.reason), await response.text())
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_WATCH_LINE_BYTES:
                    raise ApiError(0, "watch event larger than 16 MiB")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except _TRANSPORT_ERRORS as error:
            raise ApiError(0, f"watch stream: {type(error).__name__}: {error}") from error
        finally:
            response.release()
