"""The kill path without pidfds: when pidfd_open or pidfd_send_signal is refused
(a seccomp profile: EPERM/ENOSYS; no fds left: EMFILE), kills fall back to
kill(2) after a membership check. The refusal is injected at the cffi boundary
(memguard's own), the processes and their deaths are real."""

from __future__ import annotations

import errno
import resource
from typing import Any

import pytest

from memguard.fake import drive, model, tree
from memguard.guarding.supervisor import FdBudget
from memguard.kernel.native import ffi, lib
from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agentproc import wait_exit
from testing.agents import make_config, reported, running_agent, until


class RefusingLib:
    """The native lib, with one pidfd call failing with errno."""

    def __init__(self, real: Any, refused: str, code: int) -> None:
        self._real = real
        self._refused = refused
        self._code = code
        self.refusals = 0

    def __getattr__(self, name: str) -> Any:
        if name != self._refused:
            return getattr(self._real, name)

        def refuse(*args: object) -> int:
            self.refusals += 1
            ffi.errno = self._code
            return -1

        return refuse


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("memguard_pidfd_open", errno.EPERM),
        ("memguard_pidfd_open", errno.ENOSYS),
        ("memguard_pidfd_open", errno.EMFILE),
        ("memguard_pidfd_send_signal", errno.EPERM),
        ("memguard_pidfd_send_signal", errno.ENOSYS),
    ],
)
@pytest.mark.parametrize("policy", [Policy.PROCESS, Policy.CONTAINER])
async def test_kills_fall_back_to_kill_when_pidfds_are_refused(
    fake_tree: tuple[str, list[tree.FakeContainer]],
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    code: int,
    policy: Policy,
) -> None:
    root, containers = fake_tree
    target = next(c for c in containers if c.name == "cache")
    refusing = RefusingLib(lib, call, code)
    monkeypatch.setattr("memguard.kernel.pidfd.lib", refusing)
    async with running_agent(make_config(root, policy=policy)) as (agent, collect):
        assert agent.ready()
        # Into the danger zone first: the guard prepares pidfds for its victims.
        drive.step(root, target.path, drive.Kind.ANON, 230 * MIB)
        guards = agent.supervisor.guards
        await until(
            agent.supervisor.changes,
            lambda: guards[target.path].prepared_victims > 0 or refusing.refusals > 0,
            "the guard prepared its victims",
        )
        drive.step(root, target.path, drive.Kind.ANON, 18 * MIB)
        kind = ReportKind.KILL_PROCESS if policy is Policy.PROCESS else ReportKind.KILL_CONTAINER
        report = await reported(collect, target.path, kind)
    assert refusing.refusals > 0
    killed = [victim.pid for victim in report.victims if victim.killed]
    assert killed
    monkeypatch.undo()  # wait with real pidfds
    for pid in killed:
        await wait_exit(pid, 10, f"victim {pid} is still alive")
    assert model.read(target.path) is not None


def test_the_fd_budget_leaves_the_reserve_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1000, 4096))
    assert FdBudget(fds_per_guard=3, reserved_fds=100).slots() == 300
    assert FdBudget(fds_per_guard=1, reserved_fds=2000).slots() == 0
    assert FdBudget(fds_per_guard=0, reserved_fds=100).slots() is None  # fake trees
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    assert FdBudget(fds_per_guard=1, reserved_fds=100).slots() is None
