"""Text output of ``pynenc status``: rich tables rendered from the snapshot dicts.

Colours only when stdout is a terminal (rich decides, and honours ``NO_COLOR``);
tables take the terminal's width (``COLUMNS`` or 80 when not a terminal) and
cut long cells with an ellipsis instead of wrapping them into unreadable rows.
"""

from __future__ import annotations

import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from pynenc.status import FINAL, TRANSITIONS, InvocationStatus

#: Characters of an argument shown in text (``--json`` keeps up to 500).
TEXT_ARGUMENT_LIMIT = 160

_STATUS_STYLE = {
    "SUCCESS": "green",
    "FAILED": "red",
    "KILLED": "red",
    "CONCURRENCY_CONTROLLED_FINAL": "yellow",
    "RUNNING": "cyan",
    "RESUMED": "cyan",
    "PENDING": "cyan",
    "PAUSED": "magenta",
    "RETRY": "yellow",
    "PENDING_RECOVERY": "yellow",
    "RUNNING_RECOVERY": "yellow",
}


def console() -> Console:
    """A console on the current stdout (click's CliRunner swaps it, so build one per command)."""
    return Console(highlight=False, soft_wrap=False)


def duration(seconds: float | None) -> str:
    """Short human form of a duration: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def size(num_bytes: int | None) -> str:
    if not num_bytes:
        return "-"
    return f"{num_bytes / (1024 * 1024):.1f} MiB"


def status_text(status: str | None) -> Text:
    if status is None:
        return Text("not found", style="red")
    return Text(status, style=_STATUS_STYLE.get(status, ""))


#: Columns holding ids and names: they give up width first when the terminal is narrow.
_LONG_COLUMNS = {"invocation", "task", "runner", "options", "value", "host"}


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title or None, title_justify="left", expand=False, show_edge=False, pad_edge=False)
    for name in columns:
        # Only long columns give up width (rich collapses wrapable columns); they fold onto more
        # lines rather than lose characters, because operators copy ids from them.
        if name in _LONG_COLUMNS:
            table.add_column(name, overflow="fold", min_width=8)
        else:
            table.add_column(name, overflow="ellipsis", no_wrap=True, min_width=len(name))
    return table


def _fields() -> Table:
    """A two-column key/value grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, style="bold", min_width=12)
    grid.add_column(overflow="fold")
    return grid


# ----- overview ----------------------------------------------------------------------------
def overview(data: dict[str, Any]) -> RenderableType:
    queue = data["queue"]
    throughput = data["throughput"]
    head = Text.assemble(
        (f"app {data['app_id']}", "bold"),
        f"  backend {data['backend']}  at {clock(data['generated_at'])}\n",
        f"queue depth {queue['depth']}  oldest waiting {duration(queue['oldest_waiting_age'])}",
        f" ({queue['oldest_waiting_id']})" if queue["oldest_waiting_id"] else "",
        f"\nthroughput {throughput['finished']} finished in the last {throughput['window_seconds']:g}s",
        f" ({throughput['per_second']:g}/s)  failed in the last hour {data['failed_last_hour']}",
    )
    counts = _table("by status", "status", "count")
    for status, count in data["status_counts"].items():
        if count:
            counts.add_row(status_text(status), str(count))
    counts.add_row(Text("total", style="bold"), str(data["total"]))
    parts: list[RenderableType] = [head, counts]
    if queue["next"]:
        upcoming = _table("next in the queue", "invocation", "task", "priority")
        for row in queue["next"]:
            upcoming.add_row(row["invocation_id"], row["task_id"] or "-", str(row["priority"]))
        parts.append(upcoming)
    if data["tasks"]:
        per_task = _table("tasks", "task", "queued", "running", "paused", "succeeded", "failed 1h")
        for row in data["tasks"]:
            failed = Text(str(row["failed_last_hour"]), style="red" if row["failed_last_hour"] else "")
            cells = (str(row[k]) for k in ("queued", "running", "paused", "succeeded"))
            per_task.add_row(row["task_id"], *cells, failed)
        parts.append(per_task)
    parts.extend(peers(data))
    return Group(*parts)


# ----- supervisors and runners -------------------------------------------------------------
def peers(data: dict[str, Any]) -> list[RenderableType]:
    parts: list[RenderableType] = []
    if not data["supervisors"]:
        parts.append(Text("no live supervisors published"))
    for sup in data["supervisors"]:
        flag = Text(" DEAD: " + sup["problem"], style="bold red") if not sup["alive"] else Text("")
        title = Text.assemble(
            ("supervisor ", "bold"),
            f"{sup['host']} pid {sup['pid']} up {duration(sup['uptime'])} processes {sup['processes']}",
            f" max paused {sup['max_paused']}",
            flag,
        )
        slots = _table("", "#", "pid", "state", "invocation", "task", "for", "beat", "RSS")
        for slot in sup["slots"]:
            state = Text(slot["state"] + (" (hung?)" if slot["hung"] else ""), style="red" if slot["hung"] else "")
            slots.add_row(
                str(slot["index"]),
                str(slot["pid"] or "-"),
                state,
                slot["invocation_id"] or "-",
                slot["task_id"] or "-",
                duration(slot["running_for"]),
                duration(slot["heartbeat_age"]),
                size(slot["rss"]),
            )
        parts.extend([title, slots])
    if data["runners"]:
        table = _table("runners", "runner", "class", "host", "pid", "up", "heartbeat", "alive")
        for row in data["runners"]:
            alive = Text("yes", style="green") if row["alive"] else Text(f"DEAD: {row['problem']}", style="bold red")
            table.add_row(
                row["runner_id"],
                row["runner_cls"] or "-",
                str(row["host"]),
                str(row["pid"]),
                duration(row["uptime"]),
                duration(row["heartbeat_age"]),
                alive,
            )
        parts.append(table)
    else:
        parts.append(Text("no runners published"))
    return parts


def runners(data: dict[str, Any]) -> RenderableType:
    head = Text(f"app {data['app_id']}: runners are dead after {data['dead_after_seconds']:g}s without heartbeat")
    return Group(head, *peers(data))


# ----- one invocation ----------------------------------------------------------------------
def invocation(data: dict[str, Any]) -> RenderableType:
    info = _fields()
    info.add_row("invocation", data["invocation_id"])
    info.add_row("task", data["task_id"])
    info.add_row("status", status_text(data["status"]))
    info.add_row("created", f"{clock(data['created_at'])} ({duration(data['age'])} ago)")
    info.add_row("owner", data["owner"] or "-")
    info.add_row("parent", data["parent_invocation_id"] or "-")
    info.add_row("retries", str(data["num_retries"]))
    info.add_row("stalls", str(data["stalls"]))
    for name, shown in data["arguments"].items():
        info.add_row(f"arg {name}", shown if len(shown) <= TEXT_ARGUMENT_LIMIT else shown[:TEXT_ARGUMENT_LIMIT] + "...")
    history = _table("history", "time", "status", "runner")
    for entry in data["history"]:
        history.add_row(clock(entry["timestamp"]), status_text(entry["status"]), entry["runner_id"] or "-")
    parts: list[RenderableType] = [info, history]
    if data["result"] is not None:
        parts.append(Text.assemble(("result ", "bold"), data["result"]["repr"]))
    if data["error"] is not None:
        error = data["error"]
        parts.append(Text.assemble(("error ", "bold red"), f"{error['type']}: {error['message']}"))
        if error["traceback"]:
            parts.append(Text(error["traceback"].rstrip()))
    for key, label in (("waiting_for", "waits for"), ("waited_by", "waited for by")):
        tree = Tree(Text(f"{data['invocation_id']} {label}", style="bold"))
        _grow(tree, data[key])
        parts.append(tree if data[key] else Text(f"{label}: nothing"))
    return Group(*parts)


def _grow(tree: Tree, nodes: list[dict[str, Any]]) -> None:
    for node in nodes:
        label = Text.assemble(node["invocation_id"], " ", node["task_id"] or "", " ", status_text(node["status"]))
        if node["cut"] and node["cut"] != "not found":
            label.append(f" ({node['cut']}: not expanded)", style="dim")
        _grow(tree.add(label), node["children"])


# ----- tasks -------------------------------------------------------------------------------
def tasks(data: dict[str, Any]) -> RenderableType:
    table = _table(f"tasks of app {data['app_id']}", "task", "queued", "running", "paused", "success", "failed", "1h")
    notes: list[str] = []
    for row in data["tasks"]:
        counts = row["counts"]
        queued = sum(counts[s] for s in ("REGISTERED", "REROUTED", "RETRY", "CONCURRENCY_CONTROLLED"))
        running = sum(counts[s] for s in ("PENDING", "RUNNING", "RESUMED"))
        cells = (queued, running, counts["PAUSED"], counts["SUCCESS"], counts["FAILED"], row["failed_last_hour"])
        table.add_row(row["task_id"], *(str(cell) for cell in cells))
        if not row["registered"]:
            notes.append(f"  {row['task_id']}: (not in this app: seen in the backend only)")
        else:
            notes.append(f"  {row['task_id']}: {_non_default_options(row['options'])}")
    legend = Text("1h: failed in the last hour; options that differ from the defaults:\n" + "\n".join(notes))
    return Group(table, legend)


_DEFAULT_OPTIONS: dict[str, Any] = {
    "running_concurrency": "DISABLED",
    "registration_concurrency": "DISABLED",
    "key_arguments": [],
    "on_diff_non_key_args_raise": False,
    "reroute_on_concurrency_control": True,
    "retry_for": ["pynenc.exceptions.RetryError"],
    "max_retries": 0,
    "parallel_batch_size": 100,
}


def _non_default_options(options: dict[str, Any]) -> str:
    """Only what differs from the defaults, so the column stays short."""
    changed = [f"{name}={value}" for name, value in options.items() if _DEFAULT_OPTIONS.get(name) != value]
    return ", ".join(changed) or "defaults"


# ----- the state machine -------------------------------------------------------------------
def graph_text() -> str:
    """The transition table as text: one block per status, final ones marked."""
    lines = ["Invocation statuses (final ones marked *); transitions and who makes them:", ""]
    for source, targets in TRANSITIONS.items():
        mark = " *" if source in FINAL else ""
        lines.append(f"{source.value}{mark}")
        if not targets:
            lines.append("    (no way out)")
        for target, rule in targets.items():
            lines.append(f"    -> {target.value:<30} {rule}")
    return "\n".join(lines) + "\n"


_EDGE_STYLE = {"owner": "solid", "system": "dashed", "operator": "dotted"}


def graph_dot() -> str:
    """The transition table as Graphviz dot (owner edges solid, system dashed, operator dotted)."""
    lines = [
        "digraph pynenc_invocation_status {",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    for status in InvocationStatus:
        attributes = ', peripheries=2, style="rounded,bold"' if status in FINAL else ""
        lines.append(f'    "{status.value}" [label="{status.value}"{attributes}];')
    for source, targets in TRANSITIONS.items():
        for target, rule in targets.items():
            lines.append(f'    "{source.value}" -> "{target.value}" [label="{rule}", style={_EDGE_STYLE[rule]}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
