"""What `memguard status` accepts of an answer (memguard.cli.statusanswer) and
how the views show text from it (escaped): pure, no agent, no server."""

from __future__ import annotations

import copy
import io
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memguard.cli import statusanswer
from memguard.cli.statusanswer import NotStatus
from memguard.cli.statusview import cells, headline, plain_table, rich_table


def good_page() -> dict[str, Any]:
    row = {
        "cgroup": "/tree/kubepods/pod1/c1",
        "namespace": None,
        "pod": None,
        "container": None,
        "pod_uid": "1",
        "container_id": "c1",
        "qos_class": None,
        "armed": True,
        "usage_bytes": 1 << 20,
        "limit_bytes": 256 << 20,
        "threshold_bytes": 250 << 20,
        "cache_bytes": 0,
        "reclaimable_cache_bytes": 0,
        "fill_rate_bytes_s": 12.5,
        "read_age_s": 0.2,
        "last_action": {
            "kind": "OomGuardFlush",
            "action": "flush",
            "dry_run": False,
            "at": 1.0,
            "ago_s": 3.0,
        },
    }
    agent = {
        "pid": 1,
        "parent": "/tree",
        "backend": "fake-v1",
        "policy": "noop",
        "dry_run": False,
        "started_at": 1.0,
        "guarded": 1,
        "armed": 1,
        "waiting_for_fds": 0,
        "ready": True,
        "not_ready": [],
    }
    return {"version": 1, "generated_at": 2.0, "agent": agent, "containers": [row], "omitted": 0}


def test_the_agents_page_is_accepted_and_unknown_fields_ignored() -> None:
    page = good_page()
    page["agent"]["new_field"] = {"nested": [1, 2]}
    page["containers"][0]["future"] = "x"
    assert statusanswer.parse(json.dumps(page).encode()) == page


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda p: p.pop("agent"), "no agent"),
        (lambda p: p["agent"].pop("pid"), "no agent.pid"),
        (lambda p: p["agent"].update(pid="1"), "agent.pid is text"),
        (lambda p: p["agent"].update(ready=1), "agent.ready is the number 1"),
        (lambda p: p.update(omitted=-1), "omitted is the number -1"),
        (lambda p: p["containers"][0].pop("last_action"), "no containers[0].last_action"),
        (
            lambda p: p["containers"][0].update(last_action=[]),
            "containers[0].last_action is a list",
        ),
        (lambda p: p["containers"][0]["last_action"].pop("kind"), "last_action.kind"),
        (lambda p: p["containers"][0].update(limit_bytes=1 << 64), "limit_bytes is the number"),
        (lambda p: p["containers"][0].update(read_age_s=1e300), "read_age_s is the number 1e+300"),
        (lambda p: p.update(containers={}), "containers is an object, not a list"),
        (lambda p: p.pop("version"), "no version"),
        (lambda p: p.update(version=True), "version is a boolean"),
    ],
)
def test_a_field_of_the_wrong_kind_is_named(change: Any, why: str) -> None:
    page = good_page()
    change(page)
    with pytest.raises(NotStatus, match=re.escape(why)):
        statusanswer.parse(json.dumps(page).encode())


def test_a_deep_body_is_refused_without_recursion() -> None:
    with pytest.raises(NotStatus, match="nested deeper than 16"):
        statusanswer.parse(b"[" * 100_000 + b"]" * 100_000)
    deep: Any = {"x": 1}
    for _ in range(20):
        deep = {"x": deep}  # shallow enough for json, too deep for a page
    page = good_page()
    page["agent"]["extra"] = deep
    with pytest.raises(NotStatus, match="nested deeper than 16"):
        statusanswer.check(page)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
PLACES = [
    (),
    ("agent",),
    ("containers",),  # its first row replaced
    ("containers", 0),
    ("containers", 0, "last_action"),
]


@settings(max_examples=500, deadline=None)
@given(
    place=st.sampled_from(PLACES),
    key=st.sampled_from(
        [
            "version",
            "agent",
            "containers",
            "pid",
            "parent",
            "not_ready",
            "ready",
            "cgroup",
            "usage_bytes",
            "fill_rate_bytes_s",
            "last_action",
            "kind",
            "ago_s",
            "omitted",
            "x",
        ]
    ),
    value=JSON,
)
def test_any_answer_is_a_page_or_one_reason_and_a_page_always_renders(
    place: tuple[Any, ...], key: str, value: Any
) -> None:
    page = good_page()
    target: Any = page
    for step in place:
        target = target[step]
    if isinstance(target, list):
        target[0] = copy.deepcopy(value)
    else:
        target[key] = copy.deepcopy(value)
    body = json.dumps(page, allow_nan=True).encode()
    reason = ""
    try:
        checked = statusanswer.parse(body)
    except NotStatus as error:
        reason = str(error)
    else:
        plain_table(checked)
        _console().print(rich_table(checked, 120))
    assert "\n" not in reason


def _console() -> Any:
    from rich.console import Console

    return Console(file=io.StringIO(), width=120, force_terminal=True, color_system="truecolor")


HOSTILE = "a\x1b[31mred\r\n\x07\u202e[/x][bold]"
SHOWN = "a\\x1b[31mred\\x0d\\x0a\\x07\\u202e[/x][bold]"


def test_every_text_from_the_page_is_shown_escaped() -> None:
    page = good_page()
    page["agent"].update(parent=f"/tree{HOSTILE}", ready=False, not_ready=[HOSTILE])
    row = page["containers"][0]
    row.update(cgroup=f"/tree/{HOSTILE}")
    row["last_action"]["kind"] = HOSTILE
    named = dict(row, namespace=HOSTILE, pod="p", container="c")
    page["containers"].append(named)
    c = cells(row, "/tree")
    assert (c.name, c.last) == (SHOWN, SHOWN)
    assert cells(named, "/tree").name == f"{SHOWN}/p/c"
    assert headline(page).startswith(f"memguard pid 1 on /tree{SHOWN} (fake-v1)")
    assert headline(page).endswith(f"NOT READY: {SHOWN}")
    text = plain_table(page)
    assert text.count("\n") == 2 + 2  # headline, header, two rows
    assert all(ch == "\n" or ch.isprintable() for ch in text)
    console = _console()
    console.print(rich_table(page, 200))
    screen = console.file.getvalue()
    assert SHOWN in screen  # as written: the markup too
    for raw in ("\x1b[31mred", "\r", "\x07", "\u202e"):
        assert raw not in screen
