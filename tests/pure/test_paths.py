"""Golden container cgroup paths (DESIGN.md "Container cgroup paths")."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.paths import ContainerRef, leaf_ref, may_hold_containers, parse_container_path

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
UID_ = UID.replace("-", "_")
CID = "3f5c" + "0123456789abcdef" * 3 + "a1b2c3d4e5f6"  # 64 lowercase hex
V1 = "/sys/fs/cgroup/memory"

BURST_POD = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
BEST_POD = f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
GUAR_POD = f"kubepods.slice/kubepods-pod{UID_}.slice"


def _ref(qos: str | None, runtime: str | None, driver: str, uid: str | None = UID) -> ContainerRef:
    return ContainerRef(uid, CID, qos, runtime, driver)


GOLDEN = [
    # cgroupfs driver (v1)
    (f"kubepods/pod{UID}/{CID}", _ref("Guaranteed", None, "cgroupfs")),
    (f"kubepods/burstable/pod{UID}/{CID}", _ref("Burstable", None, "cgroupfs")),
    (f"kubepods/besteffort/pod{UID}/{CID}", _ref("BestEffort", None, "cgroupfs")),
    (f"{V1}/kubepods/burstable/pod{UID}/{CID}", _ref("Burstable", None, "cgroupfs")),
    (f"{V1}/kubepods/pod{UID}/{CID}/", _ref("Guaranteed", None, "cgroupfs")),
    # systemd driver (v1 and v2)
    (f"{GUAR_POD}/cri-containerd-{CID}.scope", _ref("Guaranteed", "containerd", "systemd")),
    (f"{BURST_POD}/crio-{CID}.scope", _ref("Burstable", "cri-o", "systemd")),
    (f"{BURST_POD}/cri-containerd-{CID}.scope", _ref("Burstable", "containerd", "systemd")),
    (f"{BEST_POD}/docker-{CID}.scope", _ref("BestEffort", "docker", "systemd")),
    (f"{V1}/{BEST_POD}/crio-{CID}.scope", _ref("BestEffort", "cri-o", "systemd")),
    (f"/sys/fs/cgroup/{GUAR_POD}/crio-{CID}.scope", _ref("Guaranteed", "cri-o", "systemd")),
    # plain docker
    (f"docker/{CID}", _ref(None, "docker", "docker", uid=None)),
    (f"{V1}/docker/{CID}", _ref(None, "docker", "docker", uid=None)),
    (f"system.slice/docker-{CID}.scope", _ref(None, "docker", "docker", uid=None)),
    (f"{V1}/system.slice/docker-{CID}.scope", _ref(None, "docker", "docker", uid=None)),
]


def test_golden_ids_are_well_formed() -> None:
    assert len(CID) == 64
    assert len(UID) == 36


@pytest.mark.parametrize(("path", "expected"), GOLDEN)
def test_parse_container_path_golden(path: str, expected: ContainerRef) -> None:
    assert parse_container_path(path) == expected


@pytest.mark.parametrize("path", [p for p, ref in GOLDEN if ref.driver == "systemd"])
def test_systemd_pod_uid_has_its_dashes_restored(path: str) -> None:
    ref = parse_container_path(path)
    assert ref is not None
    assert ref.pod_uid == UID
    assert "_" not in ref.pod_uid


NOT_CONTAINERS = [
    "",
    "/",
    "kubepods",
    f"{V1}/kubepods",
    # QoS cgroups
    "kubepods/burstable",
    "kubepods/besteffort",
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    "kubepods.slice/kubepods-besteffort.slice",
    # pod cgroups
    f"kubepods/pod{UID}",
    f"kubepods/burstable/pod{UID}",
    f"{V1}/kubepods/besteffort/pod{UID}",
    GUAR_POD,
    BURST_POD,
    f"{V1}/{BEST_POD}",
    # not containers inside a pod
    f"{BURST_POD}/crio-conmon-{CID}.scope",
    f"{GUAR_POD}/crio-conmon-{CID}.scope",
    "init.scope",
    "system.slice/init.scope",
    f"{BURST_POD}/init.scope",
    "system.slice",
    "system.slice/kubelet.service",
    "user.slice/user-0.slice/session-1.scope",
    # malformed ids
    f"kubepods/pod{UID}/{CID[:12]}",
    f"kubepods/pod{UID}/{CID[:63]}",
    f"kubepods/pod{UID}/{CID}0",
    f"kubepods/pod{UID}/{CID.upper()}",
    f"docker/{CID.upper()}",
    f"docker/{CID[:12]}",
    f"{BURST_POD}/crio-{CID[:12]}.scope",
    f"{BURST_POD}/crio-{CID.upper()}.scope",
    f"{BURST_POD}/cri-containerd-{CID}",
    f"{BURST_POD}/containerd-{CID}.scope",
    # malformed pod directories
    f"kubepods/pod{UID.upper()}/{CID}",
    f"kubepods/pod{UID[:-1]}/{CID}",
    f"kubepods/{UID}/{CID}",
    f"kubepods.slice/kubepods-pod{UID_}/crio-{CID}.scope",
    f"kubepods.slice/kubepods-guaranteed-pod{UID_}.slice/crio-{CID}.scope",
    # a runtime scope that is neither docker nor under a pod slice
    f"system.slice/crio-{CID}.scope",
    f"system.slice/cri-containerd-{CID}.scope",
    # a bare id with no recognised parent
    CID,
    f"/{CID}",
    f"system.slice/{CID}",
    f"kubepods/burstable/{CID}",
    # below a container
    f"kubepods/pod{UID}/{CID}/child",
]


@pytest.mark.parametrize("path", NOT_CONTAINERS)
def test_parse_container_path_rejects_non_containers(path: str) -> None:
    assert parse_container_path(path) is None


@pytest.mark.parametrize(("path", "expected"), GOLDEN)
def test_leaf_ref_is_the_parsed_form_when_known(path: str, expected: ContainerRef) -> None:
    assert leaf_ref(path) == expected


@pytest.mark.parametrize("path", ["kubepods/burstable", "system.slice/init.scope", "a/b/leaf"])
def test_leaf_ref_falls_back_to_an_anonymous_leaf(path: str) -> None:
    assert leaf_ref(path) == ContainerRef(None, None, None, None, "leaf")


hex_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
qos_slices = st.sampled_from(
    [("", "Guaranteed"), ("burstable", "Burstable"), ("besteffort", "BestEffort")]
)
runtimes = st.sampled_from(
    [("cri-containerd", "containerd"), ("crio", "cri-o"), ("docker", "docker")]
)


@given(uid=st.uuids(), cid=hex_ids, qos=qos_slices, runtime=runtimes)
def test_any_systemd_container_path_round_trips(
    uid: uuid.UUID, cid: str, qos: tuple[str, str], runtime: tuple[str, str]
) -> None:
    slice_qos, qos_class = qos
    prefix, runtime_name = runtime
    pod_slice = f"kubepods-{slice_qos}-pod" if slice_qos else "kubepods-pod"
    qos_dir = f"kubepods-{slice_qos}.slice/" if slice_qos else ""
    underscored = str(uid).replace("-", "_")
    pod_dir = f"/sys/fs/cgroup/kubepods.slice/{qos_dir}{pod_slice}{underscored}.slice"
    path = f"{pod_dir}/{prefix}-{cid}.scope"
    assert parse_container_path(path) == ContainerRef(
        str(uid), cid, qos_class, runtime_name, "systemd"
    )
    assert parse_container_path(pod_dir) is None


@given(uid=st.uuids(), cid=hex_ids, qos=qos_slices)
def test_any_cgroupfs_container_path_round_trips(
    uid: uuid.UUID, cid: str, qos: tuple[str, str]
) -> None:
    qos_dir, qos_class = qos
    path = os.path.join(V1, "kubepods", qos_dir, f"pod{uid}", cid)
    assert parse_container_path(path) == ContainerRef(str(uid), cid, qos_class, None, "cgroupfs")
    assert parse_container_path(os.path.dirname(path)) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/sys/fs/cgroup/memory", True),
        ("/sys/fs/cgroup/memory/kubepods", True),
        ("/sys/fs/cgroup/memory/kubepods/burstable", True),
        (f"/m/kubepods/burstable/pod{UID}", True),  # its children are containers
        (f"/m/kubepods/burstable/pod{UID}/{CID}", False),  # a container
        (f"/m/kubepods/burstable/pod{UID}/not-a-container", False),  # beside them
        (f"/m/kubepods/pod{UID}/{CID}/inner", False),
        (f"/m/kubepods.slice/kubepods-pod{UID_}.slice", True),
        (f"/m/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope", False),
        (f"/m/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", False),
        (f"/m/docker/{CID}", False),
        ("/m/system.slice", True),
    ],
)
def test_may_hold_containers(path: str, expected: bool) -> None:
    assert may_hold_containers(path) is expected
