"""Victims prepared in advance, off the kill path (blocking reads: off the trio
thread): a cgroup's members, which of them may never be killed (pid 1,
memguard, oom_score_adj -1000), and - once usage is near the threshold -
pidfds for the victims, biggest oom_score first (the process policy's victim;
a container kill signals the memory hog first).

Unknown pids are spared only when the last scan found a protected member
(children inherit oom_score_adj; lowering it to -1000 needs CAP_SYS_RESOURCE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from memguard.backends.base import Backend
from memguard.guarding.signalling import Members
from memguard.kernel.pidfd import PidfdSupport, Process
from memguard.kernel.procfs import read_oom_score_adj, read_procs_info
from memguard.policy.model import ProcInfo
from memguard.policy.victim import OOM_SCORE_ADJ_MIN, is_protected, ranked

MAX_PREPARED_PIDFDS = 512  # per guard: a bigger container is signalled by pid


@dataclass
class Prepared:
    """A cgroup's members as of `at_s` (perf_counter), ready to be killed."""

    members: tuple[int, ...]
    protected: frozenset[int]  # never to be killed
    info: dict[int, ProcInfo] = field(default_factory=dict)  # ranked policy data
    victims: dict[int, Process] = field(default_factory=dict)  # pidfds (or pids), best first
    at_s: float = 0.0

    @property
    def armed(self) -> bool:
        """pidfds are open: the kill needs no read at all."""
        return bool(self.victims)

    def close(self) -> None:
        for process in self.victims.values():
            process.close()
        self.victims.clear()


def scan_members(
    backend: Backend, protected_pids: frozenset[int], cgroup_dir: str
) -> Prepared | None:
    """Members and the protected ones among them (one small read per member);
    None when the cgroup is gone."""
    pids = backend.pids(cgroup_dir)
    if pids is None:
        return None
    protected = {pid for pid in pids if pid in protected_pids or pid == 1}
    for pid in pids:
        adj = read_oom_score_adj(pid)
        if adj is not None and adj <= OOM_SCORE_ADJ_MIN:
            protected.add(pid)
    return Prepared(tuple(pids), frozenset(protected), at_s=time.perf_counter())


def prepare_victims(
    backend: Backend, protected_pids: frozenset[int], pidfds: PidfdSupport, cgroup_dir: str
) -> Prepared | None:
    """A scan plus what the report needs and pidfds of the victims, biggest
    oom_score first: the process policy's victim, and the order a container
    kill signals in (the memory hog first, not pid order)."""
    pids = backend.pids(cgroup_dir)
    if pids is None:
        return None
    infos = {info.pid: info for info in read_procs_info(pids)}
    protected = frozenset(
        pid for pid, info in infos.items() if is_protected(info, protected_pids)
    ) | (protected_pids & set(pids))
    prepared = Prepared(tuple(pids), protected, infos, {}, time.perf_counter())
    order = [info.pid for info in ranked(infos.values(), protected_pids)]
    members = Members(backend, cgroup_dir)
    for pid in order[:MAX_PREPARED_PIDFDS]:
        process = pidfds.open(pid, members.contain)
        if process is not None:
            prepared.victims[pid] = process
    return prepared


def protected_among(
    pids: list[int], prepared: Prepared | None, protected_pids: frozenset[int]
) -> set[int]:
    """Which of pids to spare: known protected ones; unknown ones are read only
    when the last scan found a protected member (they may have inherited it)."""
    known = prepared.protected if prepared is not None else frozenset()
    spare = {pid for pid in pids if pid in known or pid in protected_pids or pid == 1}
    if prepared is not None and not prepared.protected:
        return spare
    known_members = set(prepared.members) if prepared is not None else set()
    for pid in pids:
        if pid in spare or pid in known_members:
            continue
        adj = read_oom_score_adj(pid)
        if adj is not None and adj <= OOM_SCORE_ADJ_MIN:
            spare.add(pid)
    return spare
