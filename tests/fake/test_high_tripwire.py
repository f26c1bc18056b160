"""The cgroup v2 memory.high tripwire (--high-tripwire auto|on|off) on fake v2 trees.

The real V2Backend's notifier reads and writes memory.high in the fake tree's
container directories (regular files, the kernel's format); memguard's memory
QoS applier runs beside it with pods from a fixed PodSource. What the kernel
does with memory.high (throttling, "high" events) is the VM tier's part
(tests/kernel on cgroup v2).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from fractions import Fraction

import pytest

from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.v2 import Tripwire, V2Backend, V2Settings
from memguard.fake.tree import FakeContainer
from memguard.kernel import cgroup_v2
from memguard.kube.pods import PodInfo, parse_pod
from memguard.policy.margin import threshold_bytes
from memguard.policy.model import MIB
from memguard.policy.qos import CLASS_KEY, QosClass, QosConfig, high_for
from testing.agents import agent_running, compose_agent, make_config, until, wait_armed

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SILVER = QosConfig({"silver": QosClass("silver", Fraction(1, 5))}, frozenset({"memory.high"}))
THRESHOLD = 100 * MIB
KUBELET_HIGH = str(96 * MIB)  # what the kubelet's MemoryQoS would have written


def settings(tripwire: Tripwire) -> V2Settings:
    return V2Settings(signals=frozenset({"events"}), high_tripwire=tripwire)  # no PSI, no poll


def high(container: FakeContainer) -> str:
    with open(os.path.join(container.path, "memory.high")) as file:
        return file.read().strip()


def page_floor(size_bytes: int | None) -> str:
    """The tripwire for a threshold, as the kernel keeps memory.high: whole pages."""
    assert size_bytes is not None
    return str(size_bytes - size_bytes % PAGE_BYTES)


def set_high(container: FakeContainer, value: str) -> None:
    with open(os.path.join(container.path, "memory.high"), "w") as file:
        file.write(value + "\n")


@pytest.fixture
def containers(fake_v2_tree: tuple[str, list[FakeContainer]]) -> dict[str, FakeContainer]:
    """The fake v2 tree's containers by name, each with memory.high "max" (as the
    kernel creates it)."""
    _, found = fake_v2_tree
    for container in found:
        set_high(container, "max")
    return {container.name: container for container in found}


@pytest.mark.parametrize("tripwire", [Tripwire.AUTO, Tripwire.ON])
async def test_the_tripwire_follows_the_threshold_and_gives_max_back(
    containers: dict[str, FakeContainer], tripwire: Tripwire
) -> None:
    web = containers["web"]
    with InotifyHub() as hub, V2Backend(settings(tripwire)).notifier(web.path, hub) as notifier:
        assert await notifier.arm(THRESHOLD)
        assert high(web) == str(THRESHOLD)
        assert await notifier.arm(THRESHOLD - MIB)  # a new limit: the tripwire follows
        assert high(web) == str(THRESHOLD - MIB)
        # memory.high is kept in pages: what is written is what the kernel reads back
        assert await notifier.arm(THRESHOLD + 123)
        assert high(web) == str(THRESHOLD)
        assert await notifier.arm(THRESHOLD - 2 * MIB)  # still recognised as memguard's
        assert high(web) == str(THRESHOLD - 2 * MIB)
    assert high(web) == "max"


async def test_off_never_writes_memory_high(containers: dict[str, FakeContainer]) -> None:
    web = containers["web"]
    with InotifyHub() as hub, V2Backend(settings(Tripwire.OFF)).notifier(web.path, hub) as notifier:
        assert await notifier.arm(THRESHOLD)
        assert high(web) == "max"


@pytest.mark.parametrize("tripwire", [Tripwire.AUTO, Tripwire.ON])
async def test_a_memory_high_someone_else_set_is_theirs(
    containers: dict[str, FakeContainer], tripwire: Tripwire
) -> None:
    web, db = containers["web"], containers["db"]
    set_high(web, KUBELET_HIGH)  # set before memguard came (the kubelet's MemoryQoS)
    backend = V2Backend(settings(tripwire))
    with InotifyHub() as hub:
        with backend.notifier(web.path, hub) as notifier:
            assert await notifier.arm(THRESHOLD)
            assert high(web) == KUBELET_HIGH
        assert high(web) == KUBELET_HIGH
        with backend.notifier(db.path, hub) as notifier:
            assert await notifier.arm(THRESHOLD)
            set_high(db, KUBELET_HIGH)  # changed under memguard's tripwire
            assert await notifier.arm(THRESHOLD - MIB)
            assert high(db) == KUBELET_HIGH
        assert high(db) == KUBELET_HIGH  # not "max": not memguard's any more


async def test_auto_stays_off_where_memory_qos_claims_memory_high(
    containers: dict[str, FakeContainer],
) -> None:
    web = containers["web"]
    backend = V2Backend(settings(Tripwire.AUTO))
    with InotifyHub() as hub, backend.notifier(web.path, hub) as notifier:
        backend.claim_memory_high(web.path)
        assert await notifier.arm(THRESHOLD)
        assert high(web) == "max"
        backend.release_memory_high(web.path)
        assert await notifier.arm(THRESHOLD)  # the guard's next arm
        assert high(web) == str(THRESHOLD)


async def test_a_claim_takes_the_auto_tripwire_away_at_once(
    containers: dict[str, FakeContainer],
) -> None:
    web = containers["web"]
    backend = V2Backend(settings(Tripwire.AUTO))
    with InotifyHub() as hub, backend.notifier(web.path, hub) as notifier:
        assert await notifier.arm(THRESHOLD)
        assert high(web) == str(THRESHOLD)
        backend.claim_memory_high(web.path)
        assert high(web) == "max"  # before memory QoS reads what it found
        assert await notifier.arm(THRESHOLD)
        assert high(web) == "max"


async def test_on_ignores_claims(containers: dict[str, FakeContainer]) -> None:
    web = containers["web"]
    backend = V2Backend(settings(Tripwire.ON))
    with InotifyHub() as hub, backend.notifier(web.path, hub) as notifier:
        backend.claim_memory_high(web.path)
        assert await notifier.arm(THRESHOLD)
        assert high(web) == str(THRESHOLD)
        backend.claim_memory_high(web.path)
        assert high(web) == str(THRESHOLD)


# -- memory QoS and the tripwire together -------------------------------------------------


class Pods:
    """A PodSource whose pods change only when the test says so."""

    def __init__(self, pods: Mapping[str, PodInfo]) -> None:
        self.pods = dict(pods)
        self._listeners: list[Callable[[str | None], None]] = []

    def container_view(
        self, pod_uid: str | None, container_id: str | None
    ) -> tuple[str, Mapping[str, str]] | None:
        pod = self.pods.get(pod_uid or "")
        container = pod.container(container_id) if pod is not None else None
        return None if pod is None or container is None else (container.name, pod.annotations)

    def subscribe(self, listener: Callable[[str | None], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[str | None], None]) -> None:
        self._listeners.remove(listener)

    def change(self, pod: PodInfo) -> None:
        self.pods[pod.uid] = pod
        for listener in list(self._listeners):
            listener(pod.uid)


def pod_of(container: FakeContainer, annotations: dict[str, str]) -> PodInfo:
    assert container.ref.pod_uid is not None
    assert container.ref.container_id is not None
    metadata = {
        "namespace": "shop",
        "name": container.name,
        "uid": container.ref.pod_uid,
        "annotations": annotations,
    }
    status = {"name": container.name, "containerID": f"containerd://{container.ref.container_id}"}
    pod = parse_pod({"metadata": metadata, "status": {"containerStatuses": [status]}})
    assert pod is not None
    return pod


class RecordingV2Backend(V2Backend):
    """The v2 backend on a fake tree's files (statfs cannot say it is mounted)."""

    def mounted(self, path: str) -> bool:
        return True


@pytest.fixture(autouse=True)
def high_writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every value written to memory.high, by cgroup, in order: the tripwire's (through
    cgroup_v2.write_high) and memory QoS's (cgroup_v2.write_setting). A write on
    cgroupfs replaces the value; on a regular file a shorter one would leave the old
    one's tail ("max" over "104857600"), so the file is emptied first."""
    writes: dict[str, list[str]] = {}
    write_high, write_setting = cgroup_v2.write_high, cgroup_v2.write_setting

    def emptied(cgroup_dir: str, value: str) -> None:
        writes.setdefault(cgroup_dir, []).append(value)
        with contextlib.suppress(FileNotFoundError):
            os.truncate(os.path.join(cgroup_dir, "memory.high"), 0)

    def recording_high(cgroup_dir: str, high_bytes: int | None) -> bool:
        emptied(cgroup_dir, "max" if high_bytes is None else str(high_bytes))
        return write_high(cgroup_dir, high_bytes)

    def recording_setting(cgroup_dir: str, file: str, value: str) -> bool:
        if file == "memory.high":
            emptied(cgroup_dir, value)
        return write_setting(cgroup_dir, file, value)

    monkeypatch.setattr(cgroup_v2, "write_high", recording_high)
    monkeypatch.setattr(cgroup_v2, "write_setting", recording_setting)
    return writes


def set_limit(container: FakeContainer, limit_bytes: int) -> None:
    """A new memory.max, written in place as the kubelet does (inotify: IN_MODIFY)."""
    fd = os.open(os.path.join(container.path, "memory.max"), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, f"{limit_bytes}\n".encode())
    finally:
        os.close(fd)


@pytest.mark.parametrize("tripwire", [Tripwire.AUTO, Tripwire.ON])
async def test_memory_qos_and_the_tripwire_take_turns(
    fake_v2_tree: tuple[str, list[FakeContainer]],
    containers: dict[str, FakeContainer],
    high_writes: dict[str, list[str]],
    tripwire: Tripwire,
) -> None:
    """The whole agent (the real V2Backend on the fake tree's files) with memory QoS:
    web's pod has a class, db's none. auto: web never gets the tripwire while its
    class lasts; on: the class replaces the tripwire and gives it back."""
    root, _ = fake_v2_tree
    web, db = containers["web"], containers["db"]
    assert web.limit_bytes is not None
    pods = Pods({p.uid: p for p in (pod_of(web, {CLASS_KEY: "silver"}), pod_of(db, {}))})
    config = make_config(root, memory_qos=SILVER, v2=settings(tripwire))
    agent, qos = compose_agent(config, [], pods=pods, backend=RecordingV2Backend(config.v2))
    assert qos is not None
    silver = str(high_for(web.limit_bytes, Fraction(1, 5), PAGE_BYTES))
    async with agent_running(agent):
        await wait_armed(agent, web.path)
        await wait_armed(agent, db.path)
        guards = agent.supervisor.guards
        web_threshold = page_floor(guards[web.path].armed_threshold_bytes)
        await until(qos.changes, lambda: high(web) == silver, "web's class written")
        assert high(db) == page_floor(guards[db.path].armed_threshold_bytes)  # no class
        pods.change(pod_of(web, {}))  # the class is removed: memory QoS puts back what it found
        put_back = "max" if tripwire is Tripwire.AUTO else web_threshold
        await until(qos.changes, lambda: high(web) == put_back, f"{put_back} put back")
        set_limit(web, web.limit_bytes - 16 * MIB)  # the guard arms again: the tripwire
        new_threshold = threshold_bytes(web.limit_bytes - 16 * MIB, config.agent.settings)
        await until(
            agent.supervisor.changes,
            lambda: guards[web.path].armed_threshold_bytes == new_threshold,
            "web armed at its new threshold",
        )
        assert high(web) == page_floor(new_threshold)
    assert high(web) == high(db) == "max"  # memguard's tripwires given back
    if tripwire is Tripwire.AUTO:
        assert high_writes[web.path] == [silver, "max", page_floor(new_threshold), "max"]
    else:
        assert high_writes[web.path] == [
            web_threshold,
            silver,
            web_threshold,
            page_floor(new_threshold),
            "max",
        ]
