"""Fixtures for the Kubernetes tier: an emulated API server and a client loop."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from testing.kube.aioloop import AsyncioThread
from testing.kube.emulator import KubeEmulator


@pytest.fixture
def kube(tmp_path: pathlib.Path) -> Iterator[KubeEmulator]:
    """A running emulator on 127.0.0.1 with a kubeconfig at `kube.kubeconfig`."""
    with KubeEmulator() as emulator:
        emulator.write_kubeconfig(tmp_path)
        yield emulator


@pytest.fixture
def client_loop() -> Iterator[AsyncioThread]:
    """A separate asyncio loop thread for kubernetes-asyncio (as memguard's bridge has)."""
    loop = AsyncioThread("kube-client")
    loop.start()
    try:
        yield loop
    finally:
        loop.stop()
