"""`memguard status` names containers from the pod cache (the emulated API server)."""

from __future__ import annotations

import json
import uuid

from memguard.cli.statuspage import StatusPage, pod_namer
from memguard.cli.statusview import label
from memguard.fake.tree import kill_and_reap
from memguard.kube.connection import Connection
from memguard.kube.features import open_kube
from memguard.kube.pods import bare_container_id
from memguard.policy.model import MIB, Policy
from testing.agentproc import fake_container
from testing.agents import agent_running, compose_agent, make_config, wait_armed
from testing.kube.emulator import KubeEmulator, container_id, make_pod
from testing.waits import bounded

NODE = "node-a"


async def test_rows_carry_namespace_pod_and_container(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    uid = str(uuid.uuid4())
    kube.create_pod(make_pod("shop", "web-0", uid=uid, node_name=NODE, containers=("app",)))
    cid = bare_container_id(container_id(uid, "app"))
    known = fake_container(empty_fake_root, f"kubepods/pod{uid}/{cid}", 256 * MIB)
    stranger = fake_container(empty_fake_root, f"kubepods/pod{uuid.uuid4()}/{'ab' * 32}", 64 * MIB)
    try:
        connection = Connection(False, str(kube.kubeconfig))
        features = await bounded(open_kube(connection, NODE, explicit=True), "the client")
        assert features is not None
        config = make_config(empty_fake_root, policy=Policy.NOOP)
        agent, _ = compose_agent(config, [], [("pod-cache", features.run)], features.cache)
        async with agent_running(agent):
            what = f"pod {uid} in the pod cache"
            cached = features.cache.wait_until(lambda cache: cache.lookup(uid) is not None)
            await bounded(features.bridge.run(cached), what)
            await wait_armed(agent, known.path)
            await wait_armed(agent, stranger.path)
            answer = await StatusPage(agent, pod_namer(features.cache.lookup)).answer()
            page = json.loads(answer[2])
        rows = {row["cgroup"]: row for row in page["containers"]}
        row = rows[known.path]
        assert (row["namespace"], row["pod"], row["container"]) == ("shop", "web-0", "app")
        assert label(row, empty_fake_root) == "shop/web-0/app"
        unknown = rows[stranger.path]
        assert (unknown["namespace"], unknown["pod"], unknown["container"]) == (None, None, None)
        assert label(unknown, empty_fake_root).endswith("ab" * 6)
    finally:
        kill_and_reap([known.pid, stranger.pid])
