"""The wheel the Dockerfile's build stage makes: it carries the compiled module."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_wheel_builds_with_its_compiled_cffi_module(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("memguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("memguard/_native") and n.endswith(".so") for n in names)
    assert {"memguard/cli/main.py", "memguard/cli/entry.py", "memguard/probe/__init__.py"} <= set(
        names
    )
    # nothing stale (a module that moved away) or foreign in it: every source is ours
    sources = [n for n in names if n.endswith(".py")]
    assert all((ROOT / source).is_file() for source in sources), sources
    assert not any(n.startswith(("tests/", "testing/", "bench/")) for n in names)
