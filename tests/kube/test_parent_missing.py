"""A parent missing for --parent-wait becomes one Warning Event on the Node (emulated API
server on 127.0.0.1; the agent composed as `memguard run` composes it, on a fake tree)."""

from __future__ import annotations

import os

from memguard.cli.config import build_run_config
from memguard.cli.options import RUN_OPTIONS, resolve
from memguard.reports.report import ReportKind
from testing.agents import reported, until
from testing.kube.emulator import KubeEmulator
from tests.kube.test_agent_events import NODE, agent_with_kube


async def test_a_missing_parent_is_one_warning_event_on_the_node(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    root = empty_fake_root
    given = {"cgroup_root": root, "parent_wait": "0s", "node_name": NODE}
    config = build_run_config(resolve(RUN_OPTIONS, given, {}))
    parent = os.path.join(root, "kubepods")
    async with agent_with_kube(config, kube.kubeconfig) as (agent, collect, _):
        await reported(collect, parent, ReportKind.PARENT_MISSING)
        for _ in range(3):  # more rescans, the parent still missing: nothing new
            await agent.discovery.rescan()
        assert agent.bus.published == 1
        await until(
            agent.bus.changes,
            lambda: agent.bus.handled("kubernetes") == 1,
            "the Event sink handled the report",
        )
        assert [r.kind for r in collect.reports] == [ReportKind.PARENT_MISSING]
    [event] = kube.events()
    assert event["reason"] == "OomGuardParentMissing"
    assert event["type"] == "Warning"
    assert event["action"] == "Guard"
    assert event["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE}
    assert event["metadata"]["namespace"] == "default"
    assert event["reportingInstance"] == NODE
    assert "series" not in event
    assert event["note"].startswith(
        f"not guarding; parent {parent} missing for 0s (--parent-wait 0s), nothing guarded; "
        f"likely cause: no kubepods or kubepods.slice under {root}"
    )
    assert event["note"].endswith(f"; cgroup {parent}")
    assert kube.rejections == []
