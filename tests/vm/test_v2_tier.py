"""The real-kernel tier on cgroup v2: tests/kernel, run inside one VM boot.

This host's memory controller is bound to cgroup v1, so a virtme-ng VM (the
host's own userspace, Debian's kernel, QEMU TCG) runs the same real-kernel
tests against cgroup v2 (MEMGUARD_TEST_CGROUP_VERSION=2). A VM that cannot
boot, or missing tools, fail this test loudly: `make test` installs them.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from testing.run_in_vm import run_in_vm_result

ROOT = pathlib.Path(__file__).resolve().parents[2]
KERNEL_TESTS = ROOT / "tests" / "kernel"


def _expected_test_count() -> int:
    """The test ids pytest collects from tests/kernel here (parametrized cases each)."""
    command = [sys.executable, "-m", "pytest", str(KERNEL_TESTS), "--collect-only", "-q"]
    collected = subprocess.run(
        [*command, "-p", "no:cacheprovider"],
        env={**os.environ, "MEMGUARD_TEST_CGROUP_VERSION": "2"},  # v1-only tests left out
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    count = sum("::" in line for line in collected.splitlines())
    assert count > 0, collected
    return count


@pytest.mark.timeout(1800)
def test_the_real_kernel_tier_passes_on_cgroup_v2(tmp_path: pathlib.Path) -> None:
    junit = tmp_path / "junit.xml"
    command = (
        f"cd {ROOT} && MEMGUARD_TEST_CGROUP_VERSION=2 PYTHONDONTWRITEBYTECODE=1 "
        f"{ROOT}/.venv/bin/python -m pytest tests/kernel -q -p no:cacheprovider "
        f"--basetemp=/tmp/memguard-pytest -o timeout=900 --junitxml={junit}"
    )
    result = run_in_vm_result(command, str(tmp_path), memory_mib=1536, timeout_s=1500, capture=True)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, output[-6000:]
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    assert int(suite.get("tests", "0")) == _expected_test_count(), output[-3000:]
    for counter in ("failures", "errors", "skipped"):
        assert suite.get(counter) == "0", output[-3000:]
