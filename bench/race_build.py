"""The race benchmark's C programs (bench/c/), compiled at run time with the system cc.

Python cannot touch pages at the rate this CPU can (≈ 2.5 GiB/s here), and the
reference agent is the floor for any notification-driven agent only if nothing
but a few syscalls sits between its wake-up and its kill(2): both are C.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from dataclasses import dataclass

C_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")


@dataclass(frozen=True)
class Programs:
    """Paths of the compiled programs."""

    hog: str
    sleepers: str
    forkbomb: str
    ref_agent: str  # cgroup v1
    ref_agent_v2: str


def build(out_dir: str) -> Programs:
    """Compile every program into out_dir; a compiler error is fatal, with its output."""
    cc = shutil.which("cc")
    if cc is None:
        raise SystemExit("race: no `cc` on PATH: the benchmark's C programs cannot be built")
    names = [field.name for field in dataclasses.fields(Programs)]
    paths = {name: os.path.join(out_dir, name) for name in names}
    for name, path in paths.items():
        source = os.path.join(C_DIR, f"{name}.c")
        done = subprocess.run([cc, *CFLAGS, "-o", path, source], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"race: cc {source} failed:\n{done.stderr}")
    return Programs(**paths)
