"""/metrics of `memguard run` as an operator runs it (a real process, a fake tree,
the emulated API server): every name and label by the conventions, every counter
there from the start, per-container series labelled from the pod cache."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal

from memguard.fake import drive
from memguard.fake.tree import FakeContainer
from memguard.kube.sink import OUTCOMES
from memguard.policy.model import MIB
from memguard.reports.metrics import KILL_OUTCOMES, KILL_POLICIES
from memguard.reports.report import ReportKind
from testing import scrape
from testing.agentproc import AgentProcess, agent_process, reaped, wait_until
from testing.kube.emulator import KubeEmulator, pod_for

NODE = "node-a"
UNKNOWN = "tools"  # no Pod object for this one: its series carry empty names


def memguard_args(root: str, kube: KubeEmulator) -> list[str]:
    return ["--parent", root, "--kubeconfig", str(kube.kubeconfig), "--node-name", NODE]


async def scraped_when(agent: AgentProcess, condition: str, check: object) -> str:
    """A scrape for which check(text) holds (polled: the agent is another process)."""
    seen: list[str] = []

    async def holds() -> bool:
        seen[:] = [await agent.metrics()]
        return bool(check(seen[0]))  # type: ignore[operator]

    await wait_until(holds, 30, condition)
    return seen[0]


def _cgroup(root: str, container: FakeContainer) -> str:
    return os.path.relpath(container.path, root)


async def test_a_live_scrape_follows_the_conventions(
    kube: KubeEmulator,
    fake_tree: tuple[str, list[FakeContainer]],
    tmp_path: pathlib.Path,
) -> None:
    root, containers = fake_tree
    named = {c.name: c for c in containers}
    for container in containers:
        if container.name != UNKNOWN:
            kube.create_pod(pod_for(container, {}, NODE))
    args = [*memguard_args(root, kube), "--policy", "process"]
    with agent_process(args, stderr=tmp_path / "memguard.log") as agent:
        await agent.wait_ready()
        web = _cgroup(root, named["web"])
        await scraped_when(
            agent,
            "the web container's series named after its pod",
            lambda t: scrape.value(t, "memguard_container_usage_bytes", pod="web", cgroup=web),
        )
        # a kill moves the counters
        target = named["cache"]
        drive.step(root, target.path, drive.Kind.ANON, 244 * MIB)
        status = await reaped(target.pids[1], "the worker killed")
        assert os.WTERMSIG(status) == signal.SIGKILL
        await scraped_when(
            agent,
            "the kill counted",
            lambda t: scrape.value(t, "memguard_kills_total", policy="process", outcome="killed"),
        )
        # a container that goes takes its series with it
        gone = _cgroup(root, named["db"])
        shutil.rmtree(named["db"].path)
        text = await scraped_when(
            agent,
            "the db container's series gone",
            lambda t: (
                gone not in scrape.label_values(t, "memguard_container_usage_bytes", "cgroup")
            ),
        )
        assert agent.stop() == 0

    assert scrape.problems(text) == []
    names = scrape.sample_names(text)
    # memguard's own, and the process figures an operator compares with its limits
    assert {"memguard_build_info", "process_resident_memory_bytes"} <= names
    assert {"process_cpu_seconds_total", "process_open_fds", "process_max_fds"} <= names
    assert not any(name.endswith("_created") for name in names)
    [build] = [labels for s, labels, _ in scrape.parse(text)["memguard_build_info"].samples]
    assert build["cgroup_version"] == "1"
    assert set(build) == {"version", "python", "cgroup_version"}

    # every counter at 0 for every label value it can take (not only after the first)
    reasons = scrape.label_values(text, "memguard_reports_total", "reason")
    assert reasons == {kind.value for kind in ReportKind}
    assert scrape.value(text, "memguard_reports_total", reason="CgroupOOM") == 0
    for policy in KILL_POLICIES:
        for outcome in KILL_OUTCOMES:
            number = scrape.value(text, "memguard_kills_total", policy=policy, outcome=outcome)
            assert number == (1 if (policy, outcome) == ("process", "killed") else 0)
    assert scrape.label_values(text, "memguard_kube_events_total", "outcome") == set(OUTCOMES)
    assert scrape.value(text, "memguard_kube_event_retries_total") == 0
    assert scrape.value(text, "memguard_pod_cache_errors_total") == 0
    components = scrape.label_values(text, "memguard_component_failures_total", "component")
    assert {"discovery", "guard", "http", "inotify", "pod-cache", "sink:kubernetes"} <= components
    sinks = scrape.label_values(text, "memguard_report_drops_total", "sink")
    assert sinks == {"log", "kubernetes", "metrics"}
    causes = scrape.label_values(text, "memguard_discovery_errors_total", "cause")
    assert {"ENOSPC", "EACCES", "too-deep"} <= causes
    assert scrape.value(text, "memguard_kill_latency_seconds_bucket", le="+Inf") is not None

    # one series set per guarded container, named from the pod cache when known
    usage = "memguard_container_usage_bytes"
    assert scrape.label_values(text, usage, "cgroup") == {
        _cgroup(root, c) for c in containers if c.name != "db"
    }
    assert scrape.value(text, usage, namespace="shop", pod="web", container="app") == 8 * MIB
    unknown = _cgroup(root, named[UNKNOWN])
    assert scrape.value(text, usage, namespace="", pod="", container="", cgroup=unknown) is not None
    limit = scrape.value(text, "memguard_container_limit_bytes", cgroup=web)
    assert limit == 256 * MIB
    threshold = scrape.value(text, "memguard_container_threshold_bytes", cgroup=web)
    assert threshold is not None
    assert 0 < threshold < limit
    assert scrape.value(text, "memguard_container_limit_bytes", cgroup=unknown) is None  # unlimited
