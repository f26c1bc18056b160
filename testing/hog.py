"""A memory hog for real-kernel tests and benchmarks (run as a separate process).

    python hog.py TARGET_MIB RATE_MIB_PER_S [--progress]

Waits for one line on stdin (so the parent can move it into a cgroup first),
then allocates and touches 1 MiB chunks at RATE up to TARGET, keeps them, and
sleeps until killed. Pacing sleeps are the hog's own business, not a test's.
With --progress it prints "<chunks done> <time.time()> <cgroup usage bytes>"
after every chunk (benchmarks use it to tell when usage crossed a threshold).
"""

from __future__ import annotations

import sys
import time

CHUNK_BYTES = 1 << 20


def usage_file() -> str:
    """Our own cgroup's usage file (v2 memory.current, v1 memory.usage_in_bytes)."""
    with open("/proc/self/cgroup") as file:
        lines = [line.strip().split(":", 2) for line in file if line.strip()]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            return f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"
    path = next(path for hierarchy, _, path in lines if hierarchy == "0")
    return f"/sys/fs/cgroup{path}/memory.current"


def read_usage(path: str) -> int:
    with open(path) as file:
        return int(file.read())


def main() -> None:
    target_mib, rate_mib_s = int(sys.argv[1]), float(sys.argv[2])
    progress = "--progress" in sys.argv[3:]
    sys.stdin.readline()
    usage_path = usage_file() if progress else ""
    chunks: list[bytes] = []
    started = time.monotonic()
    for index in range(target_mib):
        chunks.append(b"\x01" * CHUNK_BYTES)  # written, so every page is charged
        if progress:
            print(index + 1, time.time(), read_usage(usage_path), flush=True)
        due = started + (index + 1) / rate_mib_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
