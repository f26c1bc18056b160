"""Fault matrix, network: resets, garbage, slowloris and 1,000 open connections
against `--listen` never stop the agent, never stop /healthz from answering,
and a guarded container is still protected afterwards (fake tier: the fault
needs no kernel; the agent runs as its own process, as in production)."""

from __future__ import annotations

import pathlib
import socket
import struct
from collections.abc import Callable

import trio

from memguard.fake import drive
from memguard.policy.model import MIB
from testing.agentproc import (
    AgentProcess,
    FakeContainer,
    agent_process,
    metric,
    wait_exit,
    wait_until,
)
from testing.waits import within

UID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
HELD_CONNECTIONS = 1100  # more than the endpoint keeps open at once (1,024)
HEALTHZ_BOUND_S = 1.0
GARBAGE = (
    b"\x00\xff" * 200,
    b"GET / HTTP/9.9\r\n\r\n",
    b"A" * 20_000,
    b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\r\n\r\n\r\n",
)


async def reset(port: int, payload: bytes) -> None:
    """Connect, send payload, then close with RST (SO_LINGER 0)."""
    sock = trio.socket.socket()
    with within("a connection to the endpoint"):
        await sock.connect(("127.0.0.1", port))
    if payload:
        await sock.send(payload)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def send_garbage(port: int, payload: bytes) -> bytes:
    """What the endpoint answers to payload (it may answer 400 or just close)."""
    with within(f"the endpoint answering or closing after {payload[:20]!r}"):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            try:
                await stream.send_all(payload)
                await stream.send_eof()
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
            except trio.BrokenResourceError:
                return b""
    return data


async def healthz_answers(agent: AgentProcess) -> None:
    status, body = await agent.get("/healthz", HEALTHZ_BOUND_S)
    assert (status, body) == (200, "ok\n")


async def test_network_faults_leave_the_agent_guarding(
    empty_fake_root: str,
    tmp_path: pathlib.Path,
    make_fake_container: Callable[[str, str, int], FakeContainer],
) -> None:
    container = make_fake_container(empty_fake_root, f"kubepods/pod{UID}/{'a' * 64}", 256 * MIB)
    args = ["--parent", empty_fake_root, "--kubernetes", "off", "--log-format", "json"]
    with agent_process(args, stderr=tmp_path / "agent.log") as agent:
        await agent.wait_ready()
        for payload in (b"", b"GET /metrics HTTP/1.1\r\n", b"GET /metrics HTTP/1.1\r\n\r\n"):
            for _ in range(10):
                await reset(agent.port, payload)
            await healthz_answers(agent)
        answers = [await send_garbage(agent.port, payload) for payload in GARBAGE]
        assert any(answer.startswith(b"HTTP/1.1 400") for answer in answers), answers
        await healthz_answers(agent)
        held: list[trio.SocketStream] = []
        try:
            with within(f"{HELD_CONNECTIONS} connections opened"):
                for index in range(HELD_CONNECTIONS):
                    stream = await trio.open_tcp_stream("127.0.0.1", agent.port)
                    if index % 10 == 0:  # slowloris: a request that never ends
                        await stream.send_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                    held.append(stream)
            for _ in range(20):
                await healthz_answers(agent)
        finally:
            for stream in held:
                await trio.aclose_forcefully(stream)
        await healthz_answers(agent)
        assert agent.alive
        drive.step(empty_fake_root, container.path, drive.Kind.ANON, 250 * MIB)
        await wait_exit(container.pid, 30, "memguard did not kill the guarded container")
        text = await agent.metrics()
        assert agent.stop() == 0
    assert metric(text, "memguard_http_connections_total", 'outcome="reset"') >= 10
    assert metric(text, "memguard_http_connections_total", 'outcome="bad_request"') >= 1
    assert metric(text, "memguard_http_connections_total", 'outcome="evicted"') >= 1
    assert metric(text, "memguard_component_failures_total", 'component="http"') == 0
    lines = (tmp_path / "agent.log").read_text().splitlines()
    kinds = [line for line in lines if container.path in line and '"kind"' in line]
    assert any('"OomGuardKillContainer"' in line for line in kinds), lines[-20:]
    assert not any('"CgroupOOM"' in line for line in kinds)


async def test_a_slow_client_times_out_alone(empty_fake_root: str, tmp_path: pathlib.Path) -> None:
    args = ["--parent", empty_fake_root, "--kubernetes", "off"]
    with agent_process(args, stderr=tmp_path / "agent.log") as agent:
        await agent.wait_ready()
        stream = await trio.open_tcp_stream("127.0.0.1", agent.port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\n")
            await healthz_answers(agent)

            async def timed_out() -> bool:
                text = await agent.metrics()
                return metric(text, "memguard_http_connections_total", 'outcome="timeout"') >= 1

            await wait_until(timed_out, 30, "the endpoint never timed out a stalled request")
            with within("the server closing the timed-out connection"):
                assert await stream.receive_some() == b""  # the server closed it
        assert agent.stop() == 0
