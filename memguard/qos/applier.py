"""Memory QoS classes and direct annotations, applied to guarded containers.

The guard supervisor tells (ContainerListener) when a container's guard arms
(it appeared, or its limit changed) and when it is gone; the pods come from a
PodSource (the pod cache when Kubernetes is on), which also says when a pod
changed (its annotations, or the container ids in its status). One task
recomputes the plan (memguard.policy.qos) of each container marked dirty and
writes what differs from what it wrote before, in a worker thread: writing
memory.high under the usage makes the writer reclaim. A setting memguard wrote
and no longer wants is put back to the value it found, if nobody changed it
since. Warnings (an unknown class, a file not allow-listed, a value the kernel
refuses) go out once per pod and problem; on cgroup v1 "not supported" goes
out once per pod. With --dry-run nothing is written: the report says "would set".

memory.high is also the v2 tripwire's (memguard.backends.v2): before writing
it, memory QoS claims the cgroup's memory.high from a backend that can be told
(MemoryHighClaims) - already when the guard is about to arm, if the pod is
known then - and releases it when its plan no longer sets it or the
container is gone. With --high-tripwire auto the tripwire then stays off (or
goes, "max" back, before memory QoS reads what to put back later).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import trio

from memguard.backends.base import Backend
from memguard.components import Changes
from memguard.errors import KernelError
from memguard.kernel.names import HIGH_FILE
from memguard.policy.paths import ContainerRef
from memguard.policy.qos import QosConfig, QosPlan, plan_memory_qos
from memguard.reports.report import Report, ReportKind
from memguard.units import format_size

log = logging.getLogger(__name__)

POLICY_NAME = "memory-qos"
_UNSUPPORTED = "\0v1"  # marks a pod told that cgroup v1 has no memory QoS


PodListener = Callable[[str | None], None]


class PodSource(Protocol):
    """Where memory QoS learns pods (the pod cache implements it)."""

    def container_view(
        self, pod_uid: str | None, container_id: str | None
    ) -> tuple[str, Mapping[str, str]] | None:
        """(the container's name, its pod's annotations), or None while unknown."""
        ...

    def subscribe(self, listener: PodListener) -> None:
        """Call listener(pod_uid) when a pod changes (None: maybe all); from any thread."""
        ...

    def unsubscribe(self, listener: PodListener) -> None: ...


@runtime_checkable
class MemoryHighClaims(Protocol):
    """A backend that wants to know who manages memory.high (the v2 tripwire's)."""

    def claim_memory_high(self, cgroup_dir: str) -> None: ...

    def release_memory_high(self, cgroup_dir: str) -> None: ...


@dataclass
class _Tracked:
    ref: ContainerRef
    limit_bytes: int | None
    # file -> (the value memguard wrote, the value it found there before)
    written: dict[str, tuple[str, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Outcome:
    written: Mapping[str, tuple[str, str | None]]
    restored: tuple[str, ...]
    errors: tuple[str, ...]
    failed: frozenset[str]  # files whose write was refused or impossible
    gone: bool


class MemoryQos:
    component = "memory-qos"  # a ContainerListener (memguard.guarding.supervisor)

    def __init__(
        self,
        config: QosConfig,
        backend: Backend,
        publish: Callable[[Report], None],
        page_bytes: int,
        dry_run: bool = False,
        pods: PodSource | None = None,
    ) -> None:
        self.config = config
        self.pods = pods  # None: Kubernetes is off, nothing can be applied
        self._backend = backend
        self._claims = backend if isinstance(backend, MemoryHighClaims) else None
        self._publish = publish
        self._page_bytes = page_bytes
        self._dry_run = dry_run
        self._tracked: dict[str, _Tracked] = {}
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self.changes = Changes()  # moves when every container marked so far was looked at
        self._busy = False
        self._said: dict[str, set[str]] = {}  # pod uid -> warnings already reported
        self._token: trio.lowlevel.TrioToken | None = None
        self.applied = 0  # containers whose settings were written (tests, metrics)

    # -- inputs -------------------------------------------------------------------------

    def container_seen(self, cgroup_dir: str, ref: ContainerRef, limit_bytes: int | None) -> None:
        """A guard armed: the cgroup is new or its limit changed."""
        tracked = self._tracked.get(cgroup_dir)
        if tracked is None:
            tracked = self._tracked[cgroup_dir] = _Tracked(ref, limit_bytes)
        else:
            tracked.limit_bytes = limit_bytes
        if self._claims is not None and not self._dry_run:
            plan = self._plan(tracked)  # the pod may be known already
            if plan is not None and not plan.problems and HIGH_FILE in plan.writes:
                self._claim_high(cgroup_dir)  # before the guard arms: no tripwire first
        self._mark(cgroup_dir)

    def container_gone(self, cgroup_dir: str) -> None:
        tracked = self._tracked.pop(cgroup_dir, None)
        self._dirty.discard(cgroup_dir)
        if self._claims is not None:
            self._claims.release_memory_high(cgroup_dir)
        uid = tracked.ref.pod_uid if tracked else None
        if uid is not None and not any(t.ref.pod_uid == uid for t in self._tracked.values()):
            self._said.pop(uid, None)

    def pod_changed(self, pod_uid: str | None) -> None:
        """On trio: a pod changed (None: maybe all of them)."""
        for cgroup_dir, tracked in self._tracked.items():
            if pod_uid is None or tracked.ref.pod_uid == pod_uid:
                self._mark(cgroup_dir)

    def pod_changed_threadsafe(self, pod_uid: str | None) -> None:
        """From the pod cache's thread: hand the change over to trio."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self.pod_changed, pod_uid)

    def _mark(self, cgroup_dir: str) -> None:
        self._dirty.add(cgroup_dir)
        self._wake.set()

    def _plan(self, tracked: _Tracked) -> QosPlan | None:
        """The container's plan, or None while its pod (or its name) is unknown."""
        if self.pods is None:
            return None
        view = self.pods.container_view(tracked.ref.pod_uid, tracked.ref.container_id)
        if view is None:
            return None
        container_name, annotations = view
        return plan_memory_qos(
            annotations, container_name, tracked.limit_bytes, self._page_bytes, self.config
        )

    def _claim_high(self, cgroup_dir: str) -> None:
        if self._claims is not None and not self._dry_run:  # a dry run writes nothing
            self._claims.claim_memory_high(cgroup_dir)

    # -- the task -----------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Every container marked so far has been looked at."""
        return not self._dirty and not self._busy

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        if self.pods is not None:
            self.pods.subscribe(self.pod_changed_threadsafe)
        self._wake.set()  # a restart looks at everything marked before
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                self._busy = True
                while self._dirty:
                    await self._apply(self._dirty.pop())
                self._busy = False
                self.changes.notify()
        finally:
            self._busy = False
            if self.pods is not None:
                self.pods.unsubscribe(self.pod_changed_threadsafe)
            self._token = None

    async def _apply(self, cgroup_dir: str) -> None:
        tracked = self._tracked.get(cgroup_dir)
        plan = None if tracked is None else self._plan(tracked)
        if tracked is None or plan is None:
            return  # not known yet (or not in the pod's status yet): the pods say when
        if plan.problems:
            self._warn_once(cgroup_dir, tracked, ReportKind.QOS_INVALID, plan.problems)
            return
        if not self._backend.unified_settings:
            if plan.writes:
                self._unsupported_once(cgroup_dir, tracked, plan)
            return
        changes = {
            file: value
            for file, value in plan.writes.items()
            if tracked.written.get(file, ("", None))[0] != value
        }
        stale = {f: w for f, w in tracked.written.items() if f not in plan.writes}
        if HIGH_FILE in plan.writes:
            self._claim_high(cgroup_dir)  # the tripwire (auto) goes before "found" is read
        elif HIGH_FILE not in stale and self._claims is not None:
            self._claims.release_memory_high(cgroup_dir)  # nothing of ours to put back
        if not changes and not stale:
            return
        if self._dry_run:
            self._remember_dry_run(cgroup_dir, tracked, plan, changes, stale)
            return
        await self._write(cgroup_dir, tracked, plan, changes, stale)

    def _remember_dry_run(
        self,
        cgroup_dir: str,
        tracked: _Tracked,
        plan: QosPlan,
        changes: Mapping[str, str],
        stale: Mapping[str, tuple[str, str | None]],
    ) -> None:
        """A dry run: remember what would be set, so it is said once."""
        for file in stale:
            tracked.written.pop(file, None)
        tracked.written.update({f: (v, None) for f, v in changes.items()})
        if changes:
            self._report_applied(cgroup_dir, tracked, plan, changes, (), "would set memory QoS")

    async def _write(
        self,
        cgroup_dir: str,
        tracked: _Tracked,
        plan: QosPlan,
        changes: Mapping[str, str],
        stale: Mapping[str, tuple[str, str | None]],
    ) -> None:
        """Write the changes and put stale settings back (in a worker thread), then
        remember what was written and report it."""
        outcome = await trio.to_thread.run_sync(
            _write_all, self._backend, cgroup_dir, changes, dict(tracked.written), stale,
            abandon_on_cancel=True,
        )  # fmt: skip
        if outcome.gone or self._tracked.get(cgroup_dir) is not tracked:
            return
        for file in stale:
            tracked.written.pop(file, None)
        if HIGH_FILE in stale and self._claims is not None:
            self._claims.release_memory_high(cgroup_dir)  # put back: the tripwire's again
        tracked.written.update(outcome.written)
        if outcome.errors:
            self._warn_once(cgroup_dir, tracked, ReportKind.QOS_INVALID, outcome.errors)
        done = {f: v for f, v in changes.items() if f not in outcome.failed}
        if done or outcome.restored:
            self.applied += 1
            action = "set memory QoS"
            self._report_applied(cgroup_dir, tracked, plan, done, outcome.restored, action)

    # -- reports ------------------------------------------------------------------------

    def _report(
        self, kind: ReportKind, cgroup_dir: str, tracked: _Tracked, action: str, reason: str
    ) -> None:
        self._publish(
            Report(
                kind=kind,
                cgroup=cgroup_dir,
                ref=tracked.ref,
                usage_bytes=0,
                limit_bytes=tracked.limit_bytes,
                threshold_bytes=None,
                policy=POLICY_NAME,
                action=action,
                reason=reason,
                dry_run=self._dry_run,
                wall_time_s=time.time(),
            )
        )

    def _report_applied(
        self,
        cgroup_dir: str,
        tracked: _Tracked,
        plan: QosPlan,
        done: Mapping[str, str],
        restored: tuple[str, ...],
        action: str,
    ) -> None:
        limit = tracked.limit_bytes
        parts = [f"{file}={_describe(file, value, limit)}" for file, value in done.items()]
        parts += [f"{file} put back" for file in restored]
        if plan.class_name:
            parts.append(f"class {plan.class_name}")
        parts += plan.notes
        self._report(ReportKind.QOS_APPLIED, cgroup_dir, tracked, action, ", ".join(parts))

    def _warn_once(
        self,
        cgroup_dir: str,
        tracked: _Tracked,
        kind: ReportKind,
        problems: tuple[str, ...],
        key: str | None = None,
    ) -> None:
        """Report the problems the pod was not told yet (each, or once per key)."""
        said = self._said.setdefault(tracked.ref.pod_uid or cgroup_dir, set())
        fresh = [p for p in problems if (key or p) not in said]
        if fresh:
            said.update([key] if key else fresh)
            reason = "; ".join(fresh)
            self._report(kind, cgroup_dir, tracked, "memory QoS not applied", reason)

    def _unsupported_once(self, cgroup_dir: str, tracked: _Tracked, plan: QosPlan) -> None:
        """Once per pod, whatever its class becomes."""
        files = ", ".join(plan.writes)
        of_class = f" (class {plan.class_name})" if plan.class_name else ""
        reason = f"cgroup v1 has no equivalent of {files}{of_class}; the pod runs without them"
        kind = ReportKind.QOS_UNSUPPORTED
        self._warn_once(cgroup_dir, tracked, kind, (reason,), key=_UNSUPPORTED)


def _describe(file: str, value: str, limit_bytes: int | None) -> str:
    if file == HIGH_FILE and value.isdigit():
        share = f", {int(value) / limit_bytes:.0%} of the limit" if limit_bytes else ""
        return f"{value} ({format_size(int(value))}{share})"
    return value


def _write_all(
    backend: Backend,
    cgroup_dir: str,
    changes: Mapping[str, str],
    written: Mapping[str, tuple[str, str | None]],
    stale: Mapping[str, tuple[str, str | None]],
) -> _Outcome:
    """In a worker thread: write the changes, put stale settings back."""
    done: dict[str, tuple[str, str | None]] = {}
    restored: list[str] = []
    errors: list[str] = []
    failed: set[str] = set()
    for file, value in changes.items():
        original = written[file][1] if file in written else backend.read_setting(cgroup_dir, file)
        done[file] = (value, original)  # remembered even when refused: not retried each update
        try:
            if not backend.write_setting(cgroup_dir, file, value):
                if not backend.exists(cgroup_dir):
                    return _Outcome(done, (), (), frozenset(), gone=True)
                failed.add(file)
                errors.append(f"{file}: this kernel has no {file} in the cgroup")
        except KernelError as error:
            failed.add(file)
            errors.append(f"{file}: the kernel refused {value!r} ({error})")
    for file, (value, original) in stale.items():
        if original is None or backend.read_setting(cgroup_dir, file) != value:
            continue  # nothing to put back, or somebody else changed it since
        try:
            if backend.write_setting(cgroup_dir, file, original):
                restored.append(file)
        except KernelError as error:
            errors.append(f"{file}: the kernel refused {original!r} ({error})")
    return _Outcome(done, tuple(restored), tuple(errors), frozenset(failed), gone=False)
