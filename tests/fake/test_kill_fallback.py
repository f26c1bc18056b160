"""The kill path without pidfds: when pidfd_open or pidfd_send_signal is refused
(a seccomp profile: EPERM/ENOSYS; no fds left: EMFILE), kills fall back to
kill(2) after a membership check; a refused process_mrelease is skipped. The
refusal is injected at the cffi boundary (testing.pidfd_refusal), the
processes and their deaths are real. A refusal is decided once (the probe at
start), said once at WARNING, shown in the agent's state, and the refused
syscall is never tried again; running out of fds is not a refusal."""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import trio

from memguard.cli.observe import state_metrics
from memguard.fake import drive, model, tree
from memguard.fake.backend import FakeBackend
from memguard.guarding.killer import Killer
from memguard.guarding.supervisor import FdBudget
from memguard.kernel import names
from memguard.kernel.pidfd import (
    PIDFD_OPEN,
    PIDFD_SEND_SIGNAL,
    PROCESS_MRELEASE,
    SYSCALLS,
    PlainPid,
)
from memguard.policy.margin import levels
from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agentproc import wait_exit
from testing.agents import make_config, make_settings, reported, running_agent, until
from testing.pidfd_refusal import MRELEASE, OPEN, SEND_SIGNAL, pidfds_refused

REFUSED_METRIC = "memguard_pidfd_syscall_refused"
SYSCALL_OF = {OPEN: PIDFD_OPEN, SEND_SIGNAL: PIDFD_SEND_SIGNAL, MRELEASE: PROCESS_MRELEASE}


def refusal_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "is refused" in record.getMessage()
    ]


def lower_limit_to_warn(container: tree.FakeContainer) -> int:
    """Write the smallest limit (whole MiB) whose warning level its usage reaches while
    staying under the threshold: the guard prepares its victims (the rate is 0: no
    early kill). Returns how much more takes usage halfway from threshold to limit."""
    usage = model.read(container.path)
    assert usage is not None
    settings = make_settings()
    for limit_bytes in range(usage.usage_bytes, 64 * usage.usage_bytes, MIB):
        marks = levels(limit_bytes, settings)
        if marks is None or marks.warning is None:
            continue
        if marks.warning <= usage.usage_bytes < marks.threshold:
            with open(os.path.join(container.path, names.LIMIT_FILE), "w") as file:
                file.write(str(limit_bytes))  # in place, as the kubelet does
            return (marks.threshold + limit_bytes) // 2 - usage.usage_bytes
    raise AssertionError(f"no limit puts {usage.usage_bytes} between warning and threshold")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (OPEN, errno.EPERM),
        (OPEN, errno.ENOSYS),
        (OPEN, errno.EMFILE),
        (SEND_SIGNAL, errno.EPERM),
        (SEND_SIGNAL, errno.ENOSYS),
        (MRELEASE, errno.EPERM),
        (MRELEASE, errno.ENOSYS),
    ],
)
@pytest.mark.parametrize("policy", [Policy.PROCESS, Policy.CONTAINER])
async def test_kills_fall_back_to_kill_when_pidfds_are_refused(
    fake_tree: tuple[str, list[tree.FakeContainer]],
    caplog: pytest.LogCaptureFixture,
    call: str,
    code: int,
    policy: Policy,
) -> None:
    root, containers = fake_tree
    target = next(c for c in containers if c.name == "cache")
    caplog.set_level(logging.WARNING)
    with pidfds_refused({call: code}) as refusing:
        async with running_agent(make_config(root, policy=policy)) as (agent, collect):
            assert agent.ready()
            # Into the danger zone first: the guard prepares its victims.
            over_threshold_bytes = lower_limit_to_warn(target)
            guard = agent.supervisor.guards[target.path]
            await until(
                agent.supervisor.changes,
                lambda: guard.prepared_victims == len(target.pids),
                "the guard prepared its victims",
            )
            drive.step(root, target.path, drive.Kind.ANON, over_threshold_bytes)
            kill = Policy.PROCESS
            kind = ReportKind.KILL_PROCESS if policy is kill else ReportKind.KILL_CONTAINER
            report = await reported(collect, target.path, kind)
            refused = dict(agent.killer.pidfds.refused)
            [metric] = [m for m in state_metrics(agent, None) if m.name == REFUSED_METRIC]
    killed = [victim.pid for victim in report.victims if victim.killed]
    assert killed
    shown = {sample.labels["syscall"]: sample.value for sample in metric.samples}
    if code == errno.EMFILE:  # no fds: this process by pid, the next one tries again
        assert refused == {}
        assert shown == dict.fromkeys(SYSCALLS, 0.0)
        assert refusing.calls[call] > 1
        assert refusal_warnings(caplog) == []
    else:  # refused: decided by the probe at start, said once, never tried again
        assert refused == {SYSCALL_OF[call]: code}
        assert shown == {**dict.fromkeys(SYSCALLS, 0.0), SYSCALL_OF[call]: 1.0}
        assert refusing.calls == {call: 1}
        [warning] = refusal_warnings(caplog)
        assert warning.startswith(f"kill path: {SYSCALL_OF[call]} is refused")
        assert errno.errorcode[code] in warning
    for pid in killed:  # real pidfds again
        await wait_exit(pid, 10, f"victim {pid} is still alive")
    assert model.read(target.path) is not None


@pytest.fixture
def two_sleepers() -> Iterator[tuple[int, int]]:
    """Two real processes: the first ranks first (oom_score_adj 1000, then 500)."""
    first, second = tree.spawn_sleeper(1000), tree.spawn_sleeper(500)
    try:
        yield first, second
    finally:
        tree.kill_and_reap([first, second])


def killed_by_sigkill(pid: int) -> bool:
    """Reap pid (a child of this test) if it has exited: True when SIGKILL ended it."""
    reaped, status = os.waitpid(pid, os.WNOHANG)
    return reaped == pid and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def still_running(pid: int) -> bool:
    """pid, a child of this test, has not exited."""
    return os.waitpid(pid, os.WNOHANG) == (0, 0)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("policy", [Policy.PROCESS, Policy.CONTAINER])
async def test_a_prepared_pid_that_left_the_cgroup_is_not_signalled(
    empty_fake_root: str, two_sleepers: tuple[int, int], version: int, policy: Policy
) -> None:
    """pidfd_open refused, victims prepared by pid; the best-ranked one then leaves
    the cgroup - as a pid that exited and was reused by another process would - and
    only the member that is still there is killed."""
    stranger, member = two_sleepers
    cgroup = os.path.join(empty_fake_root, "kubepods", "pod1", "c" * 64)
    memory = model.FakeMemory(limit_bytes=256 * MIB, pids=[stranger, member], version=version)
    model.create(cgroup, memory)
    killer = Killer(FakeBackend(version), frozenset({os.getpid()}), dry_run=False)
    with pidfds_refused({OPEN: errno.EPERM}):
        prepared = killer.prepare(cgroup)
        assert prepared is not None
        assert list(prepared.victims) == [stranger, member]  # the stranger would go first
        assert all(isinstance(p, PlainPid) for p in prepared.victims.values())
        with model.locked(cgroup) as state:
            assert state is not None
            state.pids.remove(stranger)
        if policy is Policy.PROCESS:
            outcome = await killer.kill_process(cgroup, prepared)
        else:
            outcome = await killer.kill_container(cgroup, prepared, trio.current_time() + 10)
    assert member in [v.pid for v in outcome.victims if v.killed]
    assert killed_by_sigkill(member)
    assert still_running(stranger)  # never signalled
    assert killer.pidfds.refused == {PIDFD_OPEN: errno.EPERM}


def test_a_target_out_of_reach_is_not_a_refusal(tmp_path: os.PathLike[str]) -> None:
    """pidfd_send_signal's EPERM also means "no permission for this target" (another
    user's process, CAP_KILL dropped): real, no injection. memguard itself can still
    be signalled through a pidfd, so pidfds stay in use and the error is raised."""
    target = tree.spawn_sleeper()
    script = textwrap.dedent(
        f"""
        from memguard.errors import KernelError
        from memguard.kernel.pidfd import PidfdSupport
        told = []
        support = PidfdSupport(on_refused=lambda *refusal: told.append(refusal))
        support.probe()
        process = support.open({target})
        try:
            process.send_signal(9)
        except KernelError as error:
            print(type(process).__name__, error.errno, support.refused, told)
        """
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        result = subprocess.run(
            [*nobody, "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
            check=False,
        )
        assert result.stdout.split() == ["PidFd", str(errno.EPERM), "{}", "[]"], result.stderr
        assert still_running(target)  # not signalled by kill(2) either
    finally:
        tree.kill_and_reap([target])


def test_the_fd_budget_leaves_the_reserve_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1000, 4096))
    assert FdBudget(fds_per_guard=3, reserved_fds=100).slots() == 300
    assert FdBudget(fds_per_guard=1, reserved_fds=2000).slots() == 0
    assert FdBudget(fds_per_guard=0, reserved_fds=100).slots() is None  # fake trees
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    assert FdBudget(fds_per_guard=1, reserved_fds=100).slots() is None
