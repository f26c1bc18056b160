"""Discovery on fake trees: what gets guarded, additions, removals, churn."""

from __future__ import annotations

import os
import shutil

from memguard.fake import model, tree
from memguard.fake.model import FakeMemory
from memguard.guarding.discovery import MAX_DEPTH, TOO_DEEP, MatchMode
from memguard.policy.model import MIB
from testing.agents import (
    make_config,
    open_fd_count,
    running_agent,
    trio_task_count,
    until,
    wait_guarded,
)

HEX_A = "a" * 64
HEX_B = "b" * 64


def _container_path(root: str, pod_index: int, container_hex: str) -> str:
    uid = f"{pod_index:08x}-0000-4000-8000-000000000000"
    return os.path.join(root, "kubepods", "burstable", f"pod{uid}", container_hex)


async def test_guards_every_container_of_the_init_tree_and_nothing_else(
    any_fake_tree: tuple[str, list[tree.FakeContainer]],
) -> None:
    root, containers = any_fake_tree
    async with running_agent(make_config(root)) as (agent, _):
        guarded = agent.supervisor.guarded
    assert guarded == {c.path for c in containers}
    assert not any("crio-conmon" in path for path in guarded)


async def test_new_container_is_guarded_and_removed_one_is_released(
    empty_fake_root: str,
) -> None:
    async with running_agent(make_config(empty_fake_root)) as (agent, _):
        supervisor = agent.supervisor
        assert supervisor.guarded == frozenset()
        path = _container_path(empty_fake_root, 1, HEX_A)
        model.create(path, FakeMemory(limit_bytes=64 * MIB))
        await wait_guarded(agent, 1)
        assert supervisor.guarded == {path}
        shutil.rmtree(os.path.dirname(path))  # the whole pod goes
        await wait_guarded(agent, 0)
        assert supervisor.failures == 0


async def test_leaf_mode_guards_unknown_layouts(empty_fake_root: str) -> None:
    service = os.path.join(empty_fake_root, "system.slice", "my-app.service")
    model.create(service, FakeMemory(limit_bytes=64 * MIB))
    config = make_config(empty_fake_root, match=MatchMode.LEAF)
    async with running_agent(config) as (agent, _):
        supervisor = agent.supervisor
        assert supervisor.guarded == {service}
        child = os.path.join(service, "worker")
        model.create(child, FakeMemory(limit_bytes=32 * MIB))
        await until(
            supervisor.changes,
            lambda: supervisor.guarded == {child} and supervisor.running == 1,
            "s.guarded == {child} and s.running == 1",
        )
        # The service has a child now: the child is the leaf that is guarded.
        assert supervisor.guarded == {child}


async def test_500_cgroups_come_and_go_without_leaking_tasks_fds_or_watches(
    empty_fake_root: str,
) -> None:
    async with running_agent(make_config(empty_fake_root)) as (agent, _):
        supervisor = agent.supervisor
        tasks_before, fds_before = trio_task_count(), open_fd_count()
        watches_before = agent.hub.watch_count
        paths = [_container_path(empty_fake_root, index, HEX_B) for index in range(500)]
        for path in paths:
            model.create(path, FakeMemory(limit_bytes=64 * MIB))
        await wait_guarded(agent, 500)
        assert trio_task_count() == tasks_before + 500
        shutil.rmtree(os.path.join(empty_fake_root, "kubepods"))
        await wait_guarded(agent, 0)
        assert trio_task_count() == tasks_before
        assert open_fd_count() == fds_before
        assert agent.hub.watch_count == watches_before
        assert supervisor.failures == 0


async def test_nothing_below_a_container_or_beside_a_pods_containers_is_watched(
    empty_fake_root: str,
) -> None:
    container = _container_path(empty_fake_root, 1, HEX_A)
    model.create(container, FakeMemory(limit_bytes=64 * MIB))
    os.makedirs(os.path.join(container, "inner", "deeper"))  # below a container
    os.makedirs(os.path.join(os.path.dirname(container), "not-a-container", "x"))
    async with running_agent(make_config(empty_fake_root)) as (agent, _):
        supervisor = agent.supervisor
        watched_before = agent.hub.watch_count
        os.makedirs(os.path.join(container, "more", "levels"))
        os.makedirs(os.path.join(os.path.dirname(container), "other", HEX_B))
        # inotify events come in order: once this one is guarded, the others were seen
        sentinel = _container_path(empty_fake_root, 2, HEX_B)
        model.create(sentinel, FakeMemory(limit_bytes=64 * MIB))
        await until(
            supervisor.changes,
            lambda: sentinel in supervisor.guards and supervisor.guards[sentinel].armed,
            "sentinel in s.guards and s.guards[sentinel].armed",
        )
        assert supervisor.guarded == {container, sentinel}
        # the sentinel's pod directory and its guard's notifier, nothing else
        assert agent.hub.watch_count == watched_before + 2


async def test_leaf_mode_does_not_look_deeper_than_its_bound(empty_fake_root: str) -> None:
    shallow = os.path.join(empty_fake_root, "a", "b")
    model.create(shallow, FakeMemory(limit_bytes=64 * MIB))
    deep = os.path.join(empty_fake_root, *["d"] * (MAX_DEPTH + 3))
    os.makedirs(deep)
    config = make_config(empty_fake_root, match=MatchMode.LEAF)
    async with running_agent(config) as (agent, _):
        assert agent.supervisor.guarded == {shallow}
        discovery = agent.discovery
        assert discovery is not None
        assert discovery.degraded_by_cause() == {TOO_DEEP: 1}
        assert agent.ready()  # too deep is a rule, not a failure
