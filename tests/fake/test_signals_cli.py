"""Signals at the real commands (memguard.cli.signals): `memguard run`, `demo`, `fake init`.

Each command runs as its own process, started as an operator starts it (SIGHUP at its
default, whatever this test runner inherited). What a process started is found by a tag
in its environment, which every child inherits: /proc/PID/environ, never a name.
Signals meant to arrive "during start-up" or "at once, during the stop" are made
deterministic with the kernel's own means, no timing: blocked at exec and sent at once
(they wait, pending, until memguard installs its handlers and unblocks them), or sent to
a SIGSTOPped process (all pending when it continues).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest
import trio

from memguard.cli.signals import IGNORED_SIGNALS
from memguard.fake import model, tree
from memguard.kernel.procfs import start_time_ticks
from testing.agentproc import MEMGUARD, AgentProcess, agent_process, wait_exit, wait_until
from testing.waits import WAIT_S, late

TAG = "MEMGUARD_TEST_TAG"
STOP_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGQUIT: 131}


def tagged(tag: str) -> list[int]:
    """Live processes whose environment carries TAG=tag (zombies have none)."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                environ = file.read()
        except OSError:
            continue  # gone meanwhile
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


@pytest.fixture
def tag() -> Iterator[str]:
    """A tag for this test's processes; whatever still carries it afterwards is killed
    (by pid: they are this test's), and the test fails if anything did."""
    value = uuid.uuid4().hex
    yield value
    left = tagged(value)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left running: {left}"


def starter(blocked: Sequence[signal.Signals] = (), ignore_hup: bool = False) -> Callable[[], None]:
    """preexec_fn: SIGHUP at its default (or ignored, as nohup does), `blocked` blocked
    through exec: sent at once, they wait until memguard unblocks them."""

    def start() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)

    return start


def environment(tag: str, **extra: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith("MEMGUARD_")}
    return {**kept, TAG: tag, **extra}


def messages(log: pathlib.Path) -> list[str]:
    """The msg of every JSON log line so far (a last line being written is left out)."""
    lines = log.read_text().split("\n")[:-1]
    return [json.loads(line)["msg"] for line in lines if line.startswith("{")]


async def wait_logged(log: pathlib.Path, text: str, agent: AgentProcess | None = None) -> None:
    def logged() -> bool:
        if agent is not None:
            assert agent.alive, f"memguard exited ({agent.process.returncode}): {log.read_text()}"
        return any(text in message for message in messages(log))

    await wait_until(logged, WAIT_S, f"memguard logging {text!r}")


async def command(
    args: Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to its end (bounded), its output captured."""
    with trio.move_on_after(WAIT_S):
        return await trio.run_process(
            args, capture_stdout=True, capture_stderr=True, check=False, env=env
        )
    raise late(f"{' '.join(args)[:80]} exiting", WAIT_S)


async def exit_code(process: subprocess.Popen[bytes], what: str) -> int:
    await wait_exit(process.pid, WAIT_S, what)
    return process.wait()  # a zombie by now: no blocking


@contextlib.contextmanager
def agent_on(
    root: str, tmp_path: pathlib.Path, tag: str, preexec: Callable[[], None]
) -> Iterator[tuple[AgentProcess, pathlib.Path, pathlib.Path]]:
    """`memguard run` on the fake tree: (agent, its log, its status socket path)."""
    log = tmp_path / "memguard.log"
    socket_path = tmp_path / "s.sock"
    args = ["--parent", root, "--log-format", "json", "--status-socket", str(socket_path)]
    prefix = ["env", f"{TAG}={tag}"]  # agent_process passes this environment on, plus the tag
    with agent_process(args, stderr=log, prefix=prefix, preexec_fn=preexec) as agent:
        yield agent, log, socket_path


def assert_stopped_cleanly(log: pathlib.Path, socket_path: pathlib.Path, first: str) -> None:
    said = messages(log)
    assert f"received {first}: shutting down" in said, said
    assert "memguard stopped" in said[-2:], said
    assert "Traceback" not in log.read_text()
    assert not socket_path.exists(), "the status socket was left behind"


# --- memguard run -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT],
    ids=lambda signum: signum.name,
)
async def test_a_stop_signal_stops_the_agent_cleanly(
    signum: signal.Signals, fake_tree: tuple[str, object], tmp_path: pathlib.Path, tag: str
) -> None:
    with agent_on(fake_tree[0], tmp_path, tag, starter()) as (agent, log, socket_path):
        await wait_logged(log, "discovery done", agent)
        assert socket_path.exists()
        agent.process.send_signal(signum)
        assert await exit_code(agent.process, f"memguard exiting after {signum.name}") == 0
    assert_stopped_cleanly(log, socket_path, signum.name)
    assert messages(log)[-1] == "memguard stopped"


async def test_other_signals_are_said_once_and_ignored(
    fake_tree: tuple[str, object], tmp_path: pathlib.Path, tag: str
) -> None:
    with agent_on(fake_tree[0], tmp_path, tag, starter()) as (agent, log, socket_path):
        await wait_logged(log, "discovery done", agent)
        for signum in (*IGNORED_SIGNALS, *IGNORED_SIGNALS):
            agent.process.send_signal(signum)
            await wait_logged(log, f"received {signum.name}: ignored", agent)
        agent.process.send_signal(signal.SIGUSR1)
        agent.process.send_signal(signal.SIGTERM)  # after SIGUSR1: handled in order
        assert await exit_code(agent.process, "memguard exiting after SIGTERM") == 0
    said = messages(log)
    for signum in IGNORED_SIGNALS:
        assert said.count(f"received {signum.name}: ignored") == 1, said
    assert_stopped_cleanly(log, socket_path, "SIGTERM")


async def test_a_second_stop_signal_does_not_cut_the_stop_short(
    fake_tree: tuple[str, object], tmp_path: pathlib.Path, tag: str
) -> None:
    """SIGINT and SIGTERM at once (both pending while memguard is SIGSTOPped): the
    first stops it, the second is said and ignored (it used to kill the stop: 143)."""
    with agent_on(fake_tree[0], tmp_path, tag, starter()) as (agent, log, socket_path):
        await wait_logged(log, "discovery done", agent)
        agent.process.send_signal(signal.SIGSTOP)
        agent.process.send_signal(signal.SIGINT)
        agent.process.send_signal(signal.SIGTERM)
        agent.process.send_signal(signal.SIGCONT)
        assert await exit_code(agent.process, "memguard exiting after SIGINT, SIGTERM") == 0
    assert_stopped_cleanly(log, socket_path, "SIGINT")
    assert "received SIGTERM again: already shutting down" in messages(log)


async def test_a_second_stop_signal_while_stopping(
    fake_tree: tuple[str, object], tmp_path: pathlib.Path, tag: str
) -> None:
    """SIGTERM as soon as the stop is under way (its line is logged)."""
    with agent_on(fake_tree[0], tmp_path, tag, starter()) as (agent, log, socket_path):
        await wait_logged(log, "discovery done", agent)
        agent.process.send_signal(signal.SIGINT)
        await wait_logged(log, "received SIGINT: shutting down")
        if agent.alive:
            agent.process.send_signal(signal.SIGTERM)
        assert await exit_code(agent.process, "memguard exiting after SIGINT, SIGTERM") == 0
    assert_stopped_cleanly(log, socket_path, "SIGINT")


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=lambda s: s.name)
async def test_a_stop_signal_during_start_up_stops_the_agent_once_composed(
    signum: signal.Signals, fake_tree: tuple[str, object], tmp_path: pathlib.Path, tag: str
) -> None:
    """Sent at exec (blocked until memguard's handlers are in): before the agent exists."""
    preexec = starter(blocked=[signum, signal.SIGUSR2])
    with agent_on(fake_tree[0], tmp_path, tag, preexec) as (agent, log, socket_path):
        agent.process.send_signal(signal.SIGUSR2)
        agent.process.send_signal(signum)
        assert await exit_code(agent.process, f"memguard exiting after {signum.name}") == 0
    assert_stopped_cleanly(log, socket_path, signum.name)
    said = messages(log)
    assert "received SIGUSR2: ignored" in said
    assert said.index(f"received {signum.name}: shutting down") < said.index("memguard stopped")


async def test_under_nohup_sighup_is_left_ignored(
    fake_tree: tuple[str, object], tmp_path: pathlib.Path, tag: str
) -> None:
    preexec = starter(ignore_hup=True)
    with agent_on(fake_tree[0], tmp_path, tag, preexec) as (agent, log, socket_path):
        await wait_logged(log, "discovery done", agent)
        agent.process.send_signal(signal.SIGHUP)  # discarded by the kernel: ignored
        agent.process.send_signal(signal.SIGUSR1)
        await wait_logged(log, "received SIGUSR1: ignored", agent)
        assert agent.alive
        assert agent.stop() == 0
    assert not any("SIGHUP" in message for message in messages(log))
    assert_stopped_cleanly(log, socket_path, "SIGTERM")


# --- memguard demo ----------------------------------------------------------------------


def start_command(
    args: Sequence[str],
    tag: str,
    output: pathlib.Path,
    preexec: Callable[[], None],
    **extra_environ: str,
) -> subprocess.Popen[bytes]:
    with open(output, "wb") as file:
        return subprocess.Popen(
            [*MEMGUARD, *args],
            stdin=subprocess.DEVNULL,
            stdout=file,
            stderr=subprocess.STDOUT,
            env=environment(tag, **extra_environ),
            preexec_fn=preexec,
        )


def demo_processes(root: str) -> dict[int, int | None]:
    """pid -> start time of every process in the demo tree's cgroup.procs files."""
    found: dict[int, int | None] = {}
    for directory, _, files in os.walk(root):
        if "cgroup.procs" in files:
            with open(os.path.join(directory, "cgroup.procs")) as file:
                for line in file.read().split():
                    found[int(line)] = start_time_ticks(int(line))
    return found


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name
)
async def test_an_interrupted_demo_removes_its_tree_and_processes(
    signum: signal.Signals, tmp_path: pathlib.Path, tag: str
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    output = tmp_path / "demo.out"
    demo = start_command(["demo"], tag, output, starter(), TMPDIR=str(temporary))
    try:

        def growing() -> bool:
            assert demo.poll() is None, output.read_text()
            return "[flush] growing" in output.read_text()

        await wait_until(growing, WAIT_S, "the demo growing memory")
        (root,) = (str(path) for path in temporary.iterdir())
        processes = demo_processes(root)
        assert len(processes) == 10, processes
        demo.send_signal(signum)
        assert await exit_code(demo, f"the demo exiting after {signum.name}") == STOP_EXIT[signum]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert list(temporary.iterdir()) == []
    for pid, start_time in processes.items():
        assert start_time_ticks(pid) != start_time, f"demo process {pid} left running"
    text = output.read_text()
    assert "Traceback" not in text
    after = text[text.index("[flush] growing") :].splitlines()[1:]
    stop_line = f"received {signum.name}: stopping the demo, removing its tree and processes"
    assert [line for line in after if "received" in line or "demo" in line] == [
        line for line in after if stop_line in line
    ]
    assert sum(stop_line in line for line in after) == 1, after


async def test_a_demo_stopped_before_it_built_its_tree_builds_none(
    tmp_path: pathlib.Path, tag: str
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    output = tmp_path / "demo.out"
    demo = start_command(
        ["demo"], tag, output, starter(blocked=[signal.SIGINT]), TMPDIR=str(temporary)
    )
    demo.send_signal(signal.SIGINT)
    assert await exit_code(demo, "the demo exiting after SIGINT") == 130
    assert list(temporary.iterdir()) == []
    assert "fake kubepods tree" not in output.read_text()
    assert "received SIGINT: stopping the demo" in output.read_text()


# --- memguard fake init -----------------------------------------------------------------


async def test_fake_init_interrupted_removes_what_it_made(tmp_path: pathlib.Path, tag: str) -> None:
    root = tmp_path / "tree"
    output = tmp_path / "init.out"
    init = start_command(["fake", "init", str(root)], tag, output, starter(blocked=[signal.SIGINT]))
    init.send_signal(signal.SIGINT)  # waits until its handlers are in, before the build
    assert await exit_code(init, "fake init exiting after SIGINT") == 130
    assert output.read_text() == (
        f"memguard fake: received SIGINT: stopping, removing {root} and its processes\n"
    )
    assert not root.exists()
    assert tagged(tag) == []
    again = await command([*MEMGUARD, "fake", "init", str(root)])
    assert again.returncode == 0, again.stderr
    assert (await command([*MEMGUARD, "fake", "clean", str(root)])).returncode == 0


KILLED_AT_THE_FIFTH = """
import os, signal, sys
from memguard.fake import tree
started = []
spawn = tree.spawn_sleeper
def spawn_or_die(adj=None):
    if len(started) == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # init killed half way: 4 of 10 started
    started.append(spawn(adj))
    return started[-1]
tree.spawn_sleeper = spawn_or_die
tree.build(sys.argv[1])
"""


async def test_fake_clean_removes_what_a_killed_fake_init_left(
    tmp_path: pathlib.Path, tag: str
) -> None:
    root = tmp_path / "tree"
    killed = await command([sys.executable, "-c", KILLED_AT_THE_FIFTH, str(root)], environment(tag))
    assert killed.returncode == -signal.SIGKILL
    assert len(tagged(tag)) == 4  # its sleepers, left running
    assert model.find_marker(str(root)) == str(root)
    refused = await command([*MEMGUARD, "fake", "init", str(root)])
    assert refused.returncode == 2
    assert refused.stderr.decode() == f"memguard fake: error: {root} is not empty\n"
    cleaned = await command([*MEMGUARD, "fake", "clean", str(root)])
    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.decode() == f"killed 4 processes, removed {root}\n"
    assert not root.exists()
    await wait_until(lambda: tagged(tag) == [], WAIT_S, "the killed sleepers gone")


def children() -> set[int]:
    """This process's children, zombies too (field 4 of /proc/PID/stat: the parent)."""
    return {
        int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(pid) == os.getpid()
    }


def _parent(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return int(file.read().rpartition(")")[2].split()[1])
    except OSError:
        return None  # gone meanwhile


def test_a_build_that_fails_half_way_kills_its_processes(tmp_path: pathlib.Path) -> None:
    root = str(tmp_path / "tree")
    pods = (*tree.DEFAULT_PODS[:2], tree.PodSpec("bad", "NoSuchQoS", "cgroupfs", "crio", None))
    before = children()
    try:
        with pytest.raises(KeyError, match="NoSuchQoS"):
            tree.build(root, pods)
        assert children() == before  # killed and reaped
    finally:
        tree.kill_and_reap(children() - before)
    with open(os.path.join(root, model.MARKER_FILE)) as file:
        assert len(json.load(file)["processes"]) == 4  # each recorded as it started
    assert tree.clean(root) == 0
    assert not os.path.exists(root)


@pytest.mark.parametrize(
    ("directory", "line"),
    [
        ("", "DIR is an empty path: name the directory to create"),
        ("/proc/memguard-x", "cannot create /proc/memguard-x: No such file or directory"),
        ("/dev/null", "/dev/null exists and is not a directory"),
        ("/dev/null/x", "cannot create /dev/null/x: Not a directory"),
    ],
)
def test_fake_init_refuses_a_directory_it_cannot_make_in_one_line(
    directory: str, line: str
) -> None:
    result = subprocess.run(
        [*MEMGUARD, "fake", "init", directory], capture_output=True, text=True, timeout=WAIT_S
    )
    assert result.returncode == 2
    assert result.stderr == f"memguard fake: error: {line}\n"
    assert result.stdout == ""
