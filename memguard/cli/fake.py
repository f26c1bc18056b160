"""`memguard fake init | drive | clean`: build, drive and remove fake trees.

init and clean handle signals (memguard.cli.signals) while they change the
tree: a stop signal during init lets the build finish (a few tens of ms), then
removes the tree and its processes and exits 128 + the signal's number; one
during clean lets it finish. The tree's marker is written before any process
is started (memguard.fake.tree.build), so `fake clean` removes what even a
killed init left.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

from memguard.cli.signals import Signals
from memguard.errors import ConfigError, MemguardError
from memguard.fake import drive, scenario, tree
from memguard.units import format_size, parse_duration, parse_size


def _say(line: str) -> None:
    print(line, flush=True)


def _say_to_stderr(line: str) -> None:
    print(f"memguard fake: {line}", file=sys.stderr, flush=True)


def _require_tree(root: str) -> list[tree.FakeContainer]:
    from memguard.fake import model

    if model.find_marker(root) != os.path.abspath(root):
        raise ConfigError(
            f"{root} is not a memguard fake tree (create one: memguard fake init DIR)"
        )
    return tree.load_containers(root)


def _init(root: str, cgroup_version: int) -> int:
    stopping = f"stopping, removing {root} and its processes"
    signals = Signals(_say_to_stderr, stopping).install()
    try:
        containers = _build(root, cgroup_version)
        signals.deliver()
        if signals.stop_signal is not None:
            tree.clean(root)
            return signals.exit_code
    finally:
        signals.close()  # built (or removed): a signal now cannot leave half of it
    _say(f"fake kubepods tree (cgroup v{cgroup_version} files) in {os.path.abspath(root)}:")
    for container in containers:
        relative = os.path.relpath(container.path, root)
        _say(
            f"  {container.name:<6} {container.ref.qos_class:<10} limit "
            f"{format_size(container.limit_bytes):<9} pids {' '.join(map(str, container.pids))}"
        )
        _say(f"         {relative}")
    _say("next: memguard run --parent DIR --policy process   (in another terminal)")
    _say("      memguard fake drive DIR                       (grow usage: flush, skip, kill)")
    _say("      memguard fake clean DIR                       (kill the processes, remove DIR)")
    return 0


def _build(root: str, cgroup_version: int) -> list[tree.FakeContainer]:
    """The tree (ConfigError when root cannot be one: exit 2); a build that fails
    half way is removed (its processes are gone already) and is one line, exit 1."""
    try:
        return tree.build(root, cgroup_version=cgroup_version)
    except OSError as error:
        failed = f"cannot build a fake tree in {root}: {error.strerror or error}"
        try:
            tree.clean(root)
        except OSError as cleaning:
            left = (
                f"{failed}; left it (memguard fake clean {root}): {cleaning.strerror or cleaning}"
            )
            raise MemguardError(left) from None
        raise MemguardError(failed) from None


async def _drive_scenario(root: str, containers: list[tree.FakeContainer]) -> None:
    by_name = {c.name: c for c in containers}
    for phase in scenario.PHASES:
        await scenario.run_phase(root, by_name[phase.container], phase, _say)


async def _drive_one(root: str, container: tree.FakeContainer, args: argparse.Namespace) -> None:
    kind = drive.Kind(args.kind)
    step_bytes = parse_size(args.step)
    interval_s = parse_duration(args.interval)
    for _ in range(int(args.steps)):
        result = drive.step(root, container.path, kind, step_bytes)
        if result is None:
            _say(f"{container.name} is gone")
            return
        oom = f", kernel OOM killed {result.kernel_oom_pid}" if result.kernel_oom_pid else ""
        _say(
            f"{container.name}: usage {format_size(result.usage_bytes)} of "
            f"{format_size(result.limit_bytes)}, {result.members} processes{oom}"
        )
        await trio.sleep(interval_s)


def _drive(args: argparse.Namespace) -> int:
    containers = _require_tree(args.dir)
    if args.container is None:
        trio.run(_drive_scenario, args.dir, containers)
        return 0
    matching = [c for c in containers if c.name == args.container]
    if not matching:
        names = ", ".join(c.name for c in containers)
        raise ConfigError(f"no container {args.container!r} in {args.dir} (have: {names})")
    try:
        parse_size(args.step), parse_duration(args.interval), int(args.steps)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    trio.run(_drive_one, args.dir, matching[0], args)
    return 0


def dispatch(args: argparse.Namespace) -> int:
    if args.fake_command == "init":
        return _init(args.dir, args.cgroup_version)
    if args.fake_command == "drive":
        return _drive(args)
    _require_tree(args.dir)
    signals = Signals(_say_to_stderr, "finishing the clean first").install()
    try:
        killed = tree.clean(args.dir)
        signals.deliver()
    finally:
        signals.close()
    print(f"killed {killed} processes, removed {args.dir}", file=sys.stdout)
    return 0
