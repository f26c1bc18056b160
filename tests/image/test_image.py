"""memguard's image: built here as `make image` builds it (packaging/build_image.py),
then run with podman as deploy/daemonset.yaml runs it (testing/podman.py).

Needs root, podman, runc and debootstrap (`make test` installs them: image-deps);
without them the tier fails, as CI must never skip it. A developer may skip it
explicitly with MEMGUARD_SKIP_IMAGE_TESTS=1. The image is built once for the
module under a tag of its own, removed afterwards (the cached base image stays).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import tomllib
import uuid
from collections.abc import Iterator

import pytest

from testing import podman
from testing.cgroups import CgroupTree

# The first test's setup builds the image: cold (debootstrap) 1-2 min here, more on a
# slow mirror; the build itself gives up after podman.BUILD_TIMEOUT_S.
pytestmark = [pytest.mark.image, pytest.mark.timeout(podman.BUILD_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    missing = podman.missing_prerequisite()
    if missing is not None:
        if os.environ.get("MEMGUARD_SKIP_IMAGE_TESTS") == "1":
            pytest.skip(f"image tier skipped on request: {missing}")
        pytest.fail(f"the image tier needs root, podman, runc and debootstrap: {missing}")
    tag = f"localhost/memguard-test-{uuid.uuid4().hex[:12]}:latest"
    podman.build(tag)
    try:
        yield tag
    finally:
        podman.remove_image(tag)


def run_in_image(image: str, *args: str, entrypoint: str | None = None) -> str:
    """`podman run --rm` of the image with no network and a 64 MiB memory limit."""
    flags = [*podman.ULIMITS, "--network=none", "--memory=64m"]
    flags += [f"--entrypoint={entrypoint}"] if entrypoint else []
    result = podman.podman("run", "--rm", *flags, image, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_image_runs_memguard_as_root_with_the_probe_beside_it(image: str) -> None:
    inspected = podman.podman("image", "inspect", image)
    assert inspected.returncode == 0, inspected.stderr
    [config] = [found["Config"] for found in json.loads(inspected.stdout)]
    assert config["Entrypoint"] == ["memguard"]
    assert config["Cmd"] == ["run"]
    assert config["User"] == "0"  # the cgroup control files it writes are root's, 0200
    assert run_in_image(image, "--help").startswith("usage: memguard")
    with (podman.ROOT / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    show = "import importlib.metadata as m, os, memguard._native; print(m.version('memguard'))"
    assert run_in_image(image, "-c", show, entrypoint="python3").split() == [version]
    assert run_in_image(image, "-u", entrypoint="id").strip() == "0"
    # the liveness probe, as an application's livenessProbe runs it, on a real limit
    probe = run_in_image(
        image, "-I", "-S", "/usr/local/bin/memguard-probe", "probe", "--verbose",
        entrypoint="python3",
    )  # fmt: skip
    assert "of limit 64.0MiB" in probe, probe


@pytest.mark.kernel
@pytest.mark.cgroup_v1_only
async def test_the_daemonset_container_kills_a_hog_in_a_real_container_cgroup(
    image: str, cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    run = await podman.guard_a_hog(image, cgroups, tmp_path)
    assert run.readyz.split()[0] == "200", run.readyz
    assert run.report["kind"] == "OomGuardKillContainer"  # the DaemonSet's --policy=container
    # the host's pid, seen through the host PID namespace, and killed by it
    assert [(v["pid"], v["killed"]) for v in run.report["victims"]] == [(run.hog_pid, True)]
    assert run.hog_returncode == -signal.SIGKILL
    assert run.oom_kills == 0
    assert run.exit_code == 0, "\n".join(run.log[-20:])
    assert any((podman.record(line) or {}).get("msg") == "memguard stopped" for line in run.log)
