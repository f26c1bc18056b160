"""`memguard run` as a separate process, started as an operator starts it.

The fault tests drive the agent from outside: its health endpoint, its log
stream, its cgroups. Waits poll a condition (a process outside this one has
no event to wait on), always bounded, and fail with a message saying what did
not happen.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from memguard.fake import model
from memguard.fake.tree import spawn_sleeper
from memguard.kernel.pidfd import PidFd
from testing.waits import WAIT_S, within

MEMGUARD = [sys.executable, "-m", "memguard.cli"]
POLL_S = 0.02
STOP_TIMEOUT_S = 20.0


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, message: str
) -> None:
    """Poll condition until it holds; fail with message after timeout_s."""
    with within(message, timeout_s):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(POLL_S)


async def http_get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """(status, body) of GET path on 127.0.0.1:port (one request, Connection: close)."""
    with within(f"an answer to GET {path} on 127.0.0.1:{port}", timeout_s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def listening_port(pid: int) -> int | None:
    """The TCP port process pid listens on (found in /proc), or None (not yet).

    The agent listens on port 0 (any free port) and this finds which it got: a
    port picked free beforehand could be taken by another test meanwhile."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        with open(f"/proc/{pid}/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
    except OSError:
        return None
    for row in rows:  # sl local_address rem_address st ... inode
        if len(row) > 9 and row[3] == "0A" and row[9] in inodes:  # 0A: LISTEN
            return int(row[1].rsplit(":", 1)[1], 16)
    return None


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    _port: int | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = listening_port(self.process.pid)
            if self._port is None:
                raise ConnectionRefusedError("memguard is not listening yet")
        return self._port

    async def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
        return await http_get(self.port, path, timeout_s)

    async def metrics(self) -> str:
        status, body = await self.get("/metrics")
        assert status == 200, body
        return body

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        async def ready() -> bool:
            assert self.alive, f"memguard exited with {self.process.returncode}"
            try:
                status, _ = await self.get("/readyz", 2.0)
            except OSError:
                return False  # not listening yet
            return status == 200

        await wait_until(ready, timeout_s, "memguard never became ready")

    def stop(self) -> int:
        """SIGTERM, and the exit code (SIGKILL if it does not stop in time)."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("memguard did not stop within 20 s of SIGTERM") from None


@contextmanager
def agent_process(
    args: Sequence[str],
    *,
    stderr: int | pathlib.Path,
    prefix: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[AgentProcess]:
    """`memguard run ARGS --listen 127.0.0.1:PORT`, stopped (by its pid) on exit.

    prefix wraps the command (e.g. unshare); stderr is an fd the caller owns or a
    file to write the log to."""
    command = [*prefix, *MEMGUARD, "run", *args, "--listen", "127.0.0.1:0"]
    log_fd = (
        os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if isinstance(stderr, pathlib.Path)
        else stderr
    )
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, preexec_fn=preexec_fn
        )
    finally:
        if isinstance(stderr, pathlib.Path):
            os.close(log_fd)
    agent = AgentProcess(process)
    try:
        yield agent
    finally:
        if agent.alive:
            process.kill()
        process.wait()


@dataclass
class FakeContainer:
    path: str
    pid: int


def fake_container(root: str, relative: str, limit_bytes: int) -> FakeContainer:
    """A fake container cgroup with one real sleeping process (the caller reaps it)."""
    path = os.path.join(root, relative)
    pid = spawn_sleeper()
    memory = model.FakeMemory(limit_bytes=limit_bytes, pids=[pid], anon_by_pid={pid: 1 << 20})
    memory.version = model.tree_cgroup_version(root)
    model.create(path, memory)
    return FakeContainer(path, pid)


async def wait_exit(pid: int, timeout_s: float, message: str) -> None:
    """Park until pid exits (a pidfd: no polling); fail with message after timeout_s."""
    pidfd = PidFd.open(pid)
    if pidfd is None:
        return
    with pidfd, within(message, timeout_s):
        await pidfd.wait_exit()


async def reaped(pid: int, message: str, timeout_s: float = WAIT_S) -> int:
    """Park until our child pid exits (wait_exit), reap it, return its wait status."""
    await wait_exit(pid, timeout_s, message)
    found, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - a zombie by now
    assert found == pid, f"pid {pid} exited but is not ours to reap"
    return status
