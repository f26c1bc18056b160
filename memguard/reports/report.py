"""What memguard tells the world: one frozen Report per decision that matters.

A Report carries the numbers; sinks (log, metrics, Kubernetes Events) render it.
`message()` is the one readable line (at most 1 KiB) every sink shares.
"""

from __future__ import annotations

__all__ = ["MESSAGE_MAX_BYTES", "QOS_KINDS", "Report", "ReportKind", "Victim"]

import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

from memguard.policy.kinds import ReportKind
from memguard.policy.paths import ContainerRef
from memguard.units import format_size

MESSAGE_MAX_BYTES = 1024
_UNPRINTABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})


QOS_KINDS = frozenset({ReportKind.QOS_APPLIED, ReportKind.QOS_INVALID, ReportKind.QOS_UNSUPPORTED})
# Reports about something else than a memory emergency: no usage figures in the message.
_WITHOUT_FIGURES = QOS_KINDS | {ReportKind.PARENT_MISSING, ReportKind.BAD_ANNOTATION}


@dataclass(frozen=True, slots=True)
class Victim:
    pid: int
    comm: str
    oom_score: int
    rss_bytes: int
    killed: bool  # False: already gone, or dry run


@dataclass(frozen=True, slots=True)
class Report:
    kind: ReportKind
    cgroup: str
    ref: ContainerRef
    usage_bytes: int
    limit_bytes: int | None
    threshold_bytes: int | None
    policy: str
    action: str  # what was done, in words: "flushed", "killed", "would kill", ...
    reason: str = ""
    dry_run: bool = False
    cache_before_bytes: int | None = None
    cache_after_bytes: int | None = None
    usage_after_bytes: int | None = None
    victims: tuple[Victim, ...] = ()
    survivors: int = 0  # processes left in the cgroup after a container kill
    oom_kills: int = 0  # kernel OOM kills seen (CgroupOOM)
    duration_s: float = 0.0  # time spent acting (flush + kill)
    latency_s: float | None = None  # kernel notification -> SIGKILL issued
    woke_by: str = ""  # what woke the guard: kernel, events, psi, poll, timeout, ...
    wall_time_s: float = 0.0  # time.time() when it happened (Kubernetes eventTime)
    extra: dict[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """Flat, JSON-ready fields (sizes in bytes, names as strings)."""
        data = asdict(self)
        ref = data.pop("ref")
        data["kind"] = self.kind.value
        data.update(pod_uid=ref["pod_uid"], container_id=ref["container_id"])
        data.update(qos_class=ref["qos_class"], runtime=ref["runtime"])
        return data

    def message(self) -> str:
        """One readable line with the numbers, at most MESSAGE_MAX_BYTES.

        The numbers come first and the cgroup path last, so a very long path is
        what gets shortened (from its start: the container id at its end stays).
        Control characters (a process may name itself "a\nb") become '?'.
        """
        if self.kind in _WITHOUT_FIGURES:  # settings, a missing parent: no usage figures
            head = _truncate(_printable(f"{self.action}; {self.reason}"), MESSAGE_MAX_BYTES - 64)
            if not self.cgroup:  # about a pod, not one cgroup (a bad annotation)
                return head
        else:
            head = _truncate(_printable("; ".join(self._figures())), MESSAGE_MAX_BYTES - 64)
        room = MESSAGE_MAX_BYTES - len(head.encode()) - len("; cgroup ")
        return f"{head}; cgroup {_keep_tail(_printable(self.cgroup), room)}"

    def _figures(self) -> list[str]:
        """A memory emergency's message parts: the action, the sizes, the victims,
        the policy and the reason."""
        usage = f"usage {format_size(self.usage_bytes)}"
        if self.usage_after_bytes is not None:
            usage += f" -> {format_size(self.usage_after_bytes)}"
        parts = [
            self.action,
            usage,
            f"limit {format_size(self.limit_bytes)}",
            f"threshold {format_size(self.threshold_bytes)}",
        ]
        if self.cache_before_bytes is not None:
            cache = f"cache {format_size(self.cache_before_bytes)}"
            if self.cache_after_bytes is not None:
                cache += f" -> {format_size(self.cache_after_bytes)}"
            parts.append(cache)
        if self.victims:
            parts.append("victims " + ", ".join(_victim_text(v) for v in self.victims[:8]))
            if len(self.victims) > 8:
                parts.append(f"and {len(self.victims) - 8} more")
        if self.survivors:
            parts.append(f"{self.survivors} protected processes left")
        if self.oom_kills:
            parts.append(f"kernel OOM kills {self.oom_kills}")
        parts.append(f"policy {self.policy}")
        if self.reason:
            parts.append(self.reason)
        return parts


def _printable(text: str) -> str:
    """Text safe for one log line: control and unpaired surrogate characters -> '?'."""
    cleaned = "".join("?" if unicodedata.category(c) in _UNPRINTABLE else c for c in text)
    return cleaned


def _victim_text(victim: Victim) -> str:
    return f"{victim.pid}/{victim.comm} (oom_score {victim.oom_score})"


def _keep_tail(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return "..." + encoded[len(encoded) - max_bytes + 3 :].decode(errors="ignore")


def _truncate(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode(errors="ignore") + "..."
