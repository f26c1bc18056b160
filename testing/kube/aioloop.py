"""The tests' asyncio loop thread is memguard's own bridge (one implementation)."""

from __future__ import annotations

from memguard.kube.bridge import AsyncioBridge as AsyncioThread

__all__ = ["AsyncioThread"]
