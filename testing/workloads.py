"""Workloads for the race tests (run as a separate process, like hog.py).

    python workloads.py cache-then-anon CACHE_MIB DIR TARGET_MIB
    python workloads.py many CHILDREN TARGET_MIB RATE_MIB_PER_S
    python workloads.py forkbomb CHILD_MIB INTERVAL_S MAX_FORKS
    python workloads.py fill-then-forkbomb FILL_MIB CHILD_MIB INTERVAL_S MAX_FORKS
    python workloads.py on-sigterm exit|ignore MARKER TARGET_MIB RATE_MIB_PER_S

Started through testing.cgroups.CgroupTree.spawn (which holds it until .go(),
once it is in its cgroup), each prints "started" once it runs, then:
- cache-then-anon: writes CACHE_MIB of page cache to a file in DIR (fsync'd:
  clean cache), then allocates TARGET_MIB of anonymous memory as fast as it
  can touch it - the workload that made memguard flush on its kill path;
- many: forks CHILDREN sleeping processes, then allocates TARGET_MIB at RATE;
- forkbomb: allocates CHILD_MIB, then every INTERVAL_S forks a child that does
  the same, at most MAX_FORKS forks per process (bounded, but faster than a
  cgroup.procs reader can keep up with); a fork refused (ENOMEM at the
  limit) is tried again at the next interval;
- fill-then-forkbomb: allocates FILL_MIB, prints "filled", waits for one more
  line on stdin, then forks as forkbomb does (a container that starts forking
  after memguard prepared its victims).
- on-sigterm: installs a SIGTERM handler, then allocates TARGET_MIB at RATE;
  `exit`: the handler writes "clean shutdown" to MARKER and exits 0 (a service
  that shuts down cleanly); `ignore`: it writes "sigterm ignored" and goes on
  (a process that never stops on SIGTERM: the graceful policy escalates).
All of them sleep once done, until killed.
"""

from __future__ import annotations

import os
import signal
import sys
import time

MIB = 1 << 20


def _touch(mib: int) -> list[bytes]:
    return [b"\x01" * MIB for _ in range(mib)]


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def cache_then_anon(cache_mib: int, directory: str, target_mib: int) -> None:
    path = os.path.join(directory, f"cache-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(cache_mib):
            os.write(fd, b"\x02" * MIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    print("started", flush=True)
    kept = _touch(target_mib)
    del kept
    _sleep_forever()


def many(children: int, target_mib: int, rate_mib_s: float) -> None:
    for _ in range(children):
        if os.fork() == 0:
            _sleep_forever()
    print("started", flush=True)
    kept: list[bytes] = []
    started = time.monotonic()
    for index in range(target_mib):
        kept.append(b"\x01" * MIB)
        delay = started + (index + 1) / rate_mib_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _sleep_forever()


def forkbomb(child_mib: int, interval_s: float, max_forks: int) -> None:
    print("started", flush=True)
    _bomb(_touch(child_mib), child_mib, interval_s, max_forks)


def fill_then_forkbomb(fill_mib: int, child_mib: int, interval_s: float, max_forks: int) -> None:
    kept = _touch(fill_mib)
    print("filled", flush=True)
    sys.stdin.readline()
    _bomb(kept, child_mib, interval_s, max_forks)


def _bomb(kept: list[bytes], child_mib: int, interval_s: float, max_forks: int) -> None:
    sys.stdout.close()
    os.close(1)
    forks = 0
    while forks < max_forks:
        time.sleep(interval_s)
        try:
            child = os.fork()
        except OSError:
            continue  # refused at the limit: try again
        forks += 1
        if child == 0:
            kept = _touch(child_mib)
            forks = 0
    del kept
    _sleep_forever()


def on_sigterm(mode: str, marker: str, target_mib: int, rate_mib_s: float) -> None:
    def handler(signum: int, frame: object) -> None:
        words = "clean shutdown" if mode == "exit" else "sigterm ignored"
        with open(marker, "a") as file:
            file.write(words + "\n")
        if mode == "exit":
            os._exit(0)

    signal.signal(signal.SIGTERM, handler)
    print("started", flush=True)
    kept: list[bytes] = []
    started = time.monotonic()
    for index in range(target_mib):
        kept.append(b"\x01" * MIB)
        delay = started + (index + 1) / rate_mib_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _sleep_forever()


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "cache-then-anon":
        cache_then_anon(int(args[0]), args[1], int(args[2]))
    elif mode == "many":
        many(int(args[0]), int(args[1]), float(args[2]))
    elif mode == "fill-then-forkbomb":
        fill_then_forkbomb(int(args[0]), int(args[1]), float(args[2]), int(args[3]))
    elif mode == "on-sigterm":
        on_sigterm(args[0], args[1], int(args[2]), float(args[3]))
    elif mode == "forkbomb":
        forkbomb(int(args[0]), float(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown workload {mode!r}")


if __name__ == "__main__":
    main()
