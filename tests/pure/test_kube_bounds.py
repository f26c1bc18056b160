"""Bounds on everything the API server feeds memguard (issue 9), checked without a server.

Pod objects, watch lines, answers, error texts, the Event series map and the
rejection log are all bounded; odd input is "ignored", never a traceback; the
time one Event may take is bounded on the loop and again on trio.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.kube import podcache, sink
from memguard.kube.aggregate import Aggregator, Bump, Create, SeriesKey
from memguard.kube.client import (
    MAX_ERROR_BODY_BYTES,
    MAX_REASON_CHARS,
    MAX_RESPONSE_BYTES,
    ApiError,
    KubeClient,
    LineSplitter,
    MalformedAnswer,
    decode_object,
    every_tenfold,
)
from memguard.kube.events import Regarding
from memguard.kube.pods import (
    MAX_CONTAINERS,
    MAX_KEPT_ANNOTATIONS,
    MAX_UID_CHARS,
    PodError,
    kept_annotation,
    parse_pod,
    read_pod,
)
from memguard.kube.sink import MAX_LOGGED_REJECTIONS, Delivery, EventPoster
from memguard.policy.paths import ContainerRef
from memguard.policy.qos import ANNOTATION_SUFFIX, CLASS_KEY
from memguard.reports import bus as reporting
from memguard.reports.report import Report, ReportKind
from testing.waits import aio_bounded

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
HEX = "ab" * 32


def good_pod() -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web-0", "uid": UID, "resourceVersion": "7",
                     "annotations": {CLASS_KEY: "silver", "team": "x" * 200_000}},
        "spec": {"nodeName": "node-a", "priority": 0},
        "status": {"qosClass": "Burstable",
                   "containerStatuses": [{"name": "app", "containerID": f"containerd://{HEX}"}]},
    }  # fmt: skip


def changed(path: str, value: Any) -> dict[str, Any]:
    """good_pod() with the value at a path ("metadata.name", "status.x.0") replaced;
    CLASS stands for the memory-QoS class annotation's key (it has dots)."""
    pod = copy.deepcopy(good_pod())
    *parents, last = [CLASS_KEY if p == "CLASS" else p for p in path.split(".")]
    node: Any = pod
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return pod


def test_a_good_pod_keeps_only_memguards_annotations() -> None:
    info = read_pod(good_pod())
    assert info.annotations == {CLASS_KEY: "silver"}
    assert info.container(HEX) is not None


@pytest.mark.parametrize(
    ("pod", "field"),
    [
        ([good_pod()], "pod"),
        ("a pod", "pod"),
        (changed("metadata", ["namespace", "shop"]), "metadata"),
        (changed("spec", "node-a"), "spec"),
        (changed("status", 1), "status"),
        (changed("metadata.name", 42), "metadata.name"),
        (changed("metadata.name", ""), "metadata.name"),
        (changed("metadata.namespace", "n" * 64), "metadata.namespace"),
        (changed("metadata.uid", "u" * (MAX_UID_CHARS + 1)), "metadata.uid"),
        (changed("metadata.uid", {"$ne": ""}), "metadata.uid"),
        (changed("metadata.resourceVersion", 7), "metadata.resourceVersion"),
        (changed("metadata.annotations", ["class.memory-qos.nri.io=silver"]), "annotations"),
        (changed("metadata.annotations.CLASS", ["silver"]), CLASS_KEY),
        (changed("metadata.annotations.CLASS", "s" * 5000), CLASS_KEY),
        (changed("spec.priority", "high"), "spec.priority"),
        (changed("spec.priority", True), "spec.priority"),
        (changed("spec.priority", 2**40), "spec.priority"),
        (changed("spec.nodeName", ["node-a"]), "spec.nodeName"),
        (changed("status.qosClass", "Q" * 2000), "status.qosClass"),
        (changed("status.containerStatuses", {"name": "app"}), "status.containerStatuses"),
        (changed("status.containerStatuses.0", "app"), "containerStatuses[0]"),
        (changed("status.containerStatuses.0.name", 1), "containerStatuses[0].name"),
        (changed("status.containerStatuses.0.containerID", "c" * 300), "containerID"),
    ],
)
def test_odd_pods_are_ignored_with_the_field_named(pod: object, field: str) -> None:
    with pytest.raises(PodError, match=field.replace("[", r"\[").replace("]", r"\]")):
        read_pod(pod)
    assert parse_pod(pod) is None


def test_too_many_containers_or_own_annotations_are_ignored() -> None:
    statuses = [{"name": f"c{i}", "containerID": f"containerd://{i:064x}"} for i in range(200)]
    pod = changed("status.containerStatuses", statuses)
    pod["status"]["initContainerStatuses"] = statuses[: MAX_CONTAINERS - 200 + 1]
    with pytest.raises(PodError, match="container statuses"):
        read_pod(pod)
    many = {f"memory.high.memory-qos.nri.io/c{i}": "max" for i in range(MAX_KEPT_ANNOTATIONS + 1)}
    with pytest.raises(PodError, match="of memguard's"):
        read_pod(changed("metadata.annotations", many))
    others = {f"example.com/k{i}": "v" for i in range(MAX_KEPT_ANNOTATIONS * 10)}
    assert read_pod(changed("metadata.annotations", others)).annotations == {}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
PATHS = [
    "metadata", "spec", "status", "metadata.name", "metadata.uid", "metadata.annotations",
    "metadata.annotations.CLASS", "spec.priority", "status.containerStatuses",
    "status.containerStatuses.0", "status.containerStatuses.0.containerID",
]  # fmt: skip


@given(st.sampled_from(PATHS), JSON)
def test_any_json_anywhere_is_a_pod_or_none_never_a_traceback(path: str, value: Any) -> None:
    info = parse_pod(changed(path, value))
    assert info is None or info.uid


@given(JSON)
def test_any_json_as_the_whole_object_is_a_pod_or_none(value: Any) -> None:
    assert parse_pod(value) is None or isinstance(value, dict)


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        (CLASS_KEY, True),
        (f"{CLASS_KEY}/app", True),
        (f"memory.swap.max{ANNOTATION_SUFFIX}/app", True),
        ("memory-qos.nri.io", True),
        ("kubectl.kubernetes.io/last-applied-configuration", False),
        ("evil-memory-qos.nri.io", False),
        ("memory-qos.nri.io.example.com/x", False),
    ],
)
def test_kept_annotations_are_the_memory_qos_plugins(key: str, kept: bool) -> None:
    assert kept_annotation(key) is kept


# --- watch lines, answers, error texts ------------------------------------------------------


def test_lines_are_split_across_chunks_and_blank_ones_kept_for_the_caller() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b'{"a": 1}\n{"b"') == [b'{"a": 1}']
    assert splitter.feed(b": 2}") == []
    assert splitter.feed(b"\n\n") == [b'{"b": 2}', b""]


def test_a_line_over_the_bound_fails_before_its_newline_arrives() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"0123456789\n") == [b"0123456789"]  # exactly the bound
    splitter.feed(b"01234")
    with pytest.raises(MalformedAnswer, match="larger than 10 bytes"):
        splitter.feed(b"567890")  # 11 bytes and no newline yet


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=8), st.data())
def test_any_chunking_gives_the_same_lines(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    splitter, found = LineSplitter(64), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        found += splitter.feed(stream[start:end])
    assert found == lines


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'{"items": [', "not JSON"),
        (b"[1, 2]", "got list"),
        (b'"Status"', "got str"),
        (b"null", "got NoneType"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),  # nesting: RecursionError, caught
        (b"\xff\xfe{", "not JSON"),
    ],
)
def test_answers_that_are_not_json_objects_are_malformed(data: bytes, why: str) -> None:
    with pytest.raises(MalformedAnswer, match=why):
        decode_object(data, 200)


def test_server_words_are_bounded_in_api_errors() -> None:
    error = ApiError(422, "R" * 10_000, "B" * 10_000_000)
    assert len(error.reason) == MAX_REASON_CHARS
    assert len(error.body) == MAX_ERROR_BODY_BYTES
    assert len(str(error)) < MAX_REASON_CHARS + 320
    assert not MalformedAnswer(200, "x").retryable


def test_log_lines_come_on_every_tenfold() -> None:
    assert [n for n in range(1, 2001) if every_tenfold(n)] == [1, 10, 100, 1000]
    assert not every_tenfold(0)


# --- the Event series map ---------------------------------------------------------------------


def key(n: int) -> SeriesKey:
    return SeriesKey(Regarding("Pod", f"p{n}", "shop"), "OomGuardKillProcess", "Kill", "Warning")


def test_the_series_map_is_capped_and_forgets_the_least_recently_seen() -> None:
    aggregator = Aggregator(max_series=3)
    for n in range(3):
        aggregator.created(key(n), f"e{n}", "shop", float(n))
    aggregator.bumped(key(0), 2, 3.0)  # p0 is now the most recently seen
    aggregator.created(key(3), "e3", "shop", 4.0)  # full: p1 goes
    assert len(aggregator) == 3
    assert aggregator.evicted == 1
    assert aggregator.plan(key(1), 5.0) == Create()
    assert aggregator.plan(key(0), 5.0) == Bump("e0", "shop", 3)
    for n in range(4, 1000):
        aggregator.created(key(n), f"e{n}", "shop", float(n))
    assert len(aggregator) == 3


# --- time bounds and the rejection log of the Event poster ------------------------------------


def test_event_time_bounds_nest() -> None:
    attempts = len(sink.RETRY_BACKOFF_S) + 1
    one_request_s = attempts * sink.EVENT_TIMEOUT_S + sum(sink.RETRY_BACKOFF_S)
    assert one_request_s <= sink.DELIVERY_DEADLINE_S  # one request's retries all fit
    assert sink.DELIVER_TIMEOUT_S > sink.SYNC_WAIT_S + sink.DELIVERY_DEADLINE_S
    # memguard's own bound ends a delivery before the bus abandons it
    assert sink.DELIVER_TIMEOUT_S < reporting.DELIVERY_TIMEOUT_S
    # and the pod cache notices a silent server after its own watch timeout
    assert podcache.WATCH_SILENCE_S > podcache.WATCH_TIMEOUT_S
    # a page of pods fits one answer unless they average 80 KiB (typical: 5-20 KiB)
    assert podcache.LIST_PAGE_SIZE * 80 * 1024 <= MAX_RESPONSE_BYTES


class ScriptedClient(KubeClient):
    """The client boundary, faked: send() runs `answer` (on the test's asyncio loop)."""

    def __init__(self, answer: Callable[[int], Any]) -> None:
        super().__init__(api=None)
        self.sent = 0
        self._script = answer

    async def send(self, method: str, path: str, **_: Any) -> None:
        self.sent += 1
        await self._script(self.sent)


def delivery(n: int = 0) -> Delivery:
    ref = ContainerRef(UID, HEX, "Burstable", "containerd", "cgroupfs")
    report = Report(ReportKind.KILL_PROCESS, f"/kubepods/pod{UID}/{HEX}", ref, 130, 128, 125,
                    "process", "killed process")  # fmt: skip
    return Delivery(report, Regarding("Pod", f"web-{n}", "shop", UID), 1795000000.0, float(n))


def post_all(poster: EventPoster, count: int) -> list[str]:
    async def main() -> list[str]:
        return [await poster.post(delivery(n)) for n in range(count)]

    return asyncio.run(aio_bounded(main(), f"the poster finishing {count} Events"))


def test_rejections_are_logged_once_per_kind_and_the_kinds_are_capped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def refuse(n: int) -> None:
        raise ApiError(422, f"Invalid{n}", "the server invents a new reason every time")

    poster = EventPoster(ScriptedClient(refuse), "node-a")
    assert set(post_all(poster, 3 * MAX_LOGGED_REJECTIONS)) == {"rejected"}
    refusals = [r for r in caplog.records if "refused an event" in r.getMessage()]
    assert len(refusals) == MAX_LOGGED_REJECTIONS
    assert poster.counts == {"rejected": 3 * MAX_LOGGED_REJECTIONS}


def test_a_surprise_exception_is_a_failed_event_not_the_sinks_end() -> None:
    async def explode(n: int) -> None:
        raise {1: KeyError("metadata"), 2: RuntimeError("aiohttp internals")}.get(n, ValueError())

    poster = EventPoster(ScriptedClient(explode), "node-a")
    assert post_all(poster, 3) == ["failed", "failed", "failed"]


def test_one_event_cannot_outlast_its_deadline() -> None:
    async def hang(n: int) -> None:
        await asyncio.Event().wait()  # a server that never answers (and no client timeout)

    poster = EventPoster(ScriptedClient(hang), "node-a", deadline_s=0.05)
    assert post_all(poster, 2) == ["timed_out", "timed_out"]
    assert poster.counts == {"timed_out": 2}


def test_retries_are_counted_and_end() -> None:
    async def unavailable(n: int) -> None:
        raise ApiError(503, "ServiceUnavailable")

    client = ScriptedClient(unavailable)
    poster = EventPoster(client, "node-a", retry_backoff_s=(0.0, 0.0))
    assert post_all(poster, 1) == ["failed"]
    assert client.sent == 3
    assert poster.counts == {"failed": 1}  # one delivery, one outcome
    assert poster.retries == 2  # attempts are counted apart from outcomes
