"""Fixtures shared by every tier."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from memguard.fake import model, tree
from memguard.fake.tree import kill_and_reap


@pytest.fixture
def fake_tree(tmp_path: os.PathLike[str]) -> Iterator[tuple[str, list[tree.FakeContainer]]]:
    """The `memguard fake init` tree with its real sleeping processes."""
    root = os.path.join(tmp_path, "tree")
    containers = tree.build(root)
    try:
        yield root, containers
    finally:
        kill_and_reap(pid for c in containers for pid in c.pids)


@pytest.fixture
def empty_fake_root(tmp_path: os.PathLike[str]) -> str:
    """A fake tree root (marker only) for tests that make their own cgroups."""
    root = os.path.join(tmp_path, "tree")
    os.makedirs(root)
    with open(os.path.join(root, model.MARKER_FILE), "w") as file:
        file.write('{"version": 1, "processes": [], "containers": []}')
    return root
