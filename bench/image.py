"""memguard's image: build times (cold, warm), size, and the DaemonSet's container
under podman against a hog, repeated.

    sudo .venv/bin/python -m bench.image [--runs 5] [--cold]

Builds are `make image`'s (packaging/build_image.py) under a tag of this run's,
removed at the end; --cold first removes the cached base image, so the first
build debootstraps it again (a new machine's first `make image`; the wheels
still come from pip's cache). Each run (testing/podman.py, as tests/image):
podman run of the DaemonSet's container guarding a private test tree ->
memguard's "guarding" line for the container cgroup (start time), then a hog
let go at 100 MiB/s into a 128 MiB limit -> memguard's OomGuardKill report in
the container's log; every run must end with the hog SIGKILLed and the
kernel's oom_kill at 0. Results go to bench/results/image.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import trio

from testing import podman
from testing.cgroups import new_tree

RESULTS_PATH = podman.ROOT / "bench" / "results" / "image.json"


def _base_tag() -> str:
    spec = importlib.util.spec_from_file_location("build_image", podman.BUILD_IMAGE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.base_tag(module.host_suite()))


def timed_build(tag: str) -> float:
    started = time.monotonic()
    podman.build(tag)
    return time.monotonic() - started


def one_run(image: str) -> dict[str, Any]:
    tree = new_tree(1)
    try:
        with tempfile.TemporaryDirectory(prefix="memguard-bench-image-") as state:
            run = trio.run(podman.guard_a_hog, image, tree, pathlib.Path(state))
    finally:
        tree.cleanup()
    ok = run.hog_returncode == -signal.SIGKILL and run.oom_kills == 0 and run.exit_code == 0
    return {
        "start_to_guarding_s": round(run.start_to_guarding_s, 3),
        "go_to_report_s": round(run.go_to_report_s, 3),
        "report_kind": run.report["kind"],
        "latency_ms": round(float(run.report.get("latency_s") or 0.0) * 1000, 3),
        "hog_returncode": run.hog_returncode,
        "oom_kills": run.oom_kills,
        "exit_code": run.exit_code,
        "readyz": run.readyz,
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="remove the cached base first")
    args = parser.parse_args(argv)
    missing = podman.missing_prerequisite()
    if missing is not None:
        raise SystemExit(f"bench.image: {missing}")
    tag = f"localhost/memguard-bench-{uuid.uuid4().hex[:12]}:latest"
    results: dict[str, Any] = {"runs": []}
    try:
        if args.cold:
            podman.podman("rmi", _base_tag())
        results["first_build_s" if not args.cold else "cold_build_s"] = round(timed_build(tag), 1)
        results["warm_build_s"] = round(timed_build(tag), 1)
        inspected = podman.podman("image", "inspect", "--format", "{{.Size}}", tag)
        results["image_mb"] = round(int(inspected.stdout) / 1e6, 1)
        for _ in range(args.runs):
            results["runs"].append(one_run(tag))
            print(json.dumps(results["runs"][-1]), file=sys.stderr)
    finally:
        podman.podman("rmi", "--ignore", tag)
    runs = results["runs"]
    for key in ("start_to_guarding_s", "go_to_report_s"):
        results[f"median_{key}"] = statistics.median(r[key] for r in runs) if runs else None
    os.makedirs(RESULTS_PATH.parent, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    return 0 if runs and all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
