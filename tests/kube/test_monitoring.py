"""The monitoring kit asks only for what memguard exports: every metric name
and label value in the alerts and the dashboard (deploy/monitoring/) checked
against a live scrape of `memguard run` with Kubernetes on (the emulated API
server), so the kube families are there too."""

from __future__ import annotations

import pathlib
import re

from memguard.fake.tree import FakeContainer
from testing import scrape
from testing.agentproc import agent_process
from testing.kube.emulator import KubeEmulator, pod_for
from testing.monitoring import dashboard_queries, documents, rule_queries, selectors
from tests.kube.test_metrics_conventions import NODE, memguard_args, scraped_when

# Labels the scrape itself does not carry: Prometheus adds them to every series of
# the target (podmonitor.yaml's relabelings; tests/pure/test_monitoring.py checks).
TARGET_LABELS = {"job", "node"}
PROMETHEUS_MADE = {"up"}  # one per target, by Prometheus itself


async def test_the_alerts_and_the_dashboard_use_only_what_memguard_exports(
    kube: KubeEmulator,
    fake_tree: tuple[str, list[FakeContainer]],
    tmp_path: pathlib.Path,
) -> None:
    root, containers = fake_tree
    for container in containers:
        kube.create_pod(pod_for(container, {}, NODE))
    with agent_process(memguard_args(root, kube), stderr=tmp_path / "memguard.log") as agent:
        await agent.wait_ready()
        text = await scraped_when(
            agent,
            "the containers' series named after their pods",
            lambda t: (
                "shop" in scrape.label_values(t, "memguard_container_usage_bytes", "namespace")
            ),
        )
        assert agent.stop() == 0
    exported = scrape.sample_names(text)
    # the histogram's own suffixes are there as samples; nothing else is allowed
    assert "memguard_kill_latency_seconds_bucket" in exported
    checked = 0
    for query in rule_queries() + dashboard_queries():
        for selector in selectors(query):
            checked += 1
            if selector.metric in PROMETHEUS_MADE:
                continue
            assert selector.metric in exported, f"{query.where}: {selector.metric} is not exported"
            for label, op, value in selector.matchers:
                if label in TARGET_LABELS:
                    continue
                values = scrape.label_values(text, selector.metric, label)
                assert values, f"{query.where}: {selector.metric} has no label {label}"
                wanted = value.split("|") if op == "=~" and re.fullmatch(r"[\w|]+", value) else []
                if op == "=":
                    wanted = [value]
                for one in wanted:
                    assert one in values, f"{query.where}: {selector.metric}{{{label}={one!r}}}"
    assert checked >= 40


def test_the_target_labels_the_kit_relies_on_are_the_podmonitors() -> None:
    [monitor] = documents("podmonitor.yaml")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    made = {r["targetLabel"] for r in endpoint["relabelings"] if r["action"] == "replace"}
    assert made == TARGET_LABELS
