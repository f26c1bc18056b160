"""Metrics: what the sink counts, what a scrape reads and how often, per-container
series that come and go with their containers (fake trees, real guards)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import trio
from prometheus_client.core import Metric

from memguard.cli.observe import metrics_scraper
from memguard.fake import drive, tree
from memguard.policy.model import MIB, MemorySnapshot, Policy
from memguard.policy.paths import ContainerRef
from memguard.reports.metrics import (
    KILL_OUTCOMES,
    KILL_POLICIES,
    ContainerReader,
    ContainerTarget,
    MetricsSink,
    Scraper,
)
from memguard.reports.report import Report, ReportKind, Victim
from testing import scrape
from testing.agents import make_config, reported, running_agent, until

REF = ContainerRef("uid", "c" * 64, "Burstable", "containerd", "cgroupfs")


def _report(kind: ReportKind, **changes: object) -> Report:
    fields: dict[str, object] = {
        "kind": kind,
        "cgroup": "/t/c",
        "ref": REF,
        "usage_bytes": 250 * MIB,
        "limit_bytes": 256 * MIB,
        "threshold_bytes": 240 * MIB,
        "policy": "process",
        "action": "a",
    }
    fields.update(changes)
    return Report(**fields)  # type: ignore[arg-type]


VICTIM = Victim(pid=10, comm="hog", oom_score=900, rss_bytes=MIB, killed=True)
GONE = Victim(pid=11, comm="hog", oom_score=900, rss_bytes=MIB, killed=False)


@pytest.mark.parametrize(
    ("report", "outcome"),
    [
        (_report(ReportKind.KILL_PROCESS, victims=(VICTIM,)), ("process", "killed")),
        (
            _report(ReportKind.KILL_CONTAINER, policy="container", victims=(VICTIM,), survivors=2),
            ("container", "partial"),
        ),
        (_report(ReportKind.KILL_PROCESS, victims=(GONE,)), ("process", "already_gone")),
        (_report(ReportKind.KILL_PROCESS, victims=(GONE,), dry_run=True), ("process", "dry_run")),
        (_report(ReportKind.NO_VICTIM, policy="container"), ("container", "no_victim")),
        (_report(ReportKind.NOOP, policy="noop"), None),
        (_report(ReportKind.FLUSH), None),
    ],
)
async def test_kills_are_counted_by_policy_and_outcome(
    report: Report, outcome: tuple[str, str] | None
) -> None:
    sink = MetricsSink()
    await sink.deliver(report)
    assert set(sink.kills) == {(p, o) for p in KILL_POLICIES for o in KILL_OUTCOMES}
    counted = {key for key, number in sink.kills.items() if number}
    assert counted == ({outcome} if outcome else set())
    assert sink.reports[report.kind.value] == 1


async def test_the_sink_exports_every_label_value_at_zero_and_no_created_series() -> None:
    sink = MetricsSink()
    text = scrape_families(sink)
    assert scrape.label_values(text, "memguard_reports_total", "reason") == {
        kind.value for kind in ReportKind
    }
    assert scrape.value(text, "memguard_kills_total", policy="container", outcome="killed") == 0
    assert scrape.value(text, "memguard_reclaimed_bytes_total") == 0
    assert scrape.value(text, "memguard_kill_latency_seconds_count") == 0
    assert scrape.problems(text) == []


async def test_flushes_add_up_reclaimed_bytes_and_kills_fill_the_latency_histogram() -> None:
    sink = MetricsSink()
    flush = _report(ReportKind.FLUSH, cache_before_bytes=100 * MIB, cache_after_bytes=30 * MIB)
    await sink.deliver(flush)
    await sink.deliver(flush)
    # a skip reads cache before and after too, but dropped nothing itself
    await sink.deliver(_report(ReportKind.SKIP, cache_before_bytes=9 * MIB, cache_after_bytes=0))
    for latency_s in (0.0003, 0.004, 0.004, 2.0):
        await sink.deliver(_report(ReportKind.KILL_PROCESS, victims=(VICTIM,), latency_s=latency_s))
    text = scrape_families(sink)
    assert scrape.value(text, "memguard_reclaimed_bytes_total") == 140 * MIB
    bucket = "memguard_kill_latency_seconds_bucket"
    assert scrape.value(text, bucket, le="0.0005") == 1
    assert scrape.value(text, bucket, le="0.002") == 1
    assert scrape.value(text, bucket, le="0.005") == 3
    assert scrape.value(text, bucket, le="0.5") == 3
    assert scrape.value(text, bucket, le="+Inf") == 4
    assert scrape.value(text, "memguard_kill_latency_seconds_count") == 4
    assert scrape.value(text, "memguard_kill_latency_seconds_sum") == pytest.approx(2.0083)
    assert scrape.value(text, "memguard_kills_total", policy="process", outcome="killed") == 4


def scrape_families(sink: MetricsSink) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    class Families:
        def collect(self) -> Iterator[Metric]:
            return sink.families()

    registry = CollectorRegistry()
    registry.register(Families())
    return generate_latest(registry).decode()


# -- reading the containers -------------------------------------------------------------


class CountingReads:
    """The backend's snapshot read, counted per cgroup (memguard's own boundary)."""

    def __init__(self, gone: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.gone = gone

    def __call__(self, cgroup_dir: str) -> MemorySnapshot | None:
        self.calls.append(cgroup_dir)
        if cgroup_dir in self.gone:
            return None
        return MemorySnapshot(usage_bytes=len(self.calls) * MIB, limit_bytes=None, cache_bytes=0)


def _targets(count: int) -> list[ContainerTarget]:
    return [ContainerTarget(f"/t/{i}", ("", "", "", str(i)), None) for i in range(count)]


def test_a_second_scrape_within_the_interval_reads_nothing() -> None:
    reads = CountingReads()
    reader = ContainerReader(reads, min_interval_s=3600.0)
    targets = _targets(5)
    first = reader.readings(targets)
    second = reader.readings(targets)
    assert len(reads.calls) == 5  # once each, for both scrapes
    assert first == second
    # a container gone since is dropped at once, without reading anything
    assert [t.cgroup_dir for t, _ in reader.readings(targets[1:])] == [
        t.cgroup_dir for t in targets[1:]
    ]
    assert len(reads.calls) == 5


def test_past_its_budget_a_pass_stops_and_the_next_starts_with_the_unread() -> None:
    reads = CountingReads()
    reader = ContainerReader(reads, min_interval_s=0.0, budget_s=0.0)  # one read per pass
    targets = _targets(3)
    for expected in (1, 2, 3):
        assert len(reader.readings(targets)) == expected  # read ones keep their reading
    assert reads.calls == ["/t/0", "/t/1", "/t/2"]  # each read once, oldest first
    reader.readings(targets)
    assert reads.calls[-1] == "/t/0"  # then the oldest reading again


def test_a_container_whose_files_are_gone_has_no_series() -> None:
    reader = ContainerReader(CountingReads(gone=frozenset({"/t/1"})), min_interval_s=0.0)
    assert [t.cgroup_dir for t, _ in reader.readings(_targets(3))] == ["/t/0", "/t/2"]


async def test_series_follow_the_guarded_containers(
    fake_tree: tuple[str, list[tree.FakeContainer]],
) -> None:
    root, containers = fake_tree
    named = {c.name: c for c in containers}
    sink = MetricsSink()
    config = make_config(root, policy=Policy.NOOP)
    async with running_agent(config, sinks=[sink]) as (agent, collect):
        scraper = metrics_scraper(agent, None, sink)
        scraper.reader = ContainerReader(agent.backend.snapshot, min_interval_s=0.0)
        await until(agent.supervisor.changes, agent.ready, "the agent ready")
        text = (await scraper.scrape()).decode()
        cgroups = scrape.label_values(text, "memguard_container_usage_bytes", "cgroup")
        assert cgroups == {c.path.removeprefix(root + "/") for c in containers}
        web = named["web"].path.removeprefix(root + "/")
        assert scrape.value(text, "memguard_container_limit_bytes", cgroup=web) == 256 * MIB
        threshold = scrape.value(text, "memguard_container_threshold_bytes", cgroup=web)
        assert threshold == agent.supervisor.guards[named["web"].path].armed_threshold_bytes
        unlimited = named["batch"].path.removeprefix(root + "/")
        assert scrape.value(text, "memguard_container_limit_bytes", cgroup=unlimited) is None
        assert scrape.value(text, "memguard_container_threshold_bytes", cgroup=unlimited) is None
        assert scrape.value(text, "memguard_container_usage_bytes", pod="", cgroup=web) == 8 * MIB

        # usage and page cache are read at scrape time, not when the guard last woke
        drive.step(root, named["web"].path, drive.Kind.CACHE, 20 * MIB)
        text = (await scraper.scrape()).decode()
        assert scrape.value(text, "memguard_container_usage_bytes", cgroup=web) == 28 * MIB
        assert scrape.value(text, "memguard_container_page_cache_bytes", cgroup=web) == 20 * MIB

        # a container that goes takes its series with it
        gone = named["db"]
        shutil.rmtree(gone.path)
        await until(
            agent.supervisor.changes,
            lambda: gone.path not in agent.supervisor.guards,
            "the guard of the removed container ended",
        )
        text = (await scraper.scrape()).decode()
        cgroups = scrape.label_values(text, "memguard_container_usage_bytes", "cgroup")
        assert gone.path.removeprefix(root + "/") not in cgroups
        assert len(cgroups) == len(containers) - 1

        # a report moves the sink's counters in the same scrape
        drive.step(root, named["cache"].path, drive.Kind.ANON, 244 * MIB)
        await reported(collect, named["cache"].path, ReportKind.NOOP)
        await until(
            agent.bus.changes, lambda: agent.bus.handled("metrics") >= 1, "the metrics sink"
        )
        text = (await scraper.scrape()).decode()
        assert scrape.value(text, "memguard_reports_total", reason="OomGuardNoop") == 1
        assert scrape.problems(text) == []


async def test_scrapes_run_one_at_a_time() -> None:
    """Two scrapes at once: the second waits for the first's thread (the limiter),
    and with the interval not passed, reuses its readings."""
    reads = CountingReads()
    scraper = Scraper(list, lambda: _targets(4), ContainerReader(reads, 3600.0))
    results: list[bytes] = []
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(lambda: _append(results, scraper))
    assert len(results) == 2
    assert results[0] == results[1]
    assert len(reads.calls) == 4


async def test_a_scrape_storm_renders_the_containers_once_per_pass() -> None:
    """Scrapes within one reading pass get the containers' text made by the first
    (a storm of scrapers costs one rendering a second); a threshold that moves is in
    the next scrape without waiting for a new pass."""
    reads = CountingReads()
    targets = _targets(3)
    scraper = Scraper(list, lambda: list(targets), ContainerReader(reads, 3600.0))
    first = await scraper.scrape()
    cached = scraper._containers
    for _ in range(5):
        assert await scraper.scrape() == first
    assert scraper._containers is cached  # not made again
    targets[0] = ContainerTarget("/t/0", ("", "", "", "0"), 7 * MIB)  # armed meanwhile
    text = (await scraper.scrape()).decode()
    assert scrape.value(text, "memguard_container_threshold_bytes", cgroup="0") == 7 * MIB
    assert scrape.problems(text) == []
    assert reads.calls == ["/t/0", "/t/1", "/t/2"]  # all from one pass


async def _append(results: list[bytes], scraper: Scraper) -> None:
    results.append(await scraper.scrape())


def test_rendering_in_chunks_gives_prometheus_clients_text() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from memguard.reports.metrics import container_families, render_yielding

    snapshot = MemorySnapshot(usage_bytes=5 * MIB, limit_bytes=8 * MIB, cache_bytes=MIB)
    readings = [
        (ContainerTarget(f"/t/{i}", ("ns", f"p{i}", "c", str(i)), MIB), snapshot) for i in range(10)
    ]
    sink = MetricsSink()
    families = [*sink.families(), *container_families(readings)]

    class Families:
        def collect(self) -> Iterator[Metric]:
            return iter(families)

    registry = CollectorRegistry()
    registry.register(Families())
    whole = generate_latest(registry)
    assert render_yielding(families, chunk=3) == whole
    assert render_yielding(families, chunk=1) == whole
    assert whole.count(b"# TYPE memguard_container_usage_bytes gauge") == 1
