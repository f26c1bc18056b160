"""A kubeconfig whose user names a tokenFile (relative to the kubeconfig) still works:
memguard reads the token itself, bounded (memguard.kube.connection), and hands the
kubeconfig to kubernetes-asyncio as data; the pod cache lists through it."""

from __future__ import annotations

import json
import pathlib

from memguard.kube.connection import Connection
from memguard.kube.features import open_kube
from testing.kube.emulator import PODS, KubeEmulator, make_pod
from testing.waits import bounded

NODE = "node-a"


async def test_a_token_file_named_by_the_kubeconfig_is_read_and_used(
    kube: KubeEmulator, tmp_path: pathlib.Path
) -> None:
    assert kube.kubeconfig is not None
    config = json.loads(kube.kubeconfig.read_text())
    token = config["users"][0]["user"].pop("token")
    config["users"][0]["user"]["tokenFile"] = "secrets/token"  # relative: the kubeconfig's dir
    directory = tmp_path / "elsewhere"
    (directory / "secrets").mkdir(parents=True)
    (directory / "secrets" / "token").write_text(token + "\n")
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config))
    kube.create_pod(make_pod("shop", "web-0", node_name=NODE))

    features = await bounded(
        open_kube(Connection(False, str(path)), NODE, explicit=True), "the Kubernetes client"
    )
    assert features is not None
    try:
        # the emulator takes any token: the one the client sends is the file's, stripped
        configuration = features.client._api.configuration
        assert configuration.api_key["BearerToken"] == f"Bearer {token}"
        answer = await bounded(
            features.bridge.run(features.client.request("GET", "/api/v1/namespaces/shop/pods")),
            "listing pods",
        )
    finally:
        await features.bridge.run(features.client.close())
        features.bridge.stop()
    assert [pod["metadata"]["name"] for pod in answer["items"]] == ["web-0"]
    assert kube.request_count("list", PODS) == 1
