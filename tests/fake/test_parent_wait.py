"""--cgroup-root and --parent auto on a fake tree; readiness while the parent is missing.

A fake tree given as --cgroup-root is the memory hierarchy itself: --parent auto is its
kubepods (v1) or kubepods.slice (v2), and the other driver's tree is waited for too.
The in-process agent runs on trio's autojump clock, so --parent-wait (60 s) passes
without waiting for it; `memguard run` itself serves /readyz over loopback HTTP.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Callable

import pytest
import trio
import trio.testing

from memguard.cli.config import build_run_config
from memguard.cli.options import RUN_OPTIONS, resolve
from memguard.fake import model
from memguard.fake.tree import kill_and_reap
from memguard.policy.model import MIB
from memguard.reports.report import ReportKind
from testing.agentproc import agent_process, fake_container, metric, wait_until
from testing.agents import reported, running_agent, until, wait_guarded
from tests.fake.test_cli_inputs import assert_refused, memguard

CONTAINER_ID = "a" * 64


def systemd_container(pod_uid: str) -> str:
    slice_uid = pod_uid.replace("-", "_")
    return f"kubepods.slice/kubepods-pod{slice_uid}.slice/cri-containerd-{CONTAINER_ID}.scope"


@pytest.mark.parametrize("version", [1, 2])
def test_parent_auto_on_a_fake_tree_is_its_kubelet_tree(
    tmp_path: pathlib.Path, version: int
) -> None:
    root = str(tmp_path / "tree")
    model.make_root(root, cgroup_version=version)
    config = build_run_config(resolve(RUN_OPTIONS, {"cgroup_root": root}, {}))
    assert config.layout is not None
    assert (config.layout.fake, config.layout.version) == (True, str(version))
    usual, other = ("kubepods", "kubepods.slice")[:: 1 if version == 1 else -1]
    assert config.agent.parent == os.path.join(root, usual)
    assert config.agent.parent_alternatives == (os.path.join(root, other),)
    assert config.agent.parent_wait_s == pytest.approx(60.0)
    os.mkdir(os.path.join(root, other))  # only the other driver's tree: that one is taken
    config = build_run_config(resolve(RUN_OPTIONS, {"cgroup_root": root}, {}))
    assert config.agent.parent == os.path.join(root, other)


async def test_a_missing_parent_is_not_ready_reported_once_then_guarded_when_it_appears(
    empty_fake_root: str, autojump_clock: trio.testing.MockClock
) -> None:
    root = empty_fake_root
    config = build_run_config(resolve(RUN_OPTIONS, {"cgroup_root": root, "policy": "noop"}, {}))
    parent = os.path.join(root, "kubepods")
    assert config.agent.parent == parent
    pids: list[int] = []
    start_s = trio.current_time()
    try:
        async with running_agent(config) as (agent, collect):
            [waiting] = agent.current_status().not_ready_reasons()
            assert waiting == f"parent {parent} does not exist yet (waiting 0s, --parent-wait 1m)"
            assert not agent.ready()

            report = await reported(collect, parent, ReportKind.PARENT_MISSING, 120.0)
            assert trio.current_time() - start_s == pytest.approx(60.0)
            why = (
                f"parent {parent} missing for 1m (--parent-wait 1m), nothing guarded; likely "
                f"cause: no kubepods or kubepods.slice under {root} (cgroup v1, a fake tree, "
                f"memory hierarchy {root}): the kubelet makes one when it starts"
            )
            [late] = agent.current_status().not_ready_reasons()
            assert late.startswith(why), late
            assert report.reason.startswith(why), report.reason
            assert report.message().startswith(f"not guarding; {why}")
            assert report.ref.pod_uid is None  # posted against the Node

            autojump_clock.jump(3600.0)  # an hour later: still reported only once
            await trio.testing.wait_all_tasks_blocked()
            kinds = [r.kind for r in collect.reports]
            assert kinds == [ReportKind.PARENT_MISSING]
            assert "missing for 61m" in agent.current_status().not_ready_reasons()[0]

            # The kubelet (systemd driver) makes its tree, with a pod in it.
            container = fake_container(root, systemd_container(str(uuid.uuid4())), 256 * MIB)
            pids.append(container.pid)
            await wait_guarded(agent, 1)
            await until(agent.supervisor.changes, agent.ready, "the agent ready")
            assert agent.discovery.root == os.path.join(root, "kubepods.slice")
            assert agent.current_status().parent_missing_s is None
    finally:
        kill_and_reap(pids)


async def test_a_node_without_pods_is_ready(
    empty_fake_root: str, autojump_clock: trio.testing.MockClock
) -> None:
    os.mkdir(os.path.join(empty_fake_root, "kubepods"))
    config = build_run_config(resolve(RUN_OPTIONS, {"cgroup_root": empty_fake_root}, {}))
    async with running_agent(config) as (agent, collect):
        assert agent.current_status().not_ready_reasons() == []
        autojump_clock.jump(3600.0)
        await trio.testing.wait_all_tasks_blocked()
        assert agent.ready()
        assert collect.reports == []


async def test_memguard_run_on_a_fake_cgroup_root(
    empty_fake_root: str, tmp_path: pathlib.Path
) -> None:
    """The real command: --cgroup-root with --parent auto and --parent-wait 0s; the
    parent is reported missing at once, and /readyz turns 200 when it appears."""
    root = empty_fake_root
    args = ["--cgroup-root", root, "--parent-wait", "0s", "--kubernetes", "off"]
    log = tmp_path / "agent.log"
    with agent_process(args, stderr=log) as agent:

        async def says_why() -> bool:
            assert agent.alive, log.read_text()
            try:
                status, body = await agent.get("/readyz", 2.0)
            except OSError:
                return False  # not listening yet
            return status == 503 and "(--parent-wait 0s), nothing guarded" in body

        await wait_until(says_why, 60, "/readyz never said why the parent is missing")
        _, body = await agent.get("/readyz")
        assert f"no kubepods or kubepods.slice under {root}" in body
        os.mkdir(os.path.join(root, "kubepods"))
        await agent.wait_ready()
        assert metric(await agent.metrics(), "memguard_ready") == 1.0
        assert agent.stop() == 0
    lines = log.read_text().splitlines()
    warnings = [line for line in lines if "OomGuardParentMissing" in line]
    assert len(warnings) == 1, lines
    assert "WARNING" in warnings[0]
    assert any(f"parent {root}/kubepods appeared" in line for line in lines), lines


def a_file(path: pathlib.Path) -> str:
    path.write_text("")
    return str(path)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda tmp: str(tmp / "absent"), "/absent does not exist"),
        (lambda tmp: str(tmp), "is not a cgroup filesystem: neither cgroup2 nor a directory"),
        (lambda tmp: a_file(tmp / "file"), "is not a directory"),
    ],
    ids=["absent", "plain-directory", "file"],
)
@pytest.mark.parametrize("source", ["flag", "env", "config", "with-parent"])
def test_a_cgroup_root_that_is_none_is_one_line_and_exit_2(
    tmp_path: pathlib.Path, make: Callable[[pathlib.Path], str], needle: str, source: str
) -> None:
    root = make(tmp_path)
    args, env = ["run", "--kubernetes", "off"], {}
    if source == "flag":
        args += ["--cgroup-root", root]
    elif source == "env":
        env["MEMGUARD_CGROUP_ROOT"] = root
    elif source == "config":
        (tmp_path / "config.yaml").write_text(f"cgroup-root: {root}\n")
        args += ["--config", str(tmp_path / "config.yaml")]
    else:  # an explicit --cgroup-root must be usable even beside an explicit --parent
        args += ["--cgroup-root", root, "--parent", str(tmp_path)]
    assert_refused(memguard(*args, env=env), f"--cgroup-root {root}", needle)


def test_cgroup_version_must_match_the_cgroup_root(tmp_path: pathlib.Path) -> None:
    root = str(tmp_path / "tree")
    model.make_root(root, cgroup_version=1)
    result = memguard("run", "--cgroup-root", root, "--cgroup-version", "2")
    assert_refused(
        result,
        f"--cgroup-version 2, but under --cgroup-root {root} the memory controller is "
        "cgroup v1, a fake tree",
    )
