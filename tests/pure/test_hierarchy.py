"""--cgroup-root: the layout from what statfs saw, the kubelet's tree, the hint for a
missing parent, the options and the readiness reasons (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from memguard.cli.config import resolve_parent
from memguard.cli.options import DEFAULT_CGROUP_ROOT, RUN_OPTIONS, resolve
from memguard.errors import ConfigError
from memguard.guarding.agent import AgentStatus
from memguard.kernel.fstype import FsKind
from memguard.kernel.hierarchy import CgroupLayout, Seen, choose_layout, missing_parent_hint
from memguard.kernel.mounts import HostMode

V1, V2, OTHER = FsKind.CGROUP_V1, FsKind.CGROUP_V2, FsKind.OTHER
ROOT = "/host/sys/fs/cgroup"
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"


@pytest.mark.parametrize(
    ("seen", "mode", "memory_root", "freezer_root"),
    [
        # a v1 host: tmpfs with a hierarchy per controller
        (Seen(OTHER, memory=V1, freezer=V1), HostMode.V1, f"{ROOT}/memory", f"{ROOT}/freezer"),
        # hybrid (this host): cgroup2 without controllers at unified/, memory is v1
        (Seen(OTHER, memory=V1, unified=V2, freezer=V1), HostMode.HYBRID, f"{ROOT}/memory",
         f"{ROOT}/freezer"),
        # v1 without a freezer hierarchy: container kills go without freezing
        (Seen(OTHER, memory=V1, unified=V2), HostMode.HYBRID, f"{ROOT}/memory", None),
        (Seen(OTHER, memory=V1, freezer=OTHER), HostMode.V1, f"{ROOT}/memory", None),
        # pure v2: the root is cgroup2
        (Seen(V2, v2_controllers=V2_CONTROLLERS), HostMode.V2, ROOT, None),
        (Seen(V2, v2_controllers=None), HostMode.V2, ROOT, None),  # unreadable: the backend checks
        # fake trees (memguard fake init): the tree is the memory hierarchy
        (Seen(OTHER, fake_version=1), HostMode.V1, ROOT, None),
        (Seen(OTHER, fake_version=2), HostMode.V2, ROOT, None),
    ],
)  # fmt: skip
def test_the_layout_from_what_statfs_saw(
    seen: Seen, mode: HostMode, memory_root: str, freezer_root: str | None
) -> None:
    layout = choose_layout(ROOT, seen)
    assert (layout.mode, layout.memory_root, layout.freezer_root) == (
        mode,
        memory_root,
        freezer_root,
    )
    assert layout.version == ("2" if mode is HostMode.V2 else "1")
    assert layout.fake == (seen.fake_version is not None)


@pytest.mark.parametrize(
    ("seen", "needle"),
    [
        (Seen(None), "does not exist"),
        (Seen(OTHER, directory=False), "is not a directory"),
        (Seen(V2, v2_controllers="cpu io pids"), "cgroup v2 without the memory controller"),
        (Seen(V2, v2_controllers=""), "(cgroup.controllers: none)"),
        (Seen(V1), "is itself one cgroup v1 hierarchy"),
        (Seen(OTHER), "not a cgroup filesystem"),
        (Seen(OTHER, memory=OTHER), "(memory/ is not a cgroup filesystem)"),
        (Seen(OTHER, memory=V2), "(memory/ is cgroup2)"),
        (Seen(OTHER, memory=None, unified=V2), "(there is no memory/)"),
    ],
)
def test_roots_without_a_memory_hierarchy_are_one_clear_line(seen: Seen, needle: str) -> None:
    with pytest.raises(ConfigError) as raised:
        choose_layout(ROOT, seen)
    message = str(raised.value)
    assert message.startswith(f"--cgroup-root {ROOT}"), message
    assert needle in message
    assert "\n" not in message


def test_a_v1_hierarchy_given_as_the_root_suggests_its_parent() -> None:
    with pytest.raises(ConfigError, match=r"here /host/sys/fs/cgroup\?"):
        choose_layout(f"{ROOT}/memory", Seen(V1))


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (HostMode.V1, (f"{ROOT}/memory/kubepods", f"{ROOT}/memory/kubepods.slice")),
        (HostMode.HYBRID, (f"{ROOT}/memory/kubepods", f"{ROOT}/memory/kubepods.slice")),
        (HostMode.V2, (f"{ROOT}/kubepods.slice", f"{ROOT}/kubepods")),  # systemd first on v2
    ],
)
def test_the_kubelets_tree_usual_driver_first(mode: HostMode, expected: tuple[str, str]) -> None:
    memory_root = ROOT if mode is HostMode.V2 else f"{ROOT}/memory"
    assert CgroupLayout(ROOT, mode, memory_root).kubepods_candidates() == expected


def test_parent_auto_takes_the_usual_driver_when_neither_exists_and_waits_for_both() -> None:
    layout = CgroupLayout("/nonexistent", HostMode.V2, "/nonexistent")
    parent, others = resolve_parent("auto", "auto", layout)
    assert (parent, others) == ("/nonexistent/kubepods.slice", ("/nonexistent/kubepods",))
    assert resolve_parent("/x/kubepods", "auto", layout) == ("/x/kubepods", ())
    assert resolve_parent("auto", "2", layout)[0] == parent
    with pytest.raises(ConfigError, match=r"--cgroup-version 1, but .* cgroup v2 \(unified\)"):
        resolve_parent("auto", "1", layout)
    with pytest.raises(ConfigError, match="--parent auto needs a usable --cgroup-root"):
        resolve_parent("auto", "auto", None)


V1_LAYOUT = CgroupLayout(ROOT, HostMode.HYBRID, f"{ROOT}/memory", f"{ROOT}/freezer")


@pytest.mark.parametrize(
    ("parent", "auto", "layout", "ancestor", "kind", "fake", "needles"),
    [
        # --parent auto: the kubelet has not made its tree (yet)
        (f"{ROOT}/memory/kubepods", True, V1_LAYOUT, f"{ROOT}/memory", V1, False,
         ["no kubepods or kubepods.slice under /host/sys/fs/cgroup/memory",
          "cgroup v1 (hybrid)", "is it running on this node"]),
        # the old manifest (--parent .../memory) on a cgroup v2 node
        (f"{ROOT}/memory", False, None, ROOT, V2, False,
         [f"no memory under {ROOT}, which is cgroup v2: is this a cgroup v2 node?",
          f"set --cgroup-root {ROOT} and --parent auto"]),
        (f"{ROOT}/memory/kubepods", False, None, ROOT, V2, False,
         ["is this a cgroup v2 node?"]),
        # an explicit parent in a cgroup tree: whoever makes it is not running
        (f"{ROOT}/memory/kubepods", False, V1_LAYOUT, f"{ROOT}/memory", V1, False,
         [f"no kubepods under {ROOT}/memory (cgroup v1)", "--parent auto finds either"]),
        # not on a cgroup filesystem at all
        ("/sys/fs/cgroup/memory/kubepods", False, None, "/sys/fs/cgroup", OTHER, False,
         ["which is not a cgroup filesystem: set --cgroup-root"]),
        ("/tmp/tree/kubepods", False, None, "/tmp/tree", OTHER, True,
         ["no kubepods under /tmp/tree (a fake tree)"]),
    ],
)  # fmt: skip
def test_the_hint_for_a_missing_parent(
    parent: str,
    auto: bool,
    layout: CgroupLayout | None,
    ancestor: str,
    kind: FsKind,
    fake: bool,
    needles: list[str],
) -> None:
    hint = missing_parent_hint(parent, auto, layout, ancestor, kind, fake)
    for needle in needles:
        assert needle in hint, hint


@pytest.mark.parametrize(
    ("given", "environ", "root", "wait_s"),
    [
        ({}, {}, DEFAULT_CGROUP_ROOT, 60.0),
        ({"cgroup_root": ROOT}, {}, ROOT, 60.0),
        ({}, {"MEMGUARD_CGROUP_ROOT": f" {ROOT} "}, ROOT, 60.0),
        ({"parent_wait": "5m"}, {"MEMGUARD_PARENT_WAIT": "1s"}, DEFAULT_CGROUP_ROOT, 300.0),
        ({}, {"MEMGUARD_PARENT_WAIT": "0s"}, DEFAULT_CGROUP_ROOT, 0.0),
    ],
)
def test_cgroup_root_and_parent_wait_options(
    given: dict[str, str], environ: dict[str, str], root: str, wait_s: float
) -> None:
    values = resolve(RUN_OPTIONS, given, environ)
    assert values["cgroup_root"] == root
    assert values["parent_wait"] == pytest.approx(wait_s)


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ({"cgroup_root": "  "}, "--cgroup-root: an empty path"),
        ({"cgroup_root": "/a\0b"}, "is not a usable path"),
        ({"cgroup_root": "/" + "x" * 5000}, "is not a usable path"),
        ({"parent_wait": "25h"}, "--parent-wait: '25h' is out of range: at least 0s, at most 24h"),
        ({"parent_wait": "soon"}, "--parent-wait: 'soon' is not a duration"),
    ],
)
def test_bad_cgroup_root_and_parent_wait_values(given: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(RUN_OPTIONS, given, {})
    assert needle in str(raised.value)


def status(**changes: Any) -> AgentStatus:
    fields: dict[str, Any] = {
        "discovered": True,
        "guarded": 0,
        "armed": 0,
        "waiting_for_fds": 0,
        "inotify_watches": 0,
        "components_down": {},
        "degraded": {},
        "component_failures": {},
        "guard_failures": 0,
        "discovery_degraded": {},
        "discovery_errors": {},
        "parent": f"{ROOT}/memory/kubepods",
        "parent_wait_s": 60.0,
        "parent_hint": "no kubepods under ...: is the kubelet running?",
    }
    fields.update(changes)
    return AgentStatus(**fields)


def test_ready_with_the_parent_and_no_containers() -> None:
    assert status().not_ready_reasons() == []


def test_not_ready_while_the_parent_is_missing_and_why_once_it_waited_too_long() -> None:
    [early] = status(parent_missing_s=12.7).not_ready_reasons()
    assert early == (
        f"parent {ROOT}/memory/kubepods does not exist yet (waiting 12s, --parent-wait 1m)"
    )
    [late] = status(parent_missing_s=75.2).not_ready_reasons()
    assert late == (
        f"parent {ROOT}/memory/kubepods missing for 75s (--parent-wait 1m), nothing guarded; "
        "likely cause: no kubepods under ...: is the kubelet running?"
    )
    [at_once] = status(parent_missing_s=0.0, parent_wait_s=0.0).not_ready_reasons()
    assert "missing for 0s (--parent-wait 0s), nothing guarded" in at_once
