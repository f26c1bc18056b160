"""A memory hog for real-kernel tests and benchmarks (run as a separate process).

    python hog.py TARGET_MIB RATE_MIB_PER_S

Waits for one line on stdin (so the parent can move it into a cgroup first),
then allocates and touches 1 MiB chunks at RATE up to TARGET, keeps them, and
sleeps until killed. Pacing sleeps are the hog's own business, not a test's.
"""

from __future__ import annotations

import sys
import time

CHUNK_BYTES = 1 << 20


def main() -> None:
    target_mib, rate_mib_s = int(sys.argv[1]), float(sys.argv[2])
    sys.stdin.readline()
    chunks: list[bytes] = []
    started = time.monotonic()
    for index in range(target_mib):
        chunks.append(b"\x01" * CHUNK_BYTES)  # written, so every page is charged
        due = started + (index + 1) / rate_mib_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
