"""deploy/monitoring/ read as Prometheus and Grafana read it: every PromQL
expression of the alerts and the dashboard, parsed (promql-parser, the Rust
parser Prometheus-compatible tools use), and the selectors in them."""

from __future__ import annotations

import json
import pathlib
import re
from dataclasses import dataclass
from typing import Any

import promql_parser
import yaml

MONITORING = pathlib.Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# What Grafana puts in place of its variables before Prometheus sees a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "${node}": "node-a",
    "$node": "node-a",
}
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$")


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op: = != =~ !~, value)


@dataclass(frozen=True)
class Query:
    where: str  # which alert or panel
    text: str  # as written (Grafana's variables in place)


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MONITORING / name).read_text()) if d]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def rule_queries() -> list[Query]:
    [rule] = documents("prometheusrule.yaml")
    return [
        Query(f"alert {r['alert']}", r["expr"])
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    ]


def dashboard_queries() -> list[Query]:
    board = dashboard()
    queries = [
        Query(f"panel {p['title']!r}", t["expr"])
        for p in board["panels"]
        for t in p.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(text)
            assert match is not None, f"variable {variable['name']}: not label_values(...)"
            queries.append(Query(f"variable {variable['name']}", match.group(1)))
    queries += [
        Query(f"annotation {a['name']!r}", a["expr"])
        for a in board["annotations"]["list"]
        if "expr" in a
    ]
    return queries


def promql(query: Query) -> Any:
    """The parsed expression (Grafana's variables replaced); raises if it does not parse."""
    text = query.text
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(variable, value)
    assert "$" not in text, f"{query.where}: an unknown Grafana variable in {text!r}"
    return promql_parser.parse(text)


def selectors(query: Query) -> list[Selector]:
    """Every vector selector of the query (the metric name from __name__ if need be)."""
    found: list[Selector] = []
    ops = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = tuple(
                (m.name, ops[str(m.op).rsplit(".", 1)[-1]], m.value) for m in node.matchers.matchers
            )
            name = node.name or next(v for n, op, v in matchers if n == "__name__" and op == "=")
            found.append(Selector(name, tuple(m for m in matchers if m[0] != "__name__")))

    promql_parser.walk(promql(query), visit)
    return found
