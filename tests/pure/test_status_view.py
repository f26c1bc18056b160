"""`memguard status` rows, tables and where it looks for an agent (pure: no agent)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from memguard.cli.options import RUN_OPTIONS, resolve
from memguard.cli.status import DEFAULT_URL, socket_candidates, sources, url_source
from memguard.cli.statusview import ago, bar_text, cells, label, plain_table, short_size, tail
from memguard.errors import ConfigError
from memguard.policy.model import MIB

UID = "6b1e2c3a-1111-2222-3333-444455556666"
CID = "ab" * 32


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cgroup": f"/sys/fs/cgroup/memory/kubepods/burstable/pod{UID}/{CID}",
        "usage_bytes": 128 * MIB,
        "limit_bytes": 256 * MIB,
        "threshold_bytes": 250 * MIB,
        "cache_bytes": 32 * MIB,
        "fill_rate_bytes_s": 2.0 * MIB,
        "read_age_s": 0.5,
        "last_action": None,
    }
    return {**base, **overrides}


PARENT = "/sys/fs/cgroup/memory"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"namespace": "shop", "pod": "web-0", "container": "app"}, "shop/web-0/app"),
        ({"namespace": "shop", "pod": "web-0", "container": None}, "shop/web-0/?"),
        ({}, f"kubepods/burstable/pod6b1e2c3a/{CID[:12]}"),
        (
            {
                "cgroup": f"{PARENT}/kubepods.slice/kubepods-burstable.slice/"
                f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope"
            },
            f"kubepods-burstable-pod6b1e2c3a/crio-{CID[:12]}",
        ),
        ({"cgroup": "/elsewhere/docker/x"}, "/elsewhere/docker/x"),
    ],
)
def test_label(row: dict[str, Any], expected: str) -> None:
    assert label(entry(**row), PARENT) == expected


def test_cells_of_a_container_halfway() -> None:
    c = cells(entry(), PARENT)
    assert (c.used_cells, c.cache_cells, c.threshold_cell) == (10, 2, 19)
    assert c.level == "ok"
    assert (c.used, c.threshold, c.limit, c.cache) == ("128.0Mi", "250.0Mi", "256.0Mi", "25%")
    assert c.rate == "+2.0Mi/s"
    assert bar_text(c) == "[########::.........|]"


@pytest.mark.parametrize(
    ("usage_mib", "level"), [(200, "ok"), (230, "near"), (250, "over"), (256, "over")]
)
def test_level_follows_the_threshold(usage_mib: int, level: str) -> None:
    assert cells(entry(usage_bytes=usage_mib * MIB), PARENT).level == level


def test_unlimited_and_unread_containers() -> None:
    unlimited = cells(entry(limit_bytes=None, threshold_bytes=None), PARENT)
    assert (unlimited.level, unlimited.limit, unlimited.used_cells) == ("unlimited", "none", 0)
    assert bar_text(unlimited) == "[" + "." * 20 + "]"
    unread = cells(entry(usage_bytes=None, cache_bytes=None), PARENT)
    assert (unread.level, unread.used, unread.cache) == ("unknown", "-", "-")


def test_a_stale_rate_is_not_shown_and_last_actions_have_words() -> None:
    assert cells(entry(read_age_s=30.0), PARENT).rate == "-"
    assert cells(entry(fill_rate_bytes_s=-1.5 * MIB), PARENT).rate == "-1.5Mi/s"
    kill = {"kind": "OomGuardKillProcess", "dry_run": True, "ago_s": 125.0}
    c = cells(entry(last_action=kill), PARENT)
    assert (c.last, c.last_ago) == ("kill process (dry run)", "2m")


def test_plain_table() -> None:
    agent = {"pid": 7, "parent": PARENT, "backend": "cgroup-v1", "policy": "process"}
    agent.update(guarded=2, armed=2, ready=True, dry_run=False)
    page = {
        "agent": agent,
        "containers": [entry(), entry(cgroup=f"{PARENT}/docker/{'cd' * 32}", usage_bytes=MIB)],
    }
    lines = plain_table(page).splitlines()
    assert lines[0] == (
        f"memguard pid 7 on {PARENT} (cgroup-v1), policy process: guarding 2, armed 2, ready"
    )
    assert lines[1].split()[:2] == ["CONTAINER", "USAGE"]
    assert lines[2].startswith(f"kubepods/burstable/pod6b1e2c3a/{CID[:12]}  [########::")
    assert "128.0MiB / 250.0MiB / 256.0MiB" in lines[2]
    assert lines[3].startswith(f"docker/{'cd' * 6}")
    empty = plain_table({"agent": {"ready": False, "not_ready": ["x"]}, "containers": []})
    assert "NOT READY: x" in empty
    assert empty.endswith("(no container guarded)\n")


def test_small_helpers() -> None:
    assert [short_size(v) for v in (None, 512, 1536, 3 * MIB)] == ["-", "512B", "1.5Ki", "3.0Mi"]
    assert tail("abcdefgh", 5) == "…efgh"
    assert tail("abc", 5) == "abc"
    assert [ago(v) for v in (None, 3.2, 90, 7200, 172800)] == ["-", "3s", "2m", "2.0h", "2.0d"]


def args(**given: str | None) -> argparse.Namespace:
    return argparse.Namespace(socket=given.get("socket"), url=given.get("url"))


def test_where_status_looks() -> None:
    found = sources(args(), {"XDG_RUNTIME_DIR": "/run/user/1000"})
    assert [(s.where, s.unix) for s in found] == [
        ("/run/memguard/status.sock", True),
        ("/run/user/1000/memguard/status.sock", True),
        (DEFAULT_URL, False),
    ]
    assert socket_candidates({}) == ["/run/memguard/status.sock"]
    configured = sources(args(), {"MEMGUARD_STATUS_SOCKET": "/tmp/s.sock"})
    assert [s.where for s in configured] == ["/tmp/s.sock"]
    assert [s.where for s in sources(args(socket="/x.sock"), {})] == ["/x.sock"]
    assert sources(args(url=":9637"), {})[0].where == "http://127.0.0.1:9637"
    assert url_source("127.0.0.1:1").where == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        url_source("ftp://127.0.0.1:1")
    for host in (".", "a..b", "a" * 64):  # the resolver's IDNA step raised UnicodeError
        with pytest.raises(ValueError, match="not a host name"):
            url_source(f"http://{host}:9")


def test_the_status_socket_option() -> None:
    def parsed(text: str) -> Any:
        return resolve(RUN_OPTIONS, {"status_socket": text}, {})["status_socket"]

    assert parsed("auto") == "auto"
    assert parsed("off") == "off"
    assert parsed("/run/x.sock") == "/run/x.sock"
    assert resolve(RUN_OPTIONS, {}, {})["status_socket"] == "auto"
    with pytest.raises(ConfigError, match="longer than a unix socket path"):
        parsed("/" + "x" * 120)


@pytest.mark.parametrize("text", ["relative.sock", "AUTO", "./x.sock", " /x.sock", ""])
def test_a_relative_status_socket_path_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        resolve(RUN_OPTIONS, {"status_socket": text}, {})


def test_a_row_shows_the_newest_reading_not_a_stale_rate_sample() -> None:
    """Two readings closer than the rate's minimum gap: the second is no rate sample,
    and the row showed the first one's usage beside the second one's cache."""
    import dataclasses
    from typing import cast

    from memguard.guarding.guard import Guard
    from memguard.guarding.view import view_of
    from memguard.policy.model import MemorySnapshot
    from memguard.policy.paths import leaf_ref
    from memguard.policy.rates import MIN_SAMPLE_GAP_S, sampled
    from memguard.policy.state import GuardState

    first = MemorySnapshot(usage_bytes=100 * MIB, limit_bytes=256 * MIB, cache_bytes=20 * MIB)
    second = dataclasses.replace(first, usage_bytes=102 * MIB, cache_bytes=21 * MIB)
    state = sampled(GuardState(), first, 10.0, light=False)
    state = sampled(state, second, 10.0 + MIN_SAMPLE_GAP_S / 2, light=False)
    assert state.sample_usage_bytes == first.usage_bytes  # the rate kept the first

    @dataclasses.dataclass
    class Held:  # what view_of reads of a guard
        state: GuardState
        last_snapshot: MemorySnapshot | None
        last_snapshot_at_s: float | None
        last_report: None = None
        cgroup_dir: str = "/x/kubepods/pod1/c1"
        ref: object = dataclasses.field(default_factory=lambda: leaf_ref("/x/kubepods/pod1/c1"))
        armed: bool = True
        armed_threshold_bytes: int | None = 250 * MIB

    held = Held(state, second, 10.0 + MIN_SAMPLE_GAP_S / 2)
    view = view_of(cast(Guard, held), 11.0)
    assert (view.usage_bytes, view.cache_bytes) == (second.usage_bytes, second.cache_bytes)
    assert view.read_age_s == pytest.approx(1.0 - MIN_SAMPLE_GAP_S / 2)
    # a light reading (usage only) newer than the last full one: its usage is shown
    light = sampled(state, dataclasses.replace(second, usage_bytes=110 * MIB), 10.5, light=True)
    view = view_of(cast(Guard, Held(light, second, 10.0 + MIN_SAMPLE_GAP_S / 2)), 11.0)
    assert view.usage_bytes == 110 * MIB
