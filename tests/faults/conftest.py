"""Fixtures of the fault matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from memguard.fake.tree import kill_and_reap
from testing.agentproc import FakeContainer, fake_container


@pytest.fixture
def make_fake_container() -> Iterator[Callable[[str, str, int], FakeContainer]]:
    """fake_container(root, relative, limit_bytes); its process is killed and reaped after."""
    made: list[FakeContainer] = []

    def make(root: str, relative: str, limit_bytes: int) -> FakeContainer:
        container = fake_container(root, relative, limit_bytes)
        made.append(container)
        return container

    yield make
    kill_and_reap(container.pid for container in made)
