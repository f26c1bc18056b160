"""deploy/: every manifest validates strictly (Kubernetes 1.30 schemas) and says
what the DaemonSet needs - and nothing more for RBAC."""

from __future__ import annotations

import itertools
import os
import pathlib
import tomllib
from typing import Any

import pytest
import yaml

from memguard.backends.hold import DEFAULT_LEDGER_DIR
from memguard.cli.configfile import load_config_file
from memguard.cli.main import build_parser
from memguard.cli.options import RUN_OPTIONS, resolve
from testing.kube import apirules

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = ["serviceaccount.yaml", "rbac.yaml", "configmap.yaml", "daemonset.yaml"]


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


@pytest.mark.parametrize("name", MANIFESTS)
@pytest.mark.parametrize("version", ["1.30", "1.33", "1.37"])
def test_manifests_validate_strictly(name: str, version: str) -> None:
    for doc in documents(name):
        apirules.check_schema(doc, version)


def test_kustomization_lists_every_manifest() -> None:
    [kustomization] = documents("kustomization.yaml")
    assert kustomization["namespace"] == "kube-system"
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)


def image_name(reference: str) -> str:
    """An image reference without its tag and digest: what a kustomize images entry
    matches (registry.example.com:5000/ops/memguard:0.1.0 -> ...:5000/ops/memguard)."""
    name = reference.split("@", 1)[0]
    path, _, last = name.rpartition("/")
    return (path + "/" if path else "") + last.split(":", 1)[0]


def test_image_name_drops_the_tag_and_digest_only() -> None:
    assert image_name("memguard:0.1.0") == "memguard"
    assert image_name("registry.example.com:5000/ops/memguard:0.1.0") == (
        "registry.example.com:5000/ops/memguard"
    )
    assert image_name("ghcr.io/memguard/memguard@sha256:" + "0" * 64) == "ghcr.io/memguard/memguard"


def test_the_image_is_a_registry_path_that_kustomize_rewrites() -> None:
    [kustomization] = documents("kustomization.yaml")
    [daemonset] = documents("daemonset.yaml")
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    [entry] = kustomization["images"]
    # `kustomize edit set image NAME=...` rewrites the entry that matches the manifest's
    # image by name: a bare "memguard" entry would leave a registry path untouched
    assert image_name(container["image"]) == entry["name"]
    assert container["image"] == f"{entry['newName']}:{entry['newTag']}"
    registry = entry["newName"].split("/", 1)[0]
    assert "." in registry, "a registry host first; a bare name means Docker Hub's library/"
    with (DEPLOY.parent / "pyproject.toml").open("rb") as file:
        assert entry["newTag"] == tomllib.load(file)["project"]["version"]


def test_the_dockerfile_base_is_a_build_argument_with_a_registry_default() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    [default] = [line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE_IMAGE=")]
    assert default.startswith("docker.io/library/python:3.11-")
    # the wheels (compiled, or brought by make image's context), then the runtime
    stages = [line.split() for line in lines if line.startswith("FROM ")]
    assert stages == [["FROM", "${BASE_IMAGE}", "AS", "wheels"], ["FROM", "${BASE_IMAGE}"]]
    assert 'ENTRYPOINT ["memguard"]' in lines
    assert "USER 0" in lines  # root owns the cgroup control files it writes


def test_rbac_is_least_privilege() -> None:
    role, binding = documents("rbac.yaml")
    assert role["metadata"]["name"] == "system:oomguard"
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("events.k8s.io",), ("events",)): {"create", "patch"},
        # the pod cache (no single-pod get); delete: --graceful-via delete
        (("",), ("pods",)): {"list", "watch", "delete"},
        (("",), ("pods/eviction",)): {"create"},  # the Eviction API: evict, --graceful-via evict
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "oomguard", "namespace": "kube-system"}
    ]


def test_daemonset_has_what_the_agent_needs() -> None:
    [daemonset] = documents("daemonset.yaml")
    assert (daemonset["metadata"]["name"], daemonset["metadata"]["namespace"]) == (
        "oom-guard",
        "kube-system",
    )
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["serviceAccountName"] == "oomguard"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    # every taint tolerated, but only Linux nodes: cgroupfs, eventfd, pidfd
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    [container] = pod["containers"]
    # Guaranteed QoS: requests = limits for both cpu and memory (oom_score_adj -997)
    resources = container["resources"]
    assert set(resources["limits"]) == {"cpu", "memory"}
    assert resources["requests"] == resources["limits"]
    fields = {env["name"]: env["valueFrom"]["fieldRef"]["fieldPath"] for env in container["env"]}
    assert fields == {"NODE_NAME": "spec.nodeName", "POD_UID": "metadata.uid"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    security = container["securityContext"]
    # KILL: other users' processes; SYS_NICE, IPC_LOCK: --priority auto (nice, mlockall)
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["KILL", "SYS_NICE", "IPC_LOCK"]}
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    # pidfd refused by an older runtime's profile: kill(2) after a membership check
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"host-cgroup", "config", "hold-ledger"}
    assert volumes["host-cgroup"]["hostPath"]["path"] == "/sys/fs/cgroup"
    # --hold-at-limit's ledger outlives the container: on the node, where it expects it
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["hold-ledger"]["hostPath"]["path"] == mounts["hold-ledger"]
    assert DEFAULT_LEDGER_DIR.startswith(mounts["hold-ledger"] + "/")


def test_every_added_capability_says_why() -> None:
    text = (DEPLOY / "daemonset.yaml").read_text()
    for capability in ("KILL", "SYS_NICE", "IPC_LOCK"):
        item = f"                - {capability}\n"
        assert item in text
        above = [line.strip() for line in text[: text.index(item)].splitlines()]
        comment = list(itertools.takewhile(lambda line: line.startswith("#"), above[::-1]))
        assert comment, f"no comment above {capability}"
        assert comment[-1].startswith(f"# {capability}: "), comment


def comment_above(text: str, line: str) -> list[str]:
    """The comment lines right above the one line that is exactly `line`."""
    assert text.count(line + "\n") == 1, line
    above = [row.strip() for row in text[: text.index(line + "\n")].splitlines()]
    return list(itertools.takewhile(lambda row: row.startswith("#"), above[::-1]))[::-1]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("      nodeSelector:", "Linux nodes only"),
        ("            seccompProfile:", "kill(2)"),
        ("            privileged: false", "capabilities"),
        ("            allowPrivilegeEscalation: false", "no_new_privs"),
        ("            readOnlyRootFilesystem: true", "writes nothing"),
        ("          resources:", "Guaranteed"),
        ("      terminationGracePeriodSeconds: 15", "SIGTERM"),
    ],
)
def test_every_hardening_setting_says_why(line: str, why: str) -> None:
    comment = " ".join(comment_above((DEPLOY / "daemonset.yaml").read_text(), line))
    assert why in comment, comment


def test_daemonset_arguments_are_valid_memguard_flags() -> None:
    [daemonset] = documents("daemonset.yaml")
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    values = resolve(RUN_OPTIONS, vars(args), {})
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[os.path.dirname(args.config)] == "config"
    # The node's /sys/fs/cgroup, whatever its layout: --parent auto looks there
    assert mounts[values["cgroup_root"]] == "host-cgroup"
    assert values["parent"] == "auto"
    assert values["cgroup_version"] == "auto"
    assert values["listen"] == ":9637"
    assert values["high_tripwire"] == "auto"  # the default: no flag needed on v2 nodes
    port = container["ports"][0]["containerPort"]
    assert values["listen"].endswith(f":{port}")


def test_the_configmap_is_a_valid_config_file(tmp_path: pathlib.Path) -> None:
    [configmap] = documents("configmap.yaml")
    [daemonset] = documents("daemonset.yaml")
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    file = load_config_file(str(path), RUN_OPTIONS)
    values = resolve(RUN_OPTIONS, {}, {}, file.values, str(path))
    assert values["flush_cooldown"] == 10.0
    uncommented = "\n".join(
        line.replace("# ", "", 1) for line in configmap["data"]["config.yaml"].splitlines()
    )
    path.write_text(uncommented)  # the commented example is valid too
    example = load_config_file(str(path), RUN_OPTIONS)
    assert example.memory_qos is not None
    assert sorted(example.memory_qos.classes) == ["bronze", "silver"]
