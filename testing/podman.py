"""memguard's image under podman, run as deploy/daemonset.yaml runs it.

podman on this host needs the runc runtime (crun refuses the hybrid cgroup
layout) and explicit ulimits (its default raise of RLIMIT_NOFILE is refused):
PODMAN and ULIMITS. The DaemonSet's pod spec becomes podman flags: hostPID,
the container's securityContext, resource limits, env and volumes - the host's
cgroupfs bind-mounted where the manifest mounts it, the ConfigMap as files, any
other hostPath as a directory of the caller's (never the host's own). A setting
this module does not know fails loudly, so the manifest cannot drift away from
what the image test runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio
import yaml

from memguard.units import parse_size
from testing.cgroups import CgroupTree
from testing.waits import WAIT_S, within

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BUILD_IMAGE = ROOT / "packaging" / "build_image.py"
PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4000:4000"]
HOST_CGROUPFS = "/sys/fs/cgroup"
BUILD_TIMEOUT_S = 540.0  # a cold build (debootstrap) took 63-129 s here


def missing_prerequisite() -> str | None:
    """Why the image cannot be built and run here (None: it can)."""
    if os.geteuid() != 0:
        return "not running as root"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (`make image-deps` installs them)"
    return None


def build(tag: str) -> None:
    """`make image`'s build (packaging/build_image.py) under another tag."""
    result = subprocess.run(
        [sys.executable, str(BUILD_IMAGE), "--tag", tag],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"building {tag} failed:\n{result.stderr[-4000:]}"


def podman(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def remove_container(name: str) -> None:
    """podman rm -f (nothing if it is gone already)."""
    podman("rm", "--force", "--ignore", "--time", "0", name)


def remove_image(tag: str) -> None:
    result = podman("rmi", tag)
    assert result.returncode == 0, result.stderr


def manifest(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def _security_flags(security: dict[str, Any]) -> Iterator[str]:
    for key, value in security.items():
        if key == "runAsUser":
            yield f"--user={value}"
        elif key == "runAsNonRoot":
            assert value is False, "an image running as root cannot run as non-root"
        elif key == "privileged":
            yield from ["--privileged"] if value else []
        elif key == "allowPrivilegeEscalation":
            yield from [] if value else ["--security-opt=no-new-privileges"]
        elif key == "readOnlyRootFilesystem":
            # the kubelet mounts no tmpfs on /tmp, /run, ... as podman --read-only would
            yield from ["--read-only", "--read-only-tmpfs=false"] if value else []
        elif key == "capabilities":
            yield from (f"--cap-drop={c.lower()}" for c in value.get("drop", []))
            yield from (f"--cap-add={c}" for c in value.get("add", []))
        elif key == "seccompProfile":
            # RuntimeDefault: the runtime's default profile (podman's, here)
            profile = value["type"]
            assert profile in ("RuntimeDefault", "Unconfined"), profile
            yield from ["--security-opt=seccomp=unconfined"] if profile == "Unconfined" else []
        else:
            raise AssertionError(f"securityContext.{key}: not mapped to podman (testing/podman.py)")


def _resource_flags(resources: dict[str, Any]) -> Iterator[str]:
    for key, value in resources.get("limits", {}).items():
        if key == "memory":
            yield f"--memory={parse_size(str(value))}"
        elif key == "cpu":
            text = str(value)
            yield f"--cpus={int(text[:-1]) / 1000 if text.endswith('m') else float(text)}"
        else:
            raise AssertionError(f"resources.limits.{key}: not mapped to podman")


# The downward API's metadata.uid: a pod uid no test container has (memguard
# protects its own pod: none of the test's containers may be taken for it).
POD_UID = "00000000-0000-4000-8000-00000000f00d"


def _env_flags(env: list[dict[str, Any]], node_name: str) -> Iterator[str]:
    for variable in env:
        if "value" in variable:
            yield f"--env={variable['name']}={variable['value']}"
            continue
        field_path = variable["valueFrom"]["fieldRef"]["fieldPath"]
        values = {"spec.nodeName": node_name, "metadata.uid": POD_UID}
        assert field_path in values, f"env {variable['name']}: {field_path} not mapped"
        yield f"--env={variable['name']}={values[field_path]}"


def _volume_flags(
    pod: dict[str, Any], container: dict[str, Any], configmaps: dict[str, dict[str, Any]],
    state_dir: pathlib.Path,
) -> Iterator[str]:  # fmt: skip
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "hostPath" in volume and volume["hostPath"]["path"] == HOST_CGROUPFS:
            source = HOST_CGROUPFS
        elif "hostPath" in volume:  # the node's state (the hold ledger): the test's own
            source = str(state_dir / mount["name"])
            os.makedirs(source, exist_ok=True)
        elif "configMap" in volume:
            directory = state_dir / mount["name"]
            directory.mkdir(exist_ok=True)
            for key, text in configmaps[volume["configMap"]["name"]]["data"].items():
                (directory / key).write_text(text)
            source = str(directory)
        else:
            raise AssertionError(f"volume {mount['name']}: its kind is not mapped to podman")
        options = ":ro" if mount.get("readOnly") else ""
        yield f"--volume={source}:{mount['mountPath']}{options}"


def daemonset_container() -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, the memguard container) of deploy/daemonset.yaml."""
    [daemonset] = manifest("daemonset.yaml")
    pod = daemonset["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def run_flags(state_dir: pathlib.Path, node_name: str) -> list[str]:
    """`podman run` flags for the DaemonSet's pod and container (no network of the
    host's: its own namespace with loopback only)."""
    pod, container = daemonset_container()
    configmaps = {doc["metadata"]["name"]: doc for doc in manifest("configmap.yaml")}
    assert not pod.get("hostNetwork"), "hostNetwork: the test would listen on the host's ports"
    flags = [*ULIMITS, "--network=none"]
    if pod.get("hostPID"):
        flags.append("--pid=host")
    flags += _security_flags(container.get("securityContext", {}))
    flags += _resource_flags(container.get("resources", {}))
    flags += _env_flags(container.get("env", []), node_name)
    flags += _volume_flags(pod, container, configmaps, state_dir)
    return flags


def agent_args(parent: str) -> list[str]:
    """The DaemonSet's args guarding only `parent` (a path in the container), with
    Kubernetes off (no API server here)."""
    _, container = daemonset_container()
    args: list[str] = []
    skip_value = False
    for arg in container["args"]:
        if skip_value:
            skip_value = False
        elif arg == "--parent":
            skip_value = True
        elif not arg.startswith("--parent="):
            args.append(arg)
    return [*args, f"--parent={parent}", "--kubernetes=off"]


def in_container(host_path: str) -> str:
    """Where the DaemonSet's container sees a path of the host's cgroupfs."""
    pod, container = daemonset_container()
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        if volumes[mount["name"]].get("hostPath", {}).get("path") == HOST_CGROUPFS:
            relative = os.path.relpath(host_path, HOST_CGROUPFS)
            return os.path.join(mount["mountPath"], relative)
    raise AssertionError(f"the DaemonSet does not mount {HOST_CGROUPFS}")


# -- the DaemonSet's container against a hog -----------------------------------------


def record(line: str) -> dict[str, Any] | None:
    """A JSON log line of memguard's as a dict (None: not one, e.g. podman's own)."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class ContainerLog:
    """The container's output (what `kubectl logs` shows), line by line as it comes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.lines: list[str] = []

    async def next_line(self) -> str | None:
        """The next line; None at the end of the output (the container exited)."""
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.lines.append(line.decode(errors="replace"))
        return self.lines[-1]

    async def wait_for(
        self, matches: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = WAIT_S
    ) -> dict[str, Any]:
        """The first JSON record from here on that matches; fails, with the log, if
        the output ends or timeout_s passes first."""
        try:
            with within(what, timeout_s):
                while (line := await self.next_line()) is not None:
                    found = record(line)
                    if found is not None and matches(found):
                        return found
                raise AssertionError(f"the container's output ended before {what}")
        except AssertionError as error:
            tail = "\n".join(self.lines[-40:])
            raise AssertionError(f"{error}\n--- the container's log ---\n{tail}") from None

    async def rest(self) -> list[str]:
        """Every line up to the end of the output."""
        while await self.next_line() is not None:
            pass
        return self.lines


@dataclass
class GuardRun:
    """What one run of the DaemonSet's container against a hog showed."""

    start_to_guarding_s: float  # podman run -> memguard's "guarding <the container cgroup>"
    readyz: str  # GET /readyz inside the container: "<status> <body>"
    go_to_report_s: float  # the hog let go -> memguard's OomGuardKill* report in the log
    report: dict[str, Any]
    hog_pid: int
    hog_returncode: int
    oom_kills: int  # the kernel's, in the container cgroup (memory.oom_control oom_kill)
    exit_code: int  # memguard's, after podman stop (SIGTERM)
    log: list[str]


READYZ = (
    "import urllib.request, urllib.error\n"
    "try:\n"
    "    answer = urllib.request.urlopen('http://127.0.0.1:{port}/readyz', timeout=5)\n"
    "except urllib.error.HTTPError as error:\n"
    "    answer = error\n"
    "print(answer.status, answer.read().decode().strip())\n"
)


async def _readyz(name: str) -> str:
    """The readiness probe's answer, asked inside the container (its own network
    namespace) as the kubelet asks the pod."""
    _, container = daemonset_container()
    port = container["readinessProbe"]["httpGet"]["port"]
    if isinstance(port, str):  # a named port
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    code = READYZ.format(port=port)
    with within(f"podman exec {name} (GET /readyz)"):
        done = await trio.run_process(
            [*PODMAN, "exec", name, "python3", "-c", code], capture_stdout=True, check=False
        )
    return done.stdout.decode().strip()


async def guard_a_hog(
    image: str, tree: CgroupTree, state_dir: pathlib.Path, limit_mib: int = 128
) -> GuardRun:
    """Run the image as the DaemonSet would, guarding only `tree`, with a container
    cgroup in it of limit_mib and a hog filling twice that at 100 MiB/s."""
    cgroup = tree.container(limit_bytes=limit_mib << 20)
    hog = tree.hog(cgroup, target_mib=2 * limit_mib, rate_mib_s=100)
    name = f"memguard-test-{uuid.uuid4().hex[:12]}"
    inner_cgroup = in_container(cgroup)
    command = [
        *PODMAN, "run", "--rm", f"--name={name}", *run_flags(state_dir, "memguard-test-node"),
        image, *agent_args(in_container(tree.parent)),
    ]  # fmt: skip
    started = time.monotonic()
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        log = ContainerLog(process.stdout)
        await log.wait_for(
            lambda r: str(r.get("msg", "")).startswith(f"guarding {inner_cgroup}:"),
            "memguard in the container guarding the container cgroup",
        )
        guarding_s = time.monotonic() - started
        readyz = await _readyz(name)
        hog.go()
        let_go = time.monotonic()
        report = await log.wait_for(
            lambda r: (
                str(r.get("kind", "")).startswith("OomGuardKill")
                and r.get("cgroup") == inner_cgroup
            ),
            "memguard's kill report",
        )
        report_s = time.monotonic() - let_go
        hog_returncode = await hog.exited()
        with within(f"podman stop {name}"):
            await trio.run_process([*PODMAN, "stop", "--time", "15", name], capture_stdout=True)
        with within("podman run exiting after podman stop"):
            exit_code = await process.wait()
        lines = await log.rest()
        return GuardRun(
            guarding_s, readyz, report_s, report, hog.pid, hog_returncode, tree.oom_kills(cgroup),
            exit_code, lines,
        )  # fmt: skip
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await trio.run_process(
                [*PODMAN, "rm", "--force", "--ignore", "--time", "0", name],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
