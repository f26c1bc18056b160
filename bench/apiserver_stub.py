"""A minimal, fast Kubernetes API server stand-in for benchmarks (its own process).

    python -m bench.apiserver_stub PODS_JSON

Serves the pods in PODS_JSON to list (a watch stays open and silent), accepts
Event POSTs and PATCHes (201/200), and records when each Event arrived
(time.time()). GET /stats returns {"events": [[name, arrival_s, note]...]}.
It binds 127.0.0.1 on a free port and prints the port on stdout. Unlike the
test emulator it validates nothing: it exists to measure memguard, not itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web


def make_app(pods: list[dict[str, Any]]) -> web.Application:
    events: list[list[Any]] = []

    async def list_pods(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "1", "True"):
            response = web.StreamResponse()
            await response.prepare(request)
            await asyncio.sleep(float(request.query.get("timeoutSeconds", "300")))
            return response
        return web.json_response(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "1"},
                "items": pods,
            }
        )

    async def create_event(request: web.Request) -> web.Response:
        body = await request.json()
        events.append([body["metadata"]["name"], time.time(), body.get("note", "")])
        return web.json_response(body, status=201)

    async def patch_event(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(body)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"events": events})

    app = web.Application()
    app.router.add_get("/api/v1/pods", list_pods)
    app.router.add_post("/apis/events.k8s.io/v1/namespaces/{ns}/events", create_event)
    app.router.add_patch("/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}", patch_event)
    app.router.add_get("/stats", stats)
    return app


async def serve(pods: list[dict[str, Any]]) -> None:
    runner = web.AppRunner(make_app(pods), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    with open(sys.argv[1]) as pods_file:
        asyncio.run(serve(json.load(pods_file)))
