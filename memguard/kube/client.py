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

import asyncio
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
import types
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from memguard.kube.connection import (
    Connection,
    KubeconfigProblem,
    checked_kubeconfig,
    read_token,
)

log = logging.getLogger(__name__)

# No answer (refused, cut, timed out): retryable, reported as status 0.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)

USER_AGENT = "memguard/0.1.0"
REQUEST_TIMEOUT_S = 10.0  # connect + send + whole answer, for one plain request
# Bounds on what the server can make memguard hold. One object is at most
# ~1.5 MiB in etcd (3 MiB request bodies at the API server); a node's pod list
# is read in pages (podcache.LIST_PAGE_SIZE), so 8 MiB is never reached by a
# sane server and caps an insane one. They also bound the time json.loads holds
# the GIL on the Kubernetes thread (~25 ms per MiB here), which is time the
# guards' thread waits: a watch event is one object, so 4 MiB per line.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_WATCH_LINE_BYTES = 4 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 4096  # kept of a non-2xx answer (for the log); the rest unread
MAX_REASON_CHARS = 128
LOAD_TIMEOUT_S = 30.0  # loading a kubeconfig: an exec plugin that never ends must not hang start
TOKEN_REFRESH_S = 60.0  # re-read the service-account token this often (kubernetes-asyncio: 1 min)
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


class TokenFile:
    """The in-cluster bearer token, re-read every TOKEN_REFRESH_S (the kubelet rotates
    it), as kubernetes-asyncio's own refresh hook would - but bounded, through
    memguard.kube.connection.read_token: a token file that became a FIFO, a device,
    a huge or an empty file keeps the last good token, and says why (logged the
    1st, 10th, 100th ... time). Called before each request, on the asyncio loop.
    """

    def __init__(self, path: str, token: str, clock: Any = time.monotonic) -> None:
        self._path = path
        self._token = token  # "Bearer ...", as the loader set it
        self._clock = clock
        self._due_s = clock()  # the first request reads it (stripped, as client-go does)
        self.failures = 0

    def __call__(self, configuration: Any) -> None:
        now_s = self._clock()
        if now_s >= self._due_s:
            self._due_s = now_s + TOKEN_REFRESH_S
            self._refresh()
        configuration.api_key["BearerToken"] = self._token

    def _refresh(self) -> None:
        try:
            token = read_token(self._path)
            if not token:
                raise KubeconfigProblem("empty")
        except KubeconfigProblem as error:
            self.failures += 1
            if every_tenfold(self.failures):
                log.warning(
                    "service account token %s: %s; keeping the last one (%d times)",
                    self._path,
                    error,
                    self.failures,
                )
            return
        self._token = f"Bearer {token}"


class ApiError(Exception):
    """A non-2xx answer (status > 0) or no answer at all (status 0).

    The server's words are bounded here, once: the reason to MAX_REASON_CHARS,
    the body to MAX_ERROR_BODY_BYTES (what is logged and what keys log-once sets).
    """

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        reason, body = reason[:MAX_REASON_CHARS], body[:MAX_ERROR_BODY_BYTES]
        super().__init__(f"{status} {reason}: {body[:300]}" if status else reason)
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


class MalformedAnswer(ApiError):
    """A 2xx answer that is not what was asked for: not JSON, not an object, too large."""

    @property
    def retryable(self) -> bool:
        return False


class LineSplitter:
    """Newline-delimited watch events, each at most max_line_bytes (pure).

    Chunks arrive in any size; only the new chunk is scanned for newlines and an
    unfinished line is kept as a list of parts (no quadratic re-copying). A line
    that outgrows the bound raises MalformedAnswer before it is joined.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        lines, start = [], 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._grow(end - start)
            self._parts.append(chunk[start:end])
            lines.append(b"".join(self._parts))
            self._parts, self._size = [], 0
            start = end + 1
        if start < len(chunk):
            self._grow(len(chunk) - start)
            self._parts.append(chunk[start:])
        return lines

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > self._max:
            raise MalformedAnswer(200, f"a watch event larger than {self._max} bytes")


def every_tenfold(count: int) -> bool:
    """Log the 1st, 10th, 100th, ... occurrence: a persistent fault is not a flood."""
    while count >= 10 and count % 10 == 0:
        count //= 10
    return count == 1


def decode_object(data: bytes, status: int) -> dict[str, Any]:
    """A JSON object from the server; MalformedAnswer for anything else."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:  # RecursionError: absurd nesting
        raise MalformedAnswer(status, f"not JSON: {type(error).__name__}: {error}") from None
    if not isinstance(value, dict):
        raise MalformedAnswer(status, f"expected a JSON object, got {type(value).__name__}")
    return value


async def _read_at_most(response: Any, limit_bytes: int) -> tuple[bytes, bool]:
    """(up to limit_bytes of the body, whether there was more). Never holds more."""
    length = response.content_length
    if length is not None and length > limit_bytes:
        return b"", True
    parts, size = [], 0
    async for chunk in response.content.iter_any():
        if size + len(chunk) > limit_bytes:
            parts.append(chunk[: limit_bytes - size])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


async def _error_from(response: Any) -> ApiError:
    body, _ = await _read_at_most(response, MAX_ERROR_BODY_BYTES)
    return ApiError(response.status, str(response.reason), body.decode("utf-8", "replace"))


class KubeClient:
    """Raw JSON calls over kubernetes-asyncio's ApiClient (on the asyncio loop)."""

    def __init__(self, api: Any) -> None:
        self._api = api

    @classmethod
    async def connect(cls, connection: Connection) -> KubeClient:
        """A client for the connection; KubeconfigProblem, TimeoutError or the loader's
        own exception (one line each) when it cannot be configured."""
        api_client_class, configuration_class, config = _load_light()
        configuration = configuration_class()
        if connection.in_cluster:
            config.load_incluster_config(
                client_configuration=configuration,
                try_refresh_token=False,  # its refresh reads the file unbounded: TokenFile
                token_filename=connection.token_file,
                cert_filename=connection.ca_file,
            )
            token = configuration.api_key.get("BearerToken", "")
            configuration.refresh_api_key_hook = TokenFile(connection.token_file, token)
        else:
            # Read and checked here, bounded; the loader gets data (memguard.kube.connection).
            kubeconfig = checked_kubeconfig(connection.kubeconfig or "")
            load = config.load_kube_config_from_dict(
                config_dict=kubeconfig, client_configuration=configuration
            )
            try:
                await asyncio.wait_for(load, LOAD_TIMEOUT_S)
            except TimeoutError:
                raise TimeoutError(
                    f"loading it took more than {LOAD_TIMEOUT_S:g} s "
                    "(an exec plugin that does not finish?)"
                ) from None
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
    ) -> dict[str, Any]:
        """The answer, a JSON object: ApiError for any non-2xx or no answer,
        MalformedAnswer for a 2xx that is not a JSON object of at most 16 MiB."""
        response = await self._call(method, path, query, body, content_type, timeout_s)
        data, more = await self._answer(response, MAX_RESPONSE_BYTES)
        if more:
            raise MalformedAnswer(response.status, f"answer over {MAX_RESPONSE_BYTES} bytes")
        return decode_object(data, response.status)

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        """A write whose answer is not needed: only its status counts (ApiError)."""
        response = await self._call(method, path, None, body, content_type, timeout_s)
        await self._answer(response, MAX_ERROR_BODY_BYTES)

    @staticmethod
    async def _answer(response: Any, limit_bytes: int) -> tuple[bytes, bool]:
        """A 2xx answer's body (at most limit_bytes, and whether there was more)."""
        try:
            if not 200 <= response.status <= 299:
                raise await _error_from(response)
            return await _read_at_most(response, limit_bytes)
        except _TRANSPORT_ERRORS as error:
            raise ApiError(0, f"reading the answer: {type(error).__name__}: {error}") from error
        finally:
            response.release()

    async def stream(
        self, path: str, query: list[tuple[str, str]], read_timeout_s: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """JSON objects, one per line, from a watch response (close it: aclosing).

        read_timeout_s bounds the silence between two reads (the headers
        included): a server that stopped talking ends the stream with ApiError.
        """
        timeout = (REQUEST_TIMEOUT_S, read_timeout_s)
        response = await self._call("GET", path, query, None, None, timeout)
        try:
            if not 200 <= response.status <= 299:
                raise await _error_from(response)
            lines = LineSplitter(MAX_WATCH_LINE_BYTES)
            async for chunk in response.content.iter_any():
                for line in lines.feed(chunk):
                    if line.strip():
                        yield decode_object(line, response.status)
        except _TRANSPORT_ERRORS as error:
            raise ApiError(0, f"watch stream: {type(error).__name__}: {error}") from error
        finally:
            response.release()
