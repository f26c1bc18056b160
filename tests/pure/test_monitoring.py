"""deploy/monitoring/: the kit validates (the Service and the dashboard's
ConfigMap strictly against the Kubernetes schemas; the Prometheus Operator
resources by apiVersion, kind and shape: no CRD schema ships offline), points at
what the DaemonSet runs, and every PromQL expression in it parses.
tests/kube/test_monitoring.py checks the names in them against a live scrape."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from testing.kube import apirules
from testing.monitoring import (
    DASHBOARD,
    MONITORING,
    Query,
    dashboard,
    dashboard_queries,
    documents,
    promql,
    rule_queries,
    selectors,
)

DEPLOY = MONITORING.parent
OPERATOR_API = "monitoring.coreos.com/v1"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# RelabelConfig fields and actions of the Prometheus Operator's CRDs (v1).
RELABEL_FIELDS = {"action", "sourceLabels", "separator", "targetLabel", "regex", "modulus"}
RELABEL_FIELDS |= {"replacement"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"}
RULE_FIELDS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _daemonset() -> dict[str, Any]:
    [daemonset] = [d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if d]
    found: dict[str, Any] = daemonset
    return found


def _kustomization() -> dict[str, Any]:
    [kustomization] = documents("kustomization.yaml")
    return kustomization


def dashboard_configmap() -> dict[str, Any]:
    """The ConfigMap the Component's configMapGenerator makes (as kustomize makes it)."""
    [generator] = _kustomization()["configMapGenerator"]
    data = {}
    for entry in generator["files"]:
        key, _, path = entry.partition("=")
        data[key] = (MONITORING / path).read_text()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": generator["name"],
            "namespace": generator["namespace"],
            "labels": generator["options"]["labels"],
        },
        "data": data,
    }


@pytest.mark.parametrize("version", ["1.30", "1.33", "1.37"])
def test_the_service_and_the_dashboard_configmap_validate_strictly(version: str) -> None:
    [service] = documents("service.yaml")
    apirules.check_schema(service, version)
    apirules.check_schema(dashboard_configmap(), version)


def test_a_misspelt_field_is_refused() -> None:
    [service] = documents("service.yaml")
    service["spec"]["ports"][0]["targetport"] = "http"
    with pytest.raises(apirules.SchemaError, match="targetport"):
        apirules.check_schema(service)


def test_the_component_holds_the_kit_and_nothing_else() -> None:
    kustomization = _kustomization()
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert kustomization["kind"] == "Component"
    manifests = sorted(p.name for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == manifests
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == [f"memguard.json={DASHBOARD.name}"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    assert generator["options"]["disableNameSuffixHash"] is True
    for name in manifests:
        for doc in documents(name):
            assert doc["metadata"]["namespace"] == _daemonset()["metadata"]["namespace"]


def test_the_service_selects_the_daemonsets_pods_on_the_metrics_port() -> None:
    [service] = documents("service.yaml")
    template = _daemonset()["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["clusterIP"] == "None"  # headless: each node's memguard on its own
    [port] = service["spec"]["ports"]
    [container] = template["spec"]["containers"]
    [container_port] = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert (port["name"], port["port"]) == ("http", 9637)
    assert container_port["containerPort"] == 9637
    assert "--listen=:9637" in container["args"]


def test_the_podmonitor_scrapes_every_memguard_pod() -> None:
    [monitor] = documents("podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == (OPERATOR_API, "PodMonitor")
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "podMetricsEndpoints"}
    daemonset = _daemonset()
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert daemonset["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert DURATION.match(endpoint["interval"])
    assert DURATION.match(endpoint["scrapeTimeout"])
    relabelings = endpoint["relabelings"]
    for relabel in relabelings:
        assert set(relabel) <= RELABEL_FIELDS, relabel
        assert relabel["action"] in RELABEL_ACTIONS
    targets = {r.get("targetLabel"): r for r in relabelings if r["action"] == "replace"}
    assert targets["job"]["replacement"] == "memguard"  # the rules and the dashboard select it
    assert targets["node"]["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]
    [drop] = [r for r in relabelings if r["action"] == "labeldrop"]
    # the memguard pod's own labels would clash with the per-container series' labels
    for label in ("namespace", "pod", "container"):
        assert re.fullmatch(drop["regex"], label)
    assert not re.fullmatch(drop["regex"], "node")


def test_the_prometheusrule_is_well_formed() -> None:
    [rule] = documents("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == (OPERATOR_API, "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))
    for alert in alerts:
        assert set(alert) <= RULE_FIELDS, alert["alert"]
        assert re.fullmatch(r"Memguard[A-Z][A-Za-z]+", alert["alert"])
        assert DURATION.match(alert.get("for", "0s"))
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        assert set(alert["annotations"]) == {"summary", "description"}
        assert len(alert["annotations"]["description"]) > 100  # says what to look at
    # what the issue asks operators be told about
    expressions = " ".join(r["expr"] for r in alerts)
    for needed in (
        "up{",
        "memguard_ready",
        'reason="CgroupOOM"',
        "memguard_report_drops_total",
        "memguard_kill_latency_seconds_bucket",
        "memguard_component_failures_total",
    ):
        assert needed in expressions


def _all_queries() -> list[Query]:
    return rule_queries() + dashboard_queries()


@pytest.mark.parametrize("query", _all_queries(), ids=lambda q: q.where)
def test_every_promql_expression_parses_and_selects_memguards_job(query: Query) -> None:
    assert promql(query) is not None
    found = selectors(query)
    assert found
    for selector in found:
        # process_* and up are everyone's names: only job="memguard" makes them memguard's
        assert ("job", "=", "memguard") in selector.matchers, (query.where, selector)


def test_promql_that_does_not_parse_is_caught() -> None:
    with pytest.raises(ValueError, match=r".+"):
        promql(Query("a broken query", "sum by (node (memguard_ready)"))


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["node"]["multi"] is True
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for needed in ("guarded containers", "actions by kind", "kernel oom", "latency", "top"):
        assert needed in titles
    queries = " ".join(q.text for q in dashboard_queries())
    assert "process_resident_memory_bytes" in queries
    assert "process_cpu_seconds_total" in queries


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) not here")
def test_kustomize_builds_the_component_onto_the_base(tmp_path: pathlib.Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, tmp_path)],  # kustomize: no absolute paths
                "components": [os.path.relpath(MONITORING, tmp_path)],
            }
        )
    )
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in objects}
    assert ("PodMonitor", "memguard") in kinds
    assert ("PrometheusRule", "memguard") in kinds
    assert ("Service", "oom-guard-metrics") in kinds
    assert ("DaemonSet", "oom-guard") in kinds  # the base, unchanged
    configmap = kinds["ConfigMap", "memguard-grafana-dashboard"]
    assert configmap == dashboard_configmap()
    for obj in objects:
        if not obj["kind"].startswith("Cluster"):
            assert obj["metadata"]["namespace"] == "kube-system", obj["metadata"]
        if obj["apiVersion"] != OPERATOR_API:
            apirules.check_schema(obj)
