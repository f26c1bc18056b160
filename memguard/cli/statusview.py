"""Rows of `memguard status`: the /status JSON turned into cells, a plain-text
table (not a TTY, --once piped) and a rich table (a terminal). rich is imported
by rich_table() only, so plain output and the agent never load it.

One row per guarded container, as the JSON orders them (nearest the threshold
first): its name (namespace/pod/container when the pod cache knows it, else its
cgroup path below --parent with long ids cut), a bar of usage against the limit
with the threshold marked, usage / threshold / limit, the page-cache share of
usage, the fill rate, and the last action with how long ago it was.

Every text from the page (names, the last action's kind, the headline's words)
is shown escaped (memguard.text.escape_controls), in both tables: a cgroup
named with ESC, CR, LF, BEL or a bidi override cannot move the cursor, colour
or rewrite the screen. The rich table takes Text, never markup: a name with
"[red]" or "[/x]" in it is shown as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memguard.text import escape_controls
from memguard.units import format_size

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

BAR_CELLS = 20
NARROW_BAR_CELLS = 12
NAME_CELLS = 48  # a longer name is cut from the left in the terminal view
RATE_SHOWN_FOR_S = 1.0  # an older reading's rate says nothing about now: shown as "-"
WARN_CLOSENESS = 0.9  # usage / threshold from which a row is yellow
_LONG_HEX = re.compile(r"[0-9a-f]{32,}")
_UID = re.compile(r"([0-9a-f]{8})[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}")
ACTION_WORDS = {
    "OomGuardFlush": "flush",
    "OomGuardSkip": "skip",
    "OomGuardKillProcess": "kill process",
    "OomGuardKillContainer": "kill container",
    "OomGuardNoop": "noop",
    "OomGuardNoVictim": "no victim",
    "CgroupOOM": "kernel OOM",
}


def label(entry: dict[str, Any], parent: str) -> str:
    """namespace/pod/container, or the cgroup path below parent with ids cut and
    no .slice/.scope (a systemd path from its pod slice on: it names the QoS class)."""
    if entry.get("namespace") and entry.get("pod"):
        return "/".join(
            str(p) for p in (entry["namespace"], entry["pod"], entry.get("container") or "?")
        )
    path = str(entry.get("cgroup", ""))
    if parent and path.startswith(parent.rstrip("/") + "/"):
        path = path[len(parent.rstrip("/")) + 1 :]
    parts = path.split("/")
    if len(parts) > 2 and parts[-2].startswith("kubepods-"):
        path = "/".join(parts[-2:])  # a systemd pod slice names the QoS class and the pod
    path = _LONG_HEX.sub(
        lambda m: m.group(0)[:12], path.replace(".slice", "").replace(".scope", "")
    )
    return _UID.sub(lambda m: m.group(1), path)


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _size(value: object) -> str:
    return format_size(value) if isinstance(value, int) else "-"


def short_size(value: object) -> str:
    """'250.9Mi', '8.0Mi', '1.5Gi', '512B', '-' (a table cell)."""
    if not isinstance(value, int):
        return "-"
    return format_size(value).removesuffix("B") if value >= 1024 else f"{value}B"


def tail(text: str, width: int) -> str:
    """text cut from the left to width (the end of a name tells containers apart)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


@dataclass(frozen=True)
class Cells:
    name: str
    used_cells: int  # of BAR_CELLS: usage against the limit
    cache_cells: int  # of used_cells: the page-cache part
    threshold_cell: int | None  # where the threshold is
    level: str  # ok | near | over | unlimited | unknown
    sizes: str  # usage / threshold / limit
    used: str
    threshold: str
    limit: str
    cache: str
    rate: str
    last: str
    last_ago: str


def cells(entry: dict[str, Any], parent: str) -> Cells:
    usage, limit = entry.get("usage_bytes"), entry.get("limit_bytes")
    threshold, cache = entry.get("threshold_bytes"), entry.get("cache_bytes")
    used = cache_part = 0
    threshold_cell = None
    if isinstance(usage, int) and isinstance(limit, int) and limit > 0:
        used = min(BAR_CELLS, round(BAR_CELLS * usage / limit))
        if isinstance(cache, int) and usage > 0:
            cache_part = min(used, round(used * cache / usage))
        if isinstance(threshold, int):
            threshold_cell = min(BAR_CELLS - 1, int(BAR_CELLS * threshold / limit))
    level = "unknown" if not isinstance(usage, int) else "unlimited"
    if isinstance(usage, int) and isinstance(threshold, int) and threshold > 0:
        closeness = usage / threshold
        level = "over" if closeness >= 1 else "near" if closeness >= WARN_CLOSENESS else "ok"
    share = "-"
    if isinstance(usage, int) and isinstance(cache, int) and usage > 0:
        share = f"{100 * cache / usage:.0f}%"
    last = entry.get("last_action")
    return Cells(
        name=escape_controls(label(entry, parent)),
        used_cells=used,
        cache_cells=cache_part,
        threshold_cell=threshold_cell,
        level=level,
        sizes=f"{_size(usage)} / {_size(threshold)} / {_size(limit) if limit else 'unlimited'}",
        used=short_size(usage),
        threshold=short_size(threshold),
        limit=short_size(limit) if limit else "none",
        cache=share,
        rate=_rate(entry),
        last=escape_controls(_action(last)),
        last_ago=ago(last.get("ago_s")) if isinstance(last, dict) else "-",
    )


def _rate(entry: dict[str, Any]) -> str:
    rate, age = entry.get("fill_rate_bytes_s"), entry.get("read_age_s")
    if not isinstance(rate, int | float) or not isinstance(age, int | float):
        return "-"
    if age > RATE_SHOWN_FOR_S:
        return "-"
    sign = "-" if rate < 0 else "+"
    return f"{sign}{short_size(int(abs(rate)))}/s"


def _action(last: object) -> str:
    if not isinstance(last, dict):
        return "-"
    word = ACTION_WORDS.get(str(last.get("kind")), str(last.get("kind")))
    return f"{word} (dry run)" if last.get("dry_run") else word


def bar_text(c: Cells) -> str:
    """The bar in ASCII: '#' memory, ':' page cache, '|' the threshold, '.' free."""
    chars = ["#"] * (c.used_cells - c.cache_cells) + [":"] * c.cache_cells
    chars += ["."] * (BAR_CELLS - len(chars))
    if c.threshold_cell is not None:
        chars[c.threshold_cell] = "|"
    return "[" + "".join(chars) + "]"


COLUMNS = ("CONTAINER", "USAGE", "USED / THRESHOLD / LIMIT", "CACHE", "RATE", "LAST", "AGO")


def headline(page: dict[str, Any]) -> str:
    """The agent's line (escaped: its texts come from the page)."""
    agent = page.get("agent", {})
    ready = "ready" if agent.get("ready") else "NOT READY: " + "; ".join(agent.get("not_ready", []))
    dry = " (dry run)" if agent.get("dry_run") else ""
    omitted = f", {page['omitted']} more not shown" if page.get("omitted") else ""
    return escape_controls(
        f"memguard pid {agent.get('pid')} on {agent.get('parent')} ({agent.get('backend')}), "
        f"policy {agent.get('policy')}{dry}: guarding {agent.get('guarded')}, "
        f"armed {agent.get('armed')}, {ready}{omitted}"
    )


def plain_table(page: dict[str, Any]) -> str:
    """The page as plain text: a headline and fixed-width columns."""
    parent = str(page.get("agent", {}).get("parent", ""))
    rows = [COLUMNS]
    for entry in page.get("containers", []):
        c = cells(entry, parent)
        rows.append((c.name, bar_text(c), c.sizes, c.cache, c.rate, c.last, c.last_ago))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [headline(page)]
    for row in rows:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if len(rows) == 1:
        lines.append("(no container guarded)")
    return "\n".join(lines) + "\n"


_LEVEL_STYLE = {
    "ok": "green",
    "near": "yellow",
    "over": "bold red",
    "unlimited": "dim",
    "unknown": "dim",
}


def _rich_bar(c: Cells, width: int = BAR_CELLS) -> RenderableType:
    from rich.text import Text

    style = _LEVEL_STYLE[c.level]
    scale = width / BAR_CELLS
    used, cache = round(c.used_cells * scale), round(c.cache_cells * scale)
    mark = None if c.threshold_cell is None else min(width - 1, int(c.threshold_cell * scale))
    bar = Text()
    for index in range(width):
        if index == mark:
            bar.append("│", style="bold")
        elif index < used - cache:
            bar.append("█", style=style)
        elif index < used:
            bar.append("▒", style=style)
        else:
            bar.append("·", style="dim")
    return bar


NARROW_WIDTH = 120  # below: a shorter bar, no THRESHOLD and LIMIT columns (the bar has them)


def _rich_columns(width: int) -> tuple[tuple[str, int], ...]:
    """(header, cells) of every column but CONTAINER, for a terminal this wide."""
    bar = BAR_CELLS if width >= NARROW_WIDTH else NARROW_BAR_CELLS
    sizes = (
        (("USED", 7), ("THRESHOLD", 9), ("LIMIT", 7)) if width >= NARROW_WIDTH else (("USED", 7),)
    )
    return (("MEMORY", bar), *sizes, ("CACHE", 5), ("RATE", 10), ("LAST", 14), ("AGO", 4))


def rich_table(page: dict[str, Any], width: int = NARROW_WIDTH) -> RenderableType:
    """The page as a rich Table for a terminal `width` cells wide: every column
    has its width, CONTAINER takes the rest (a longer name is cut from the left).
    Every cell and the title are Text (module docstring: no markup)."""
    from rich.text import Text

    parent = str(page.get("agent", {}).get("parent", ""))
    columns = _rich_columns(width)
    gaps = 2 * len(columns)  # two cells between columns, none at the edges
    name_cells = max(12, min(NAME_CELLS, width - sum(w for _, w in columns) - gaps - 1))
    table = _empty_rich_table(headline(page), name_cells, columns)
    headers = [header for header, _ in columns]
    for entry in page.get("containers", []):
        c = cells(entry, parent)
        values = _rich_cells(c, columns[0][1])
        style = _LEVEL_STYLE[c.level] if c.level in ("near", "over") else ""
        table.add_row(Text(tail(c.name, name_cells)), *(values[h] for h in headers), style=style)
    legend = "bar: the limit; █ memory ▒ page cache │ threshold"
    table.caption = legend if page.get("containers") else "no container guarded"
    table.caption_justify = "left"
    return table


def _empty_rich_table(title: str, name_cells: int, columns: tuple[tuple[str, int], ...]) -> Table:
    """The table's frame: its title, CONTAINER and the (header, cells) columns."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(title),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("CONTAINER", width=name_cells, no_wrap=True, overflow="ellipsis")
    for header, cells_wide in columns:
        table.add_column(
            header,
            width=cells_wide,
            no_wrap=True,
            overflow="ellipsis",
            justify="left" if header in ("MEMORY", "LAST") else "right",
        )
    return table


def _rich_cells(c: Cells, bar_cells: int) -> dict[str, RenderableType]:
    """A row's cells by header (a narrow terminal shows some of them)."""
    from rich.text import Text

    return {
        "MEMORY": _rich_bar(c, bar_cells),
        "USED": Text(c.used),
        "THRESHOLD": Text(c.threshold),
        "LIMIT": Text(c.limit),
        "CACHE": Text(c.cache),
        "RATE": Text(c.rate),
        "LAST": Text(c.last),
        "AGO": Text(c.last_ago),
    }
