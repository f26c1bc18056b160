"""The race benchmark's results: per-cell summaries, race.json, and BENCHMARKS.md.

BENCHMARKS.md (repo root) keeps one section per benchmark and cgroup version
between marker comments; a run replaces its own section and leaves the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from bench.race_agents import Agent
from bench.race_trial import TrialResult
from bench.race_workloads import LIMIT_MIB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")
C_REF = {
    1: "bench/c/ref_agent.c: an eventfd on memory.usage_in_bytes at the threshold and one "
    "on memory.oom_control; on the first wake SIGKILL every pid of cgroup.procs, re-read "
    "until empty (2 s at most)",
    2: "bench/c/ref_agent_v2.c: memory.high at the threshold, inotify on memory.events; "
    "on the first change cgroup.kill",
}
LEGEND = [
    "Agents: `none` - no agent, the kernel's OOM killer acts; `c-ref` - {c_ref}; "
    "`memguard` - `memguard run --kubernetes off --policy container --parent <its tree> "
    "--log-format json` (defaults otherwise); `memguard-hold` - the same with `{hold}`. "
    "Latency (wake -> SIGKILL): from the agent's kernel wake-up to its first kill "
    "syscall (memguard: the report's latency_s); emptied: from the hog's death to an "
    "empty container, when the agent won.",
    "Workloads (bench/c/): `anon` - 1 MiB chunks touched at the rate towards twice the "
    "limit; `cache+anon` - the same after writing and fsyncing 20 MiB to a file; "
    "`300procs+anon` - 300 idle processes forked first, then the hog; `forkbomb` - every "
    "process touches 4 MiB at the rate and forks every 20 ms (no fork after 10 s). "
    "Rates: `max` is as fast as the CPU touches pages.",
]
QUICK_NOTE = [
    "**quick pass** (--quick): a check that the benchmark works end to end, not a "
    "measurement - with 3 trials a share is coarse and p99 is the maximum"
]
MD_HEADER = """# Benchmarks

Measured results of the benchmarks in `bench/` (README "Benchmarks"), each
section written by the benchmark itself with the machine and the command.
"""


def json_name(version: int) -> str:
    return "race.json" if version == 1 else f"race-v{version}.json"


def command_line(argv: Sequence[str]) -> str:
    """The command as typed at the repo root (as root)."""
    python = os.path.relpath(sys.executable, ROOT)
    return f"sudo {python} -m bench.race {shlex.join(argv)}".strip()


def head(
    args: argparse.Namespace, version: int, agents: Sequence[Agent], top_rate_gib_s: float
) -> dict[str, Any]:
    """Everything about a run but its results."""
    where = "memguard started once per cell and stopped with SIGTERM after it"
    return {
        "benchmark": "race",
        "cgroup_version": version,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(sys.argv[1:]),
        "machine": machine_info(),
        "agents": [agent.name for agent in agents],
        "hold_flags": args.hold_flags,
        "trials_per_cell": args.trials,
        "top_rate_gib_s": top_rate_gib_s,
        "setup": [
            f"container limit {LIMIT_MIB} MiB, a new container per trial; the C agent is "
            "given the threshold memguard computes (default margin)",
            f"{args.trials} trials per cell and agent, interleaved (round-robin over the "
            f"agents, the order rotated every round); {where}",
            f"`max` rate: the hog alone touches {top_rate_gib_s} GiB/s here "
            "(128 MiB, no limit, median of 5)",
            "busy node: one spinning process per CPU; each agent in its own CPU cgroup "
            "with a 500m quota (50 ms per 100 ms)",
            "kernel won: the container's oom_kill > 0 by the end of the trial; agent won: "
            "no OOM kill and the hog (fork bomb: its first process) died of SIGKILL; "
            "close call: the agent won although the kernel had already declared OOM",
            *(QUICK_NOTE if args.quick else []),
        ],
    }


def publish(head: dict[str, Any], results: Sequence[TrialResult]) -> None:
    """The section in BENCHMARKS.md, also printed."""
    text = markdown(head, results)
    write_markdown(f"race v{head['cgroup_version']}", text)
    print(text, flush=True)


def machine_info() -> dict[str, Any]:
    """What the benchmark ran on: CPU model, CPUs, kernel, memory, memguard's commit."""
    with open("/proc/cpuinfo") as file:
        models = [line.split(":", 1)[1].strip() for line in file if line.startswith("model name")]
    with open("/proc/meminfo") as file:
        total_kib = int(next(line for line in file if line.startswith("MemTotal")).split()[1])
    return {
        "cpu": models[0] if models else platform.processor(),
        "nproc": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "memory_gib": round(total_kib / 2**20, 1),
        "commit": _commit(),
    }


def _commit() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", ROOT, *argv], capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "memguard", "native")
    return f"{head} (+ uncommitted changes in memguard/)" if dirty else head


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summarise(results: Sequence[TrialResult]) -> dict[str, Any]:
    """One agent in one cell: who won how often, and how fast it killed."""
    latencies_ms = [r.latency_s * 1000 for r in results if r.latency_s is not None]
    emptied_ms = [r.emptied_s * 1000 for r in results if r.emptied_s is not None]
    agent_won = sum(r.winner == "agent" for r in results)
    summary: dict[str, Any] = {
        "trials": len(results),
        "agent_won": agent_won,
        "kernel_won": sum(r.winner == "kernel" for r in results),
        "nobody": sum(r.winner == "nobody" for r in results),
        "close_calls": sum(r.winner == "agent" and r.oom_notified for r in results),
        "won_share": round(agent_won / len(results), 4) if results else None,
        "latency_median_ms": _rounded(statistics.median(latencies_ms) if latencies_ms else None),
        "latency_p99_ms": _rounded(percentile(latencies_ms, 0.99) if latencies_ms else None),
        "emptied_median_ms": _rounded(statistics.median(emptied_ms) if emptied_ms else None),
    }
    return summary


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def cells(results: Sequence[TrialResult], agents: Sequence[str]) -> list[dict[str, Any]]:
    """Per cell (in the order run), a summary per agent."""
    keys = list(dict.fromkeys((r.workload, r.rate, r.node) for r in results))
    out = []
    for workload, rate, node in keys:
        mine = [r for r in results if (r.workload, r.rate, r.node) == (workload, rate, node)]
        summaries = {a: summarise([r for r in mine if r.agent == a]) for a in agents}
        out.append({"workload": workload, "rate": rate, "node": node, "agents": summaries})
    return out


def write_json(path: str, head: dict[str, Any], results: Sequence[TrialResult]) -> None:
    agents = list(head["agents"])
    document = {
        **head,
        "cells": cells(results, agents),
        "trials": [dataclasses.asdict(r) for r in results],
    }
    with open(path, "w") as file:
        json.dump(document, file, indent=1)


def markdown(head: dict[str, Any], results: Sequence[TrialResult]) -> str:
    """The section of BENCHMARKS.md for this run."""
    agents = list(head["agents"])
    machine = head["machine"]
    lines = [
        f"## Race against the kernel OOM killer, cgroup v{head['cgroup_version']}"
        f" (`bench/race.py`)",
        "",
        f"- date: {head['date']}",
        f"- command: `{head['command']}`",
        f"- machine: {machine['cpu']}, {machine['nproc']} CPUs, kernel {machine['kernel']}, "
        f"{machine['memory_gib']} GiB memory; memguard {machine['commit']}",
        *[f"- {line}" for line in head["setup"]],
        *[f"- skipped {name}: {why}" for name, why in head["skipped"].items()],
        *[f"- failure: {failure}" for failure in head.get("failures", [])],
        "",
        *[
            line.format(c_ref=C_REF[head["cgroup_version"]], hold=head["hold_flags"]) + "\n"
            for line in LEGEND
        ],
        *_overview(cells(results, agents), agents),
        "",
        *_per_cell(cells(results, agents), agents),
    ]
    return "\n".join(lines) + "\n"


def _overview(summaries: Iterable[dict[str, Any]], agents: Sequence[str]) -> list[str]:
    lines = [
        "Share of trials each agent won (the kernel won the rest, unless noted); "
        "`none` is always 0: no agent.",
        "",
        "| workload | rate | node | " + " | ".join(agents) + " |",
        "|---|---|---|" + "---|" * len(agents),
    ]
    for cell in summaries:
        shares = " | ".join(_share(cell["agents"][a]) for a in agents)
        lines.append(f"| {cell['workload']} | {cell['rate']} | {cell['node']} | {shares} |")
    return lines


def _share(summary: dict[str, Any]) -> str:
    if not summary["trials"]:
        return "-"
    text = f"{summary['agent_won']}/{summary['trials']}"
    if summary["nobody"]:
        text += f" ({summary['nobody']} nobody)"
    return text


def _per_cell(summaries: Iterable[dict[str, Any]], agents: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for cell in summaries:
        lines += [
            f"### {cell['workload']}, {cell['rate']}, {cell['node']} node",
            "",
            "| agent | trials | agent won | kernel won | nobody | close calls "
            "| wake→SIGKILL median | p99 | emptied median |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for agent in agents:
            s = cell["agents"][agent]
            if not s["trials"]:
                continue
            won = f"{s['agent_won']} ({s['won_share']:.0%})"
            lines.append(
                f"| {agent} | {s['trials']} | {won} | {s['kernel_won']} | {s['nobody']} "
                f"| {s['close_calls']} | {_ms(s['latency_median_ms'])} "
                f"| {_ms(s['latency_p99_ms'])} | {_ms(s['emptied_median_ms'])} |"
            )
        lines.append("")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def write_markdown(section_key: str, text: str, path: str = BENCHMARKS_MD) -> None:
    """Replace (or append) the section between this benchmark's markers."""
    begin, end = f"<!-- {section_key} begin -->", f"<!-- {section_key} end -->"
    current = MD_HEADER
    if os.path.exists(path):
        with open(path) as file:
            current = file.read()
    block = f"{begin}\n{text}{end}\n"
    if begin in current and end in current:
        before, rest = current.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        updated = before + block + ("\n" + after if after else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + block
    with open(path, "w") as file:
        file.write(updated)
