"""Fault matrix, names: a cgroup whose name is not UTF-8 (Linux takes any byte
but '/' and NUL) or carries control characters is guarded like any other, and
breaks no output - /metrics (prometheus_client encodes strictly), /status, the
JSON log (strict parsers refuse lone surrogates) - for it or for the others."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable

from memguard.fake import drive
from memguard.policy.model import MIB
from testing.agentproc import FakeContainer, agent_process, wait_exit

UID = "3f2504e0-4f89-11d3-9a0c-0305e82c3302"
ODD_NAMES = (os.fsdecode(b"bad\xff\xfe"), "esc\x1b[31mred", "cr\rbell\x07", "rtl\u202eevil")


def _strict_json(line: str) -> dict[str, object]:
    """A log line as a strict parser reads it: UTF-8 and no lone surrogate."""
    line.encode("utf-8")  # raises on a lone surrogate
    assert "\\ud" not in line.lower(), line  # nor one escaped
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


async def test_names_that_are_not_text_break_no_output(
    empty_fake_root: str,
    tmp_path: pathlib.Path,
    make_fake_container: Callable[[str, str, int], FakeContainer],
) -> None:
    odd = [make_fake_container(empty_fake_root, f"odd/{name}", 256 * MIB) for name in ODD_NAMES]
    plain = make_fake_container(empty_fake_root, f"kubepods/pod{UID}/{'a' * 64}", 256 * MIB)
    log = tmp_path / "agent.log"
    args = ["--parent", empty_fake_root, "--kubernetes", "off", "--match", "leaf"]
    with agent_process([*args, "--log-format", "json"], stderr=log) as agent:
        await agent.wait_ready()
        text = await agent.metrics()
        assert 'cgroup="odd/bad\\\\xff\\\\xfe"' in text  # the bytes, written out
        assert f'cgroup="kubepods/pod{UID}/{"a" * 64}"' in text
        status, body = await agent.get("/status")
        assert status == 200, body
        cgroups = {row["cgroup"] for row in json.loads(body)["containers"]}
        assert os.path.join(empty_fake_root, "odd", "bad\\xff\\xfe") in cgroups
        assert len(cgroups) == len(odd) + 1
        drive.step(empty_fake_root, odd[0].path, drive.Kind.ANON, 250 * MIB)
        await wait_exit(odd[0].pid, 30, "memguard did not kill the oddly named container")
        drive.step(empty_fake_root, plain.path, drive.Kind.ANON, 250 * MIB)
        await wait_exit(plain.pid, 30, "memguard did not kill the plain container")
        status, _ = await agent.get("/metrics")
        assert status == 200
        assert agent.stop() == 0
    lines = [_strict_json(line) for line in log.read_text().splitlines()]
    kills = [line for line in lines if line.get("kind") == "OomGuardKillContainer"]
    assert {str(line["cgroup"]).rsplit("/", 1)[-1] for line in kills} == {"bad\\xff\\xfe", "a" * 64}
    assert not any("Traceback" in str(line) for line in lines)


async def test_text_log_lines_stay_one_line_each(
    empty_fake_root: str,
    tmp_path: pathlib.Path,
    make_fake_container: Callable[[str, str, int], FakeContainer],
) -> None:
    for name in ODD_NAMES:
        make_fake_container(empty_fake_root, f"odd/{name}", 256 * MIB)
    log = tmp_path / "agent.log"
    args = ["--parent", empty_fake_root, "--kubernetes", "off", "--match", "leaf"]
    with agent_process(args, stderr=log) as agent:
        await agent.wait_ready()
        assert agent.stop() == 0
    raw = log.read_bytes()
    raw.decode("utf-8")  # every byte of it UTF-8
    guarding = [line for line in raw.decode().splitlines() if " guarding /" in line]
    assert len(guarding) == len(ODD_NAMES), guarding
    assert any("odd/bad\\xff\\xfe:" in line for line in guarding)
    assert any("odd/esc\\x1b[31mred:" in line for line in guarding)
    assert any("odd/rtl\\u202eevil:" in line for line in guarding)
    assert not any(c in raw for c in (b"\x1b", b"\r", b"\x07", "\u202e".encode()))
