"""`memguard status` against a running agent on a fake tree: --json and --once
checked against the tree's own state, over the status socket and over
--listen; the socket belongs to one agent at a time; one clear line and exit 1
when no agent answers."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import trio

from memguard.cli.statuspage import CHUNK_ROWS, MIN_INTERVAL_S, StatusPage
from memguard.cli.statusview import label
from memguard.fake import drive, model, tree
from memguard.policy.model import MIB, Policy
from memguard.policy.paths import ContainerRef
from memguard.units import format_size
from testing.agentproc import agent_process, fake_container, wait_until
from testing.agents import make_config, running_agent, until
from testing.waits import WAIT_S, within

MEMGUARD = [sys.executable, "-m", "memguard.cli"]
Tree = tuple[str, list[tree.FakeContainer]]


async def status(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with within(f"memguard status {' '.join(args)} finishing", 60):
        return await trio.run_process(
            [*MEMGUARD, "status", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **(env or {})},
        )


async def page_when(
    where: list[str], condition: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The agent's page (memguard status --json) once condition holds on it."""
    pages: list[dict[str, Any]] = []

    async def holds() -> bool:
        result = await status(*where, "--json")
        assert result.returncode == 0, result.stderr.decode()
        pages.append(json.loads(result.stdout))
        return condition(pages[-1])

    await wait_until(holds, WAIT_S, what)  # each look starts a memguard status process
    return pages[-1]


def by_cgroup(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["cgroup"]: entry for entry in page["containers"]}


def matches_tree(page: dict[str, Any], containers: list[tree.FakeContainer]) -> bool:
    rows = by_cgroup(page)
    for container in containers:
        memory = model.read(container.path)
        row = rows.get(container.path)
        if memory is None or row is None:
            return False
        if (row["usage_bytes"], row["cache_bytes"]) != (memory.usage_bytes, memory.cache_bytes):
            return False
    return True


def agent_args(root: str, sock: pathlib.Path) -> list[str]:
    return [
        "--parent",
        root,
        "--policy",
        "noop",
        "--kubernetes",
        "off",
        "--status-socket",
        str(sock),
    ]


async def test_json_and_once_show_what_the_tree_holds(
    fake_tree: Tree, tmp_path: pathlib.Path
) -> None:
    root, containers = fake_tree
    target = next(c for c in containers if c.name == "web")
    sock = tmp_path / "status.sock"
    where = ["--socket", str(sock)]
    with agent_process(agent_args(root, sock), stderr=tmp_path / "agent.log") as agent:
        await agent.wait_ready()
        # Both charges in one write of the cgroup's files (two writes could be read
        # half-way: usage of the first, cache of the second); 20 MiB of dirty cache
        # (a flush cannot drop it) and 100 MiB of anon.
        charges = [(drive.Kind.ANON, 100 * MIB), (drive.Kind.DIRTY, 20 * MIB)]
        assert drive.step_many(root, target.path, charges) is not None
        page = await page_when(
            where, lambda p: matches_tree(p, containers), "the page showing the tree's usage"
        )
        assert page["version"] == 1
        assert page["agent"]["pid"] == agent.process.pid
        assert (page["agent"]["guarded"], page["agent"]["ready"]) == (6, True)
        assert page["agent"]["backend"] == "fake-v1"
        assert page["containers"][0]["cgroup"] == target.path  # the nearest its threshold
        for container in containers:
            row, memory = by_cgroup(page)[container.path], model.read(container.path)
            assert memory is not None
            assert row["limit_bytes"] == memory.limit_bytes
            assert row["pod_uid"] == container.ref.pod_uid
            assert row["container_id"] == container.ref.container_id
            if memory.limit_bytes is None:
                assert row["threshold_bytes"] is None
            else:
                assert 0 < row["threshold_bytes"] < memory.limit_bytes
        closeness = [
            r["usage_bytes"] / r["threshold_bytes"]
            for r in page["containers"]
            if r["threshold_bytes"]
        ]
        assert closeness == sorted(closeness, reverse=True)

        # Over the threshold (not the limit): policy noop reports, the page says so.
        threshold = by_cgroup(page)[target.path]["threshold_bytes"]
        usage = by_cgroup(page)[target.path]["usage_bytes"]
        drive.step(root, target.path, drive.Kind.ANON, threshold - usage + MIB)
        page = await page_when(
            where,
            lambda p: by_cgroup(p)[target.path]["last_action"] is not None,
            "the page showing the noop report",
        )
        last = by_cgroup(page)[target.path]["last_action"]
        assert (last["kind"], last["dry_run"]) == ("OomGuardNoop", False)
        assert 0 <= last["ago_s"] < 60

        once = await status(*where, "--once")  # stdout is a pipe: plain text
        assert once.returncode == 0, once.stderr.decode()
        text = once.stdout.decode()
        assert "\x1b" not in text  # no terminal escapes in plain text
        lines = text.splitlines()
        assert lines[0].startswith(f"memguard pid {agent.process.pid} on {root} (fake-v1)")
        assert "guarding 6, armed 6, ready" in lines[0]
        assert lines[1].split()[0] == "CONTAINER"
        line = lines[2]  # the nearest the threshold: the one over it
        memory = model.read(target.path)
        assert memory is not None
        assert line.startswith(label(by_cgroup(page)[target.path], root))
        assert f"{format_size(memory.usage_bytes)} / {format_size(threshold)} / 256.0MiB" in line
        assert " noop " in line
        bar = re.search(r"\[([#:|.]+)\]", line)
        assert bar is not None, line
        assert bar.group(1).count(".") == 0  # full: over the threshold
        assert len(lines) == 2 + len(containers)

        # The same page on --listen's /status.
        over_http = await status("--url", f"http://127.0.0.1:{agent.port}", "--json")
        assert over_http.returncode == 0, over_http.stderr.decode()
        assert set(by_cgroup(json.loads(over_http.stdout))) == {c.path for c in containers}
        assert agent.stop() == 0
    assert not sock.exists()  # removed when the agent stops


async def test_the_status_socket_belongs_to_one_agent_at_a_time(
    fake_tree: Tree, tmp_path: pathlib.Path
) -> None:
    root, _ = fake_tree
    sock = tmp_path / "status.sock"
    with agent_process(agent_args(root, sock), stderr=tmp_path / "first.log") as first:
        await first.wait_ready()
        with within("a second agent on the same socket exiting"):
            second = await trio.run_process(
                [*MEMGUARD, "run", *agent_args(root, sock)], capture_stderr=True, check=False
            )
        assert second.returncode == 2
        error = second.stderr.decode().strip()
        assert error.endswith(f"--status-socket {sock}: another memguard serves {sock}"), error
        page = await page_when(["--socket", str(sock)], lambda p: True, "the first agent's page")
        assert page["agent"]["pid"] == first.process.pid  # still the first one's socket
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    assert sock.exists()  # a killed agent leaves its socket behind: the next one replaces it
    with agent_process(agent_args(root, sock), stderr=tmp_path / "third.log") as third:
        await third.wait_ready()
        page = await page_when(
            ["--socket", str(sock)],
            lambda p: p["agent"]["pid"] == third.process.pid,
            "the replacing agent's page",
        )
        assert page["agent"]["guarded"] == 6
        assert third.stop() == 0
    assert not sock.exists()


def assert_one_line(result: subprocess.CompletedProcess[bytes], code: int, *needles: str) -> None:
    error = result.stderr.decode()
    assert result.returncode == code, error
    assert result.stdout == b""
    assert "Traceback" not in error
    assert len(error.strip().splitlines()) == 1, error
    for needle in needles:
        assert needle in error, error


async def test_no_agent_is_one_line_and_exit_1(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing.sock"
    assert_one_line(await status("--socket", str(missing)), 1, f"{missing}: no such socket")
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as unbound:
        unbound.bind(str(stale))  # bound, never listening: what a killed agent leaves
    assert_one_line(await status("--socket", str(stale), "--once"), 1, "connection refused")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # held, not listening: refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        assert_one_line(await status("--url", url), 1, url, "connection refused")
    env = {"MEMGUARD_STATUS_SOCKET": str(missing)}
    assert_one_line(await status("--json", env=env), 1, str(missing))
    assert_one_line(await status("--url", "ftp://127.0.0.1:1"), 2, "http://HOST:PORT")
    assert_one_line(await status("--interval", "soon"), 2, "--interval")


async def test_the_page_names_pods_and_is_built_at_most_every_interval(fake_tree: Tree) -> None:
    root, containers = fake_tree
    web = next(c for c in containers if c.name == "web")

    def names(ref: ContainerRef) -> tuple[str, str, str | None] | None:
        return ("shop", "web-0", "app") if ref.pod_uid == web.ref.pod_uid else None

    async with running_agent(make_config(root, policy=Policy.NOOP)) as (agent, _):
        await until(agent.supervisor.changes, agent.ready, "every container armed")
        page = StatusPage(agent, names)
        answers = []

        async def ask() -> None:
            answers.append(await page.answer())

        async with trio.open_nursery() as nursery:  # asked twice at once: built once
            nursery.start_soon(ask)
            nursery.start_soon(ask)
        first = answers[0]
        assert answers == [first, first]
        assert await page.answer() == first  # within MIN_INTERVAL_S: the same bytes, not rebuilt
        assert page.builds == 1
        rows = by_cgroup(json.loads(first[2]))
        assert first[:2] == (200, "application/json")
        assert (rows[web.path]["namespace"], rows[web.path]["pod"]) == ("shop", "web-0")
        assert label(rows[web.path], root) == "shop/web-0/app"
        other = next(c for c in containers if c.name == "db")
        assert rows[other.path]["namespace"] is None
        assert other.ref.container_id is not None
        assert label(rows[other.path], root).endswith(other.ref.container_id[:12])
        await trio.sleep(MIN_INTERVAL_S)  # the interval itself: the next answer is built anew
        await page.answer()
        assert page.builds == 2


def test_rich_is_loaded_by_the_terminal_view_only() -> None:
    code = (
        "import sys, memguard.cli.run, memguard.cli.compose, memguard.cli.status, "
        "memguard.cli.statusview; print('rich' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.stdout.decode().strip() == "False", result.stderr.decode()


async def test_a_page_of_many_rows_is_whole_and_in_order(empty_fake_root: str) -> None:
    count = 3 * CHUNK_ROWS + 5  # built in chunks
    made = [
        fake_container(empty_fake_root, f"docker/{index:064x}", (64 + index) * MIB)
        for index in range(count)
    ]
    try:
        async with running_agent(make_config(empty_fake_root, policy=Policy.NOOP)) as (agent, _):
            await until(
                agent.supervisor.changes,
                lambda: agent.supervisor.armed == count,
                f"{count} guards armed",
            )
            page = json.loads((await StatusPage(agent).answer())[2])
        rows = page["containers"]
        assert {row["cgroup"] for row in rows} == {c.path for c in made}
        assert (page["agent"]["guarded"], page["omitted"]) == (count, 0)
        # 1 MiB each, under limits that grow: the smallest limit is the nearest.
        assert [row["limit_bytes"] for row in rows] == sorted(r["limit_bytes"] for r in rows)
    finally:
        tree.kill_and_reap(c.pid for c in made)
