"""API-server rules that kmock does not implement, as pure functions.

The emulator (testing/kube/apiserver.py) applies these so that memguard is tested
against the real server's documented behaviour, not against kmock's leniency:

- strict schema checks with kubernetes-validate (unknown fields, wrong types);
- the semantic Event validation of kube-apiserver
  (pkg/apis/core/validation/events.go: ValidateEventCreate/ValidateEventUpdate);
- MicroTime/Time wire formats (a bad one is a 400 decode error on a real server:
  MicroTime parses with "2006-01-02T15:04:05.000000Z07:00", exactly 6 digits);
- field selectors with the per-resource field labels the server supports.

No I/O beyond reading the schemas shipped inside kubernetes-validate.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
from kubernetes_validate import utils as kv_utils

# The Kubernetes minor whose schemas we validate against (kubernetes-validate
# 1.37 ships 1.25 ... 1.37). Keep in step with the oldest cluster we support.
SCHEMA_VERSION = "1.30"

EVENTS_V1 = "events.k8s.io/v1"
CORE_V1 = "v1"

# pkg/apis/core/validation/events.go
REPORTING_INSTANCE_LIMIT = 128
ACTION_LIMIT = 128
REASON_LIMIT = 128
NOTE_LIMIT_BYTES = 1024  # Go len(): bytes, not characters

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


class SchemaError(Exception):
    """The object does not match the official OpenAPI schema (strict)."""


# --- strict schema ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _validator(kind: str, api_version: str, version: str) -> jsonschema.Draft202012Validator:
    # kubernetes_validate.validate() re-reads ~1.3 MB of JSON per call (~20 ms);
    # this builds the same validator once per kind, from the same files.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{version}.0-local-strict"
    schema = kv_utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    definitions = kv_utils.schema_contents(f"{folder}/_definitions.json", version)
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (schema["$id"], referencing.Resource.from_contents(schema)),
            (definitions["$id"], referencing.Resource.from_contents(definitions)),
        ]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def check_schema(obj: Mapping[str, Any], version: str = SCHEMA_VERSION) -> None:
    """Raise SchemaError unless obj matches its kind's strict schema."""
    try:
        validator = _validator(str(obj["kind"]), str(obj["apiVersion"]), version)
    except (KeyError, FileNotFoundError, kubernetes_validate.SchemaNotFoundError) as exc:
        raise SchemaError(f"no schema for {obj.get('apiVersion')}/{obj.get('kind')}") from exc
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(obj)))
    if error is not None:
        path = ".".join(str(part) for part in error.absolute_path)
        raise SchemaError(f"{path or '<root>'}: {error.message}")


# --- Event semantics -------------------------------------------------------------------------

_V1_TO_INTERNAL = {  # events.k8s.io/v1 name -> internal (core) name
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_CORE_TO_INTERNAL = {"reportingComponent": "reportingController"}
_IMMUTABLE = (
    "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp",
    "count", "type", "eventTime", "action", "related", "reportingController",
    "reportingInstance",
)  # fmt: skip


def internal_event(obj: Mapping[str, Any], api_version: str) -> dict[str, Any]:
    """The internal core.Event field names, as the server validates them."""
    renames = _V1_TO_INTERNAL if api_version == EVENTS_V1 else _CORE_TO_INTERNAL
    out = {renames.get(key, key): value for key, value in obj.items()}
    out["namespace"] = (obj.get("metadata") or {}).get("namespace") or ""
    return out


def kubectl_view(obj: Mapping[str, Any], api_version: str) -> dict[str, Any]:
    """The core/v1 rendering of an Event, as `kubectl get events` reads it.

    Both groups are one storage on a real server; memguard's events.k8s.io/v1
    posts are what users see through core/v1.
    """
    event = internal_event(obj, api_version)
    event.pop("namespace")
    if "reportingController" in event:
        event["reportingComponent"] = event.pop("reportingController")
    event.update(apiVersion=CORE_V1, kind="Event")
    return event


def _unset(value: Any) -> bool:
    # Go zero values: nil, "", 0, and an EventSource with neither component nor host.
    if isinstance(value, Mapping):
        return not any(value.get(key) for key in ("component", "host"))
    return value is None or value == "" or value == 0


def _time_errors(event: Mapping[str, Any]) -> list[str]:
    errors = []
    micro = {"eventTime": event.get("eventTime")}
    micro["series.lastObservedTime"] = (event.get("series") or {}).get("lastObservedTime")
    for name, value in micro.items():
        if value is not None and not _MICRO_TIME.fullmatch(str(value)):
            errors.append(f"{name}: {value!r} is not RFC3339 with exactly 6 fractional digits")
    for name in ("firstTimestamp", "lastTimestamp"):
        value = event.get(name)
        if value is not None and not _TIME.fullmatch(str(value)):
            errors.append(f"{name}: {value!r} is not RFC3339")
    return errors


def decode_errors(obj: Mapping[str, Any], api_version: str) -> list[str]:
    """Wire-format errors: a real server answers 400 BadRequest to these."""
    return _time_errors(internal_event(obj, api_version))


def _legacy_errors(event: Mapping[str, Any]) -> list[str]:
    errors = []
    namespace = event["namespace"]
    regarding_ns = (event.get("involvedObject") or {}).get("namespace") or ""
    if _unset(event.get("eventTime")):
        if regarding_ns == "" and namespace not in ("", "default"):
            errors.append("involvedObject.namespace: does not match event.namespace")
        if regarding_ns != "" and namespace != regarding_ns:
            errors.append("involvedObject.namespace: does not match event.namespace")
    else:
        if regarding_ns == "" and namespace not in ("default", "kube-system"):
            errors.append("involvedObject.namespace: does not match event.namespace")
        controller = event.get("reportingController") or ""
        if not controller:
            errors.append("reportingController: Required value")
        elif not is_qualified_name(controller):
            errors.append(f"reportingController: {controller!r} is not a qualified name")
        for name, limit in (
            ("reportingInstance", REPORTING_INSTANCE_LIMIT),
            ("action", ACTION_LIMIT),
            ("reason", REASON_LIMIT),
        ):
            value = event.get(name) or ""
            if not value:
                errors.append(f"{name}: Required value")
            if len(value) > limit:
                errors.append(f"{name}: can have at most {limit} characters")
        if len((event.get("message") or "").encode()) > NOTE_LIMIT_BYTES:
            errors.append(f"message: can have at most {NOTE_LIMIT_BYTES} characters")
    if not _DNS_SUBDOMAIN.fullmatch(namespace) or len(namespace) > 253:
        errors.append(f"namespace: {namespace!r} is not a DNS-1123 subdomain")
    return errors


def _series_errors(event: Mapping[str, Any]) -> list[str]:
    series = event.get("series")
    if series is None:
        return []
    errors = []
    if (series.get("count") or 0) < 2:
        errors.append("series.count: should be at least 2")
    if _unset(series.get("lastObservedTime")):
        errors.append("series.lastObservedTime: Required value")
    return errors


def event_create_errors(obj: Mapping[str, Any], api_version: str) -> list[str]:
    """ValidateEventCreate: legacy rules for v1, strict ones for events.k8s.io/v1."""
    event = internal_event(obj, api_version)
    errors = _legacy_errors(event)
    if api_version != EVENTS_V1:
        return errors
    name = (obj.get("metadata") or {}).get("name") or ""
    if not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    errors += _series_errors(event)
    if _unset(event.get("eventTime")):
        errors.append("eventTime: Required value")
    if event.get("type") not in ("Normal", "Warning"):
        errors.append(f"type: has invalid value: {event.get('type')}")
    for unset in ("firstTimestamp", "lastTimestamp", "count", "source"):
        if not _unset(event.get(unset)):
            errors.append(f"{unset}: needs to be unset")
    return errors


def event_update_errors(
    new: Mapping[str, Any], old: Mapping[str, Any], api_version: str
) -> list[str]:
    """ValidateEventUpdate: events.k8s.io/v1 may change little more than series."""
    new_event = internal_event(new, api_version)
    errors = _legacy_errors(new_event)
    if api_version != EVENTS_V1:
        return errors
    old_event = internal_event(old, api_version)
    if new_event.get("series") != old_event.get("series"):
        errors += _series_errors(new_event)
    for name in _IMMUTABLE:
        if new_event.get(name) != old_event.get(name):
            errors.append(f"{name}: field is immutable")
    return errors


def is_qualified_name(value: str) -> bool:
    prefix, _, name = value.rpartition("/")
    if prefix and (not _DNS_SUBDOMAIN.fullmatch(prefix) or len(prefix) > 253):
        return False
    return len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None


# --- field selectors -------------------------------------------------------------------------

_META_FIELDS = ("metadata.name", "metadata.namespace")
_REF_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_EVENT_FIELDS = (
    *_META_FIELDS, *(f"involvedObject.{f}" for f in _REF_FIELDS),
    "reason", "reportingComponent", "source", "type",
)  # fmt: skip
# The field labels kube-apiserver accepts per resource (pkg/registry/*/strategy.go).
FIELD_LABELS: Mapping[str, tuple[str, ...]] = {
    "v1/pods": (
        *_META_FIELDS, "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
        "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
        "status.nominatedNodeName",
    ),
    "v1/nodes": (*_META_FIELDS, "spec.unschedulable"),
    "v1/events": _EVENT_FIELDS,
    "events.k8s.io/v1/events": (
        *_EVENT_FIELDS, *(f"regarding.{f}" for f in _REF_FIELDS), "reportingController",
    ),
}  # fmt: skip
_EVENTS_V1_ALIASES = {f"regarding.{f}": f"involvedObject.{f}" for f in _REF_FIELDS} | {
    "reportingController": "reportingComponent",
}

Predicate = Callable[[Mapping[str, Any]], bool]


class SelectorError(ValueError):
    """A selector the real server would reject with 400 BadRequest."""


def field_selector(resource: str, selector: str) -> Predicate:
    """Parse `a=b,c!=d` into a predicate over raw objects (in resource's own shape)."""
    allowed = FIELD_LABELS.get(resource, _META_FIELDS)
    terms: list[tuple[str, str, bool]] = []
    for term in filter(None, selector.split(",")):
        match = re.fullmatch(r"([^!=]+)(==|=|!=)(.*)", term)
        if match is None:
            raise SelectorError(f"invalid selector: {term!r}")
        label, operator, value = match.groups()
        if label not in allowed:
            raise SelectorError(f"field label not supported: {label}")
        terms.append((label, value, operator != "!="))
    core_view = resource == "events.k8s.io/v1/events"

    def matches(obj: Mapping[str, Any]) -> bool:
        view = kubectl_view(obj, EVENTS_V1) if core_view else obj
        return all(
            (_field(view, _EVENTS_V1_ALIASES.get(label, label)) == value) == equal
            for label, value, equal in terms
        )

    return matches


def label_selector(selector: str) -> Predicate:
    """Equality-based label selectors (`a=b,c!=d,e,!f`); set-based ones are not emulated."""
    terms: list[tuple[str, str | None, bool]] = []
    for term in filter(None, (part.strip() for part in selector.split(","))):
        match = re.fullmatch(r"(!?)([-A-Za-z0-9_./]+)(?:(==|=|!=)([-A-Za-z0-9_.]*))?", term)
        if match is None:
            raise SelectorError(f"label selector not emulated: {term!r}")
        negated, key, operator, value = match.groups()
        if negated and operator:
            raise SelectorError(f"invalid label selector: {term!r}")
        terms.append((key, value, not negated and operator != "!="))

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(
            (key in labels if value is None else labels.get(key) == value) == wanted
            for key, value, wanted in terms
        )

    return matches


def _field(obj: Mapping[str, Any], label: str) -> str:
    # An absent field selects as its zero value ("" / "false"), like the server.
    value: Any = obj
    for part in ("source.component" if label == "source" else label).split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "false" if label in ("spec.hostNetwork", "spec.unschedulable") else ""
    return str(value)


# --- eviction and PodDisruptionBudgets (pkg/registry/core/pod/storage/eviction.go) ----------

PDB_VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector as a PDB has it: None selects nothing, {} everything."""
    if selector is None:
        return False
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(operator)
        if not held:
            return False
    return True


def disruption_budgets(
    pdbs: Sequence[Mapping[str, Any]], pod: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The PodDisruptionBudgets of the pod's namespace that select it."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    return [
        pdb
        for pdb in pdbs
        if (pdb.get("metadata") or {}).get("namespace") == meta.get("namespace")
        and selector_matches((pdb.get("spec") or {}).get("selector"), labels)
    ]


def pdb_refusal(pdb: Mapping[str, Any]) -> dict[str, Any]:
    """The 429 Status the server answers while a PDB allows no disruption."""
    status = pdb.get("status") or {}
    cause = (
        f"The disruption budget {pdb['metadata']['name']} needs "
        f"{status.get('desiredHealthy', 0)} healthy pods and has "
        f"{status.get('currentHealthy', 0)} currently"
    )
    return failure_status(
        429, "TooManyRequests", PDB_VIOLATION, [{"reason": "DisruptionBudget", "message": cause}]
    )


def failure_status(
    code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }  # fmt: skip
    if causes:
        status["details"] = {"causes": causes}
    return status


def success_status(code: int) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code}


def delete_options_errors(options: object) -> list[str]:
    """Schema errors of a DeleteOptions (it has no schema file of its own: checked as
    an Eviction's deleteOptions, which is the same type)."""
    if options is None:
        return []
    if not isinstance(options, dict):
        return ["DeleteOptions: not a JSON object"]
    wrapper = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "x"}}
    try:
        check_schema({**wrapper, "deleteOptions": options})
    except SchemaError as exc:
        return [str(exc)]
    return []
