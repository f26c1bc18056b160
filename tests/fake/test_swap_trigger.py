"""The swap trigger service on a fake cgroup v2 tree (virtual clock).

The containers' swap is the fake tree's (memory.swap.current, memory.current);
/proc/vmstat and /proc/swaps are files in tmp_path that a task writes like the
kernel would count; the act is memguard's own boundary (the graceful path's
callable), recorded here. Real files, real reads, real worker threads.
"""

from __future__ import annotations

import logging
import pathlib

import pytest
import trio
import trio.testing

from memguard.fake import model, tree
from memguard.guarding.pods import NoOverrides, PodListener
from memguard.guarding.swaptrigger import NO_SWAP_WARNING, SwapTrigger
from memguard.kernel import cgroup_v2
from memguard.kernel.psi import read_full_avg10
from memguard.policy.model import MIB
from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides
from memguard.policy.paths import ContainerRef
from memguard.policy.swap import RankedBy, SwapSettings
from testing.waits import within

SETTINGS = SwapSettings(io_threshold_pages_s=1000, sustained_s=2, poll_interval_s=0.25)
SWAPS = "Filename\tType\tSize\tUsed\tPriority\n/dev/zram0 partition 262140 1024 100\n"


class Protecting(NoOverrides):
    """The pods' side: one pod protected (as --protected-namespaces would)."""

    def __init__(self, protected_uid: str | None) -> None:
        self.protected_uid = protected_uid

    def overrides(self, ref: ContainerRef) -> ContainerOverrides:
        if ref.pod_uid == self.protected_uid:
            return ContainerOverrides(protected="namespace kube-system")
        return NO_OVERRIDES

    def subscribe(self, listener: PodListener) -> None:
        return None


class Acts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, cgroup_dir: str, reason: str) -> bool:
        self.calls.append((cgroup_dir, reason))
        return True


def set_swap(container: tree.FakeContainer, swap_mib: int) -> None:
    with model.locked(container.path) as memory:
        assert memory is not None
        memory.swap_bytes = swap_mib * MIB


def _write(path: pathlib.Path, text: str) -> None:
    path.write_text(text)  # a few bytes on tmpfs: the fake kernel's counter update


async def write_vmstat(path: pathlib.Path, pages_per_tick: list[int], tick_s: float = 0.1) -> None:
    """The kernel's counters: pages_per_tick[i] more swap I/O in tick i, then none."""
    pswpin = pswpout = 1000
    for pages in [*pages_per_tick, *[0] * 10_000]:
        pswpin += pages // 2
        pswpout += pages - pages // 2
        _write(path, f"pgpgin 5\npswpin {pswpin}\npswpout {pswpout}\npgalloc_dma 0\n")
        await trio.sleep(tick_s)


def trigger_for(
    tmp_path: pathlib.Path,
    containers: list[tree.FakeContainer],
    acts: Acts,
    protected_uid: str | None = None,
    dry_run: bool = False,
    swaps: str = SWAPS,
) -> SwapTrigger:
    (tmp_path / "swaps").write_text(swaps)
    (tmp_path / "vmstat").write_text("pswpin 1000\npswpout 1000\n")
    trigger = SwapTrigger(
        SETTINGS,
        acts,
        Protecting(protected_uid),
        cgroup_v2.read_swap,
        read_full_avg10,
        dry_run,
        str(tmp_path / "vmstat"),
        str(tmp_path / "swaps"),
    )
    for container in containers:
        trigger.container_seen(container.path, container.ref, container.limit_bytes)
    return trigger


async def test_sustained_swap_io_acts_on_the_worst_swapper_not_the_protected_one(
    fake_v2_tree: tuple[str, list[tree.FakeContainer]],
    tmp_path: pathlib.Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, containers = fake_v2_tree
    web, cache, batch, api = containers[:4]
    set_swap(web, 200)  # the highest share, but protected
    set_swap(cache, 64)
    set_swap(batch, 1)
    acts = Acts()
    trigger = trigger_for(tmp_path, containers, acts, protected_uid=web.ref.pod_uid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_vmstat, tmp_path / "vmstat", [500] * 100)  # 5,000 pages/s
        await nursery.start(trigger.run)
        with within("the swap trigger acting"):
            await trigger.changes.until(lambda: bool(trigger.acted))
        fired_s = trio.current_time()
        nursery.cancel_scope.cancel()
    assert acts.calls[0][0] == cache.path
    assert trigger.acted == [(cache.path, True)]
    assert 2.0 <= fired_s <= 2.6  # sustained_s, then the next sample
    choice = trigger.decisions[-1]
    assert choice.ranked_by is RankedBy.SWAP_SHARE  # the fake tree has no PSI
    assert choice.using_swap == 3
    assert choice.skipped == ((web.path, "protected (namespace kube-system)"),)
    reason = acts.calls[0][1]
    assert reason.startswith("swap trigger: node swap I/O ")
    assert " pages/s above 1000 for 2." in reason  # 4,000-6,000: 0.25 s samples of 0.1 s ticks
    assert "(89% swap share); ranked by swap share" in reason
    assert "swap 64.0MiB of" in reason
    assert api.path not in [call[0] for call in acts.calls]


async def test_a_spike_does_not_fire_and_a_dry_run_does_not_act(
    fake_v2_tree: tuple[str, list[tree.FakeContainer]],
    tmp_path: pathlib.Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, containers = fake_v2_tree
    set_swap(containers[1], 64)
    acts = Acts()
    trigger = trigger_for(tmp_path, containers, acts, dry_run=True)
    async with trio.open_nursery() as nursery:
        # 1 s of 20,000 pages/s, 1 s calm, then 3 s of 5,000 pages/s.
        nursery.start_soon(write_vmstat, tmp_path / "vmstat", [2000] * 10 + [0] * 10 + [500] * 30)
        await nursery.start(trigger.run)
        await trio.sleep(2.0)
        assert trigger.decisions == []  # the spike did not fire
        with within("the dry run's decision"):
            await trigger.changes.until(lambda: bool(trigger.decisions))
        nursery.cancel_scope.cancel()
    assert trigger.decisions[-1].victim is not None
    assert trigger.decisions[-1].victim.cgroup_dir == containers[1].path
    assert acts.calls == []
    assert trigger.acted == []


async def test_a_node_without_swap_is_said_at_start(
    fake_v2_tree: tuple[str, list[tree.FakeContainer]],
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, containers = fake_v2_tree
    trigger = trigger_for(tmp_path, containers, Acts(), swaps=SWAPS.splitlines()[0] + "\n")
    with caplog.at_level(logging.INFO, "memguard.guarding.swaptrigger"):
        async with trio.open_nursery() as nursery:
            await nursery.start(trigger.run)
            nursery.cancel_scope.cancel()
    assert NO_SWAP_WARNING in caplog.text
    ok = trigger_for(tmp_path, containers, Acts())
    caplog.clear()
    with caplog.at_level(logging.INFO, "memguard.guarding.swaptrigger"):
        async with trio.open_nursery() as nursery:
            await nursery.start(ok.run)
            nursery.cancel_scope.cancel()
    assert NO_SWAP_WARNING not in caplog.text
    assert "swap trigger on: 256.0MiB of swap (/dev/zram0)" in caplog.text
