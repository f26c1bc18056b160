"""`memguard run --config` as an operator runs it: the whole composition root
(memguard.serve) with memory QoS classes, an emulated API server and a fake v2
tree, in a real subprocess stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
from typing import Any

from memguard.fake.tree import FakeContainer
from memguard.policy.model import MIB
from memguard.policy.qos import high_for
from testing.kube.emulator import KubeEmulator, pod_for
from testing.waits import WAIT_S, late

NODE = "node-a"
CONFIG = """\
log-format: json
kubernetes: auto
node-name: node-a
classes:
- name: silver
  swaplimitratio: 0.2
unifiedannotations: [memory.swap.max]
"""


def read_reports_until(
    process: subprocess.Popen[str], wanted: set[str], timeout_s: float = WAIT_S
) -> list[dict[str, Any]]:
    """JSON log lines (reports) until one of each wanted kind arrived; a memguard that
    never says them is killed after timeout_s (its stderr ends) and the test fails."""
    assert process.stderr is not None
    reports: list[dict[str, Any]] = []
    seen: set[str] = set()
    gave_up = threading.Event()

    def give_up() -> None:
        gave_up.set()
        process.kill()

    watchdog = threading.Timer(timeout_s, give_up)
    watchdog.start()
    try:
        for line in process.stderr:
            record = json.loads(line)
            kind = record.get("kind")
            if kind is not None:
                reports.append(record)
                seen.add(kind)
            if wanted <= seen:
                return reports
    finally:
        watchdog.cancel()
    if gave_up.is_set():
        raise late(f"memguard reporting {sorted(wanted - seen)}", timeout_s)
    raise AssertionError(f"memguard exited before reporting {wanted - seen}")


def test_run_with_a_config_file_applies_memory_qos_from_pod_annotations(
    kube: KubeEmulator, fake_v2_tree: tuple[str, list[FakeContainer]], tmp_path: pathlib.Path
) -> None:
    root, containers = fake_v2_tree
    named = {c.name: c for c in containers}
    web, api = named["web"], named["api"]
    kube.create_pod(pod_for(web, {"class.memory-qos.nri.io": "silver"}))
    kube.create_pod(pod_for(api, {"memory.high.memory-qos.nri.io": "max"}))  # not allow-listed
    config = tmp_path / "memguard.yaml"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "memguard.cli", "run", "--config", str(config)]
    command += ["--parent", root, "--kubeconfig", str(kube.kubeconfig)]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            reports = read_reports_until(process, {"OomGuardMemoryQoS", "OomGuardMemoryQoSInvalid"})
        finally:
            process.send_signal(signal.SIGTERM)
            _, rest = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "Traceback" not in rest
    applied = next(r for r in reports if r["kind"] == "OomGuardMemoryQoS")
    assert applied["cgroup"] == web.path
    with open(os.path.join(web.path, "memory.high")) as handle:
        assert handle.read().strip() == str(high_for(256 * MIB, 0.2, os.sysconf("SC_PAGE_SIZE")))
    with open(os.path.join(web.path, "memory.swap.max")) as handle:
        assert handle.read().strip() == "max"
    with open(os.path.join(api.path, "memory.high")) as handle:
        assert handle.read().strip() == "max"  # as the fake tree made it: nothing written
    reasons = {(e["regarding"]["name"], e["reason"]) for e in kube.events()}
    assert ("api", "OomGuardMemoryQoSInvalid") in reasons
    assert kube.rejections == []
