"""The health/metrics endpoint on a running agent, over real loopback HTTP."""

from __future__ import annotations

import trio
import trio.testing

from memguard.cli.observe import metrics_scraper, routes
from memguard.fake import drive, tree
from memguard.policy.model import MIB, Policy
from memguard.reports.http import HealthServer, bind
from memguard.reports.metrics import MetricsSink
from memguard.reports.report import ReportKind
from testing.agents import compose_agent, make_config, reported, running_agent, until
from testing.waits import within


async def http_get(port: int, path: str) -> tuple[int, str]:
    with within(f"an answer to GET {path}"):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def serve(nursery: trio.Nursery, server: HealthServer) -> int:
    """Start server in nursery (bounded); its port."""
    with within("the health server started"):
        await nursery.start(server.run)
    assert server.bound_port is not None
    return server.bound_port


async def test_health_readiness_and_metrics(
    fake_tree: tuple[str, list[tree.FakeContainer]],
) -> None:
    root, containers = fake_tree
    target = next(c for c in containers if c.name == "cache")
    sink = MetricsSink()
    config = make_config(root, policy=Policy.NOOP)
    async with running_agent(config, sinks=[sink]) as (agent, collect):
        scraper = metrics_scraper(agent, None, sink)
        server = HealthServer(await bind("127.0.0.1", 0), routes(agent, scraper))
        async with trio.open_nursery() as nursery:
            port = await serve(nursery, server)
            assert await http_get(port, "/healthz") == (200, "ok\n")
            await until(agent.supervisor.changes, agent.ready, "the agent ready")
            assert await http_get(port, "/readyz") == (200, "ready\n")
            drive.step(root, target.path, drive.Kind.ANON, 248 * MIB)
            await reported(collect, target.path, ReportKind.NOOP)
            handled = len(collect.reports)
            await until(
                agent.bus.changes,
                lambda: agent.bus.handled("metrics") >= handled,
                "the metrics sink handled every report",
            )
            status, metrics = await http_get(port, "/metrics")
            assert status == 200
            assert 'memguard_reports_total{reason="OomGuardNoop"} 1.0' in metrics
            assert "memguard_guarded_cgroups 6.0" in metrics
            assert "memguard_ready 1.0" in metrics
            assert (await http_get(port, "/nope"))[0] == 404
            nursery.cancel_scope.cancel()


async def test_not_ready_before_discovery(empty_fake_root: str) -> None:
    agent, _ = compose_agent(make_config(empty_fake_root), [])
    server = HealthServer(await bind("127.0.0.1", 0), routes(agent))
    async with trio.open_nursery() as nursery:
        status, body = await http_get(await serve(nursery, server), "/readyz")
        nursery.cancel_scope.cancel()
    assert status == 503
    assert "not ready" in body


async def test_the_connection_cap_closes_the_oldest_idle_connection() -> None:
    server = HealthServer(
        await bind("127.0.0.1", 0), {"/healthz": lambda: (200, "text/plain", b"ok\n")}, 4
    )
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, server)
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
        await trio.testing.wait_all_tasks_blocked()
        assert server.open_connections == 4
        # A fifth client still gets its answer: the oldest idle one makes room.
        assert await http_get(port, "/healthz") == (200, "ok\n")
        with within("the server closing the oldest idle connection", 5):
            assert await idle[0].receive_some() == b""  # closed by the server
        for stream in idle:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert server.counters.outcomes["evicted"] == 1
    assert server.counters.outcomes["answered"] == 1


async def test_a_failing_route_fails_only_its_connection() -> None:
    def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("a bug in a route")

    routes = {"/broken": broken, "/healthz": lambda: (200, "text/plain", b"ok\n")}
    server = HealthServer(await bind("127.0.0.1", 0), routes)
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, server)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
            with within("the server closing the connection of the broken route"):
                assert await stream.receive_some() == b""
        assert await http_get(port, "/healthz") == (200, "ok\n")
        nursery.cancel_scope.cancel()
    assert server.counters.outcomes["error"] == 1


async def test_garbage_gets_a_400_and_head_gets_no_body() -> None:
    server = HealthServer(
        await bind("127.0.0.1", 0), {"/healthz": lambda: (200, "text/plain", b"ok\n")}
    )
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, server)
        for request, expected in [
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"HTTP/1.1 400 "),
            (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 "),
            (b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 405 "),
        ]:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                data = b""
                with within(f"the whole answer to {request[:20]!r}"):
                    while chunk := await stream.receive_some():
                        data += chunk
            assert data.startswith(expected), data
            if request.startswith(b"HEAD"):
                assert data.endswith(b"\r\n\r\n")  # the head only
        nursery.cancel_scope.cancel()
    assert server.counters.outcomes["bad_request"] == 1
