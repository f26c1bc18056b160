"""The `memguard` command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import trio

from memguard.fake import model
from testing.waits import within

MEMGUARD = [sys.executable, "-m", "memguard.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MEMGUARD, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "--margin-ratio", "2x"], ["--margin-ratio", "'2x'", "ratio"]),
        (["run", "--min-margin", "abc"], ["--min-margin", "size"]),
        (["run", "--cooldown", "soon"], ["--cooldown", "duration"]),
        (["run", "--policy", "nuke"], ["--policy", "process, container, graceful, evict, noop"]),
        (["run", "--min-margin", "60Mi"], ["--min-margin", "larger than --max-margin"]),
        (["run", "--margin-ratio", "0.6"], ["--margin-ratio", "below 0.5"]),
        (["run", "--parent", "/nonexistent/dir/kubepods"], ["/nonexistent/dir", "does not exist"]),
        (["run", "--no-such-flag"], ["unrecognized arguments"]),
        (["frobnicate"], ["invalid choice"]),
        (["run", "--listen", "nowhere"], ["--listen", "HOST:PORT"]),
        (["run", "--report-queue", "0"], ["--report-queue", "at least 1"]),
        (["run", "--kubernetes", "maybe"], ["--kubernetes", "auto, off"]),
    ],
)
def test_bad_values_give_one_line_and_exit_2(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(run(*args), *needles)


def test_bad_environment_value_names_the_variable() -> None:
    result = run("run", env={"MEMGUARD_POLICY": "nuke"})
    assert_one_line_error(result, "$MEMGUARD_POLICY")


def test_an_explicit_kubeconfig_that_cannot_be_loaded_is_refused(
    fake_tree: tuple[str, list[object]], tmp_path: os.PathLike[str]
) -> None:
    missing = os.path.join(tmp_path, "no-such-kubeconfig")
    result = run("run", "--parent", fake_tree[0], "--kubeconfig", missing)
    assert_one_line_error(result, "--kubeconfig", missing, "no such file")
    garbage = os.path.join(tmp_path, "garbage-kubeconfig")
    with open(garbage, "w") as file:
        file.write("this: [is not a kubeconfig")
    result = run("run", "--parent", fake_tree[0], "--kubeconfig", garbage)
    assert_one_line_error(result, "cannot load Kubernetes config", garbage)


def test_cgroup_version_must_match_the_tree(fake_tree: tuple[str, list[object]]) -> None:
    result = run("run", "--parent", fake_tree[0], "--cgroup-version", "2")
    assert_one_line_error(result, "--cgroup-version 2", "cgroup v1")


def test_fake_init_v2_and_demo_v2(tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(tmp_path, "tree2")
    created = run("fake", "init", root, "--cgroup-version", "2")
    assert created.returncode == 0, created.stderr
    assert "cgroup v2 files" in created.stdout
    assert model.tree_cgroup_version(root) == 2
    assert run("fake", "clean", root).returncode == 0
    demo = run("demo", "--cgroup-version", "2")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "backend fake-v2" in demo.stdout
    assert "memguard decided: OomGuardKillProcess" in demo.stdout


def test_parent_that_is_not_a_cgroup_or_fake_tree_is_refused(tmp_path: os.PathLike[str]) -> None:
    assert_one_line_error(run("run", "--parent", str(tmp_path)), "fake init")


async def test_run_on_a_fake_tree_stops_cleanly_on_sigterm(
    fake_tree: tuple[str, list[object]],
) -> None:
    root, _ = fake_tree
    process = await trio.lowlevel.open_process(
        [*MEMGUARD, "run", "--parent", root, "--log-format", "json"],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    output = b""
    try:
        with within("memguard logging 'discovery done'"):
            while b"discovery done" not in output:
                chunk = await process.stderr.receive_some()
                assert chunk, output  # EOF before discovery finished: it crashed
                output += chunk
        process.send_signal(signal.SIGTERM)
        with within("memguard closing its stderr after SIGTERM"):
            while chunk := await process.stderr.receive_some():
                output += chunk
        with within("memguard exiting after SIGTERM"):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()  # a failed wait: do not leave it running
            await process.wait()
    text = output.decode()
    assert '"msg": "memguard stopped"' in text
    assert "Traceback" not in text
    assert '"msg": "discovery done: guarding 6 cgroups"' in text


def test_fake_init_then_clean(tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(tmp_path, "tree")
    created = run("fake", "init", root)
    assert created.returncode == 0, created.stderr
    assert model.find_marker(root) == root
    assert "memguard run --parent" in created.stdout
    again = run("fake", "init", root)
    assert_one_line_error(again, "not empty")
    cleaned = run("fake", "clean", root)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "killed 10 processes" in cleaned.stdout
    assert not os.path.exists(root)


def test_fake_drive_refuses_an_unknown_container(fake_tree: tuple[str, list[object]]) -> None:
    root, _ = fake_tree
    assert_one_line_error(run("fake", "drive", root, "--container", "nope"), "web")


def test_demo_shows_a_flush_a_skip_and_a_kill() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    for decision in ("OomGuardFlush", "OomGuardSkip", "OomGuardKillProcess"):
        assert f"memguard decided: {decision}" in result.stdout


@pytest.mark.parametrize(
    "command", [["--help"], ["run", "--help"], ["demo", "--help"], ["fake", "init", "--help"]]
)
def test_help_is_printed_for_every_command(command: list[str]) -> None:
    result = run(*command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: memguard")
    assert "Traceback" not in result.stderr
    if command[0] == "run":  # every option is listed, with a help text ("25%" survives)
        for flag in ("--config", "--flush-cache-above", "--flush-interval", "--high-tripwire"):
            assert flag in result.stdout
        assert "(25%)" in result.stdout
