"""A guard's pod: its overrides, the settings they make, and word of its changes.

The pod side (memguard.guarding.pods.OverridesSource; memguard.kube's pod cache)
tells of a changed pod from any thread; the guard hears of it on its trio thread
(its bell rings Wake.POD) and reads the overrides again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from memguard.guarding.pods import OverridesSource
from memguard.policy.effective import effective_settings
from memguard.policy.model import GuardSettings
from memguard.policy.overrides import ContainerOverrides
from memguard.policy.paths import ContainerRef


class PodWatch:
    """One container's overrides (memguard.io/... on its pod) and their changes."""

    def __init__(
        self,
        ref: ContainerRef,
        settings: GuardSettings,
        source: OverridesSource,
        ring: Callable[[], None],
    ) -> None:
        self._ref = ref
        self._base = settings  # every guard's, before this pod's overrides
        self._source = source
        self._ring = ring  # on the trio thread when the pod changed: wakes the guard
        self.overrides: ContainerOverrides | None = None
        self.settings = settings  # this container's (its pod's overrides applied)
        self._changed = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def ignore(self) -> bool:
        """The pod says memguard.io/ignore."""
        return self.overrides is not None and self.overrides.ignore

    def read(self) -> bool:
        """This container's settings from its pod's overrides; True when they changed."""
        overrides = self._source.overrides(self._ref)
        if overrides == self.overrides:
            return False
        self.overrides = overrides
        self.settings = effective_settings(self._base, overrides)
        return True

    def subscribe(self) -> None:
        """Be told of the pod's changes (on the trio thread that calls this)."""
        self._token = trio.lowlevel.current_trio_token()
        self._source.subscribe(self._on_change)

    def unsubscribe(self) -> None:
        self._source.unsubscribe(self._on_change)

    async def changed_within(self, timeout_s: float) -> None:
        """Until the pod changes, at most timeout_s."""
        self._changed = trio.Event()
        with trio.move_on_after(timeout_s):
            await self._changed.wait()

    def _on_change(self, pod_uid: str | None) -> None:
        """The pod side says a pod changed (any thread): wake the guard if it is ours."""
        if pod_uid is not None and pod_uid != self._ref.pod_uid:
            return
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._changed_now)

    def _changed_now(self) -> None:
        self._changed.set()
        self._ring()
