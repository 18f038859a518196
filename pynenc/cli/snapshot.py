"""What ``pynenc status`` reports, gathered from the component contracts as plain data.

Every function here returns a JSON-ready dict whose shape is the documented,
stable ``--json`` schema of one command (docs/cli.md, docs/schemas/). The text
output of the commands is rendered from the same dicts (:mod:`pynenc.cli.render`),
so the table and the JSON never disagree.

Data comes only through the contracts: the orchestrator (records, counts,
queue depth), the broker (the next ids in claim order) and the state backend
(what supervisors and runners publish about themselves). Times are
``time.time()`` seconds; ages are seconds before ``now``.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psutil

from pynenc.exceptions import InvocationNotFoundError, PickleRefusedError, SerializationError
from pynenc.models import InvocationRecord
from pynenc.orchestrator.base import status_since
from pynenc.serializer.errors import describe_exception
from pynenc.status import EXECUTING, FINAL, QUEUED, TRANSITIONS, InvocationStatus

if TYPE_CHECKING:
    from pynenc.app import Pynenc

S = InvocationStatus

THROUGHPUT_WINDOW = 60.0
FAILED_WINDOW = 3600.0
#: Characters of one argument's repr kept in JSON (text output truncates to the terminal).
ARGUMENT_LIMIT = 500
RESULT_LIMIT = 2000
#: How deep the wait trees of ``status invocation`` go (cycles are cut anyway).
TREE_DEPTH = 6
QUEUE_PREVIEW = 5
_SLOT_STATES = {0: "EMPTY", 1: "IDLE", 2: "RUNNING", 3: "PAUSED", 4: "STOPPING"}


# ----- small helpers -----------------------------------------------------------------------
def backend_family(app: Pynenc) -> str:
    return getattr(app.orchestrator, "family", "") or type(app.orchestrator).__name__


def _age(now: float, then: float | None) -> float | None:
    if not then:
        return None
    return round(max(0.0, now - then), 3)


def _local_process_gone(host: Any, pid: Any) -> bool:
    """True when the publisher ran on this host and its process no longer exists."""
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    return not psutil.pid_exists(pid)


# ----- overview ----------------------------------------------------------------------------
def overview(app: Pynenc, now: float) -> dict[str, Any]:
    """``pynenc status``: counts, queue, throughput, per-task counts, supervisors and runners.

    Everything comes from the orchestrator's counting reads (counters and indexes on SQLite
    and Redis), never from reading every stored invocation.
    """
    orchestrator = app.orchestrator
    by_task = orchestrator.task_status_counts()
    status_counts = {status.value: 0 for status in InvocationStatus}
    tasks: dict[str, dict[str, int]] = {}
    for task_id, per_status in by_task.items():
        row = tasks.setdefault(task_id, _task_row())
        for status, count in per_status.items():
            status_counts[status.value] += count
            if status in QUEUED:
                row["queued"] += count
            elif status in EXECUTING:
                row["running"] += count
            elif status is S.PAUSED:
                row["paused"] += count
            elif status is S.SUCCESS:
                row["succeeded"] += count
    failed = orchestrator.failed_since(now - FAILED_WINDOW)
    for task_id, count in failed.items():
        tasks.setdefault(task_id, _task_row())["failed_last_hour"] = count
    failed_last_hour = sum(failed.values())
    finished_recently = orchestrator.final_count_since(now - THROUGHPUT_WINDOW)
    oldest = orchestrator.oldest_queued()
    for task_id in app.tasks:
        tasks.setdefault(task_id, _task_row())
    peers = runners(app, now)
    return {
        "app_id": app.app_id,
        "backend": backend_family(app),
        "generated_at": now,
        "status_counts": status_counts,
        "total": sum(status_counts.values()),
        "queue": {
            "depth": int(orchestrator.queue_depth()),
            "oldest_waiting_id": oldest.invocation_id if oldest else None,
            "oldest_waiting_age": _age(now, status_since(oldest)) if oldest else None,
            "next": queue_preview(app),
        },
        "throughput": {
            "window_seconds": THROUGHPUT_WINDOW,
            "finished": finished_recently,
            "per_second": round(finished_recently / THROUGHPUT_WINDOW, 3),
        },
        "failed_last_hour": failed_last_hour,
        "tasks": [{"task_id": task_id, **row} for task_id, row in sorted(tasks.items())],
        "supervisors": peers["supervisors"],
        "runners": peers["runners"],
    }


def _task_row() -> dict[str, int]:
    return {"queued": 0, "running": 0, "paused": 0, "succeeded": 0, "failed_last_hour": 0}


def queue_preview(app: Pynenc, limit: int = QUEUE_PREVIEW) -> list[dict[str, Any]]:
    """The next ids in claim order (from the broker), with their task."""
    preview = []
    for invocation_id, priority in app.broker.peek(limit):
        record = app.orchestrator.get_record(invocation_id)
        preview.append(
            {
                "invocation_id": invocation_id,
                "priority": int(priority),
                "task_id": record.task_id if record else None,
            }
        )
    return preview


# ----- supervisors and runners -------------------------------------------------------------
def runners(app: Pynenc, now: float) -> dict[str, Any]:
    """``pynenc status runners``: every published supervisor and runner, dead ones flagged.

    A runner is dead when its process is gone (checked on this host only) or its
    heartbeat is older than ``lease_seconds`` (its leases have expired by then,
    so other runners recover its work). A supervisor is dead when its process is
    gone; a RUNNING slot whose heartbeat is older than ``runner_timeout`` is
    flagged as hung (the supervisor is about to kill it).
    """
    state = app.state_backend
    dead_after = float(app.conf.lease_seconds)
    hung_after = float(app.conf.runner_timeout)
    supervisors = []
    for key, data in sorted(state.list_info("supervisor").items()):
        gone = _local_process_gone(data.get("host"), data.get("pid"))
        slots = [_slot(slot, now, hung_after) for slot in data.get("slots") or []]
        supervisors.append(
            {
                "key": key,
                "host": data.get("host"),
                "pid": data.get("pid"),
                "app": data.get("app"),
                "started_at": data.get("started_at"),
                "uptime": _age(now, data.get("started_at")),
                "processes": data.get("processes"),
                "max_paused": data.get("max_paused"),
                "alive": not gone,
                "problem": "process gone" if gone else None,
                "slots": slots,
            }
        )
    runner_rows = []
    for key, data in sorted(state.list_info("runner").items()):
        beat_age = _age(now, data.get("heartbeat"))
        problem = None
        if _local_process_gone(data.get("host"), data.get("pid")):
            problem = "process gone"
        elif beat_age is None or beat_age > dead_after:
            problem = f"no heartbeat for more than {dead_after:g} s"
        runner_rows.append(
            {
                "key": key,
                "runner_id": data.get("runner_id", key),
                "runner_cls": data.get("runner_cls"),
                "host": data.get("host"),
                "pid": data.get("pid"),
                "started_at": data.get("started_at"),
                "uptime": _age(now, data.get("started_at")),
                "heartbeat": data.get("heartbeat"),
                "heartbeat_age": beat_age,
                "alive": problem is None,
                "problem": problem,
            }
        )
    return {
        "app_id": app.app_id,
        "generated_at": now,
        "dead_after_seconds": dead_after,
        "supervisors": supervisors,
        "runners": runner_rows,
    }


def _slot(slot: dict[str, Any], now: float, hung_after: float) -> dict[str, Any]:
    state = slot.get("state")
    if isinstance(state, int):
        state = _SLOT_STATES.get(state, str(state))
    state = str(state or "EMPTY").upper()
    beat_age = _age(now, slot.get("heartbeat"))
    running_for = _age(now, slot.get("started_at")) if state in ("RUNNING", "PAUSED") else None
    hung = state == "RUNNING" and beat_age is not None and beat_age > hung_after
    return {
        "index": slot.get("index"),
        "pid": slot.get("pid") or None,
        "state": state,
        "invocation_id": slot.get("invocation_id") or None,
        "task_id": slot.get("task_id") or None,
        "running_for": running_for,
        "heartbeat_age": beat_age,
        "done": slot.get("done"),
        "rss": slot.get("rss"),
        "hung": hung,
    }


# ----- one invocation ----------------------------------------------------------------------
def invocation(app: Pynenc, invocation_id: str, now: float) -> dict[str, Any]:
    """``pynenc status invocation ID``; raises InvocationNotFoundError for an unknown id."""
    record = app.orchestrator.get_record(invocation_id)
    if record is None:
        raise InvocationNotFoundError(f"invocation {invocation_id} not found")
    return {
        "invocation_id": record.invocation_id,
        "task_id": record.task_id,
        "status": record.status.value,
        "final": record.status in FINAL,
        "arguments": {name: app.serializer.render(text, ARGUMENT_LIMIT) for name, text in record.arguments.items()},
        "call_key": record.call_key,
        "parent_invocation_id": record.parent_invocation_id,
        "owner": record.owner,
        "created_at": record.created_at or None,
        "age": _age(now, record.created_at),
        "num_retries": record.num_retries,
        "stalls": record.stalls,
        "history": [
            {"status": entry.status.value, "timestamp": entry.timestamp, "runner_id": entry.runner_id}
            for entry in record.history
        ],
        "result": _result(app, record),
        "error": _error(record),
        "waiting_for": _tree(app, record.waiting_for, "waiting_for", {record.invocation_id}, TREE_DEPTH),
        "waited_by": _tree(app, record.waited_by, "waited_by", {record.invocation_id}, TREE_DEPTH),
    }


def _result(app: Pynenc, record: InvocationRecord) -> dict[str, Any] | None:
    if record.result is None or record.status is not S.SUCCESS:
        return None
    try:
        shown = repr(app.serializer.loads(record.result))
    except PickleRefusedError:
        shown = f"<pickled, {len(record.result)} characters, not loaded>"
    except Exception as exc:  # a result of a class this process cannot import, a corrupt payload
        shown = f"<undecodable: {type(exc).__name__}: {exc}>"
    truncated = len(shown) > RESULT_LIMIT
    return {"repr": shown[: RESULT_LIMIT - 3] + "..." if truncated else shown, "truncated": truncated}


def _error(record: InvocationRecord) -> dict[str, Any] | None:
    if record.error is None:
        return None
    try:
        data = describe_exception(record.error)
    except SerializationError as exc:
        return {"type": "<undecodable>", "message": str(exc), "traceback": ""}
    return {
        "type": str(data.get("type", "")),
        "message": str(data.get("message", "")),
        "traceback": str(data.get("traceback", "")),
    }


def _tree(app: Pynenc, ids: Iterable[str], direction: str, seen: set[str], depth: int) -> list[dict[str, Any]]:
    """The invocations in ``direction`` ("waiting_for"/"waited_by"), transitively, as nested nodes."""
    nodes = []
    for invocation_id in ids:
        record = app.orchestrator.get_record(invocation_id)
        node: dict[str, Any] = {
            "invocation_id": invocation_id,
            "task_id": record.task_id if record else None,
            "status": record.status.value if record else None,
            "children": [],
            "cut": None,
        }
        if record is None:
            node["cut"] = "not found"
        elif invocation_id in seen:
            node["cut"] = "cycle"
        elif depth <= 1 and getattr(record, direction):
            node["cut"] = "depth"
        else:
            node["children"] = _tree(app, getattr(record, direction), direction, seen | {invocation_id}, depth - 1)
        nodes.append(node)
    return nodes


# ----- tasks -------------------------------------------------------------------------------
def tasks(app: Pynenc, now: float) -> dict[str, Any]:
    """``pynenc status tasks``: every task of the app or seen in the backend, options and counts."""
    counts = {
        task_id: {status.value: count for status, count in per_status.items()}
        for task_id, per_status in app.orchestrator.task_status_counts().items()
    }
    failed_recent = app.orchestrator.failed_since(now - FAILED_WINDOW)
    rows = []
    for task_id in sorted(set(counts) | set(app.tasks)):
        task = app.tasks.get(task_id)
        per_status = counts.get(task_id, {})
        rows.append(
            {
                "task_id": task_id,
                "registered": task is not None,
                "options": task_options(task) if task is not None else None,
                "counts": {status.value: per_status.get(status.value, 0) for status in InvocationStatus},
                "total": sum(per_status.values()),
                "failed_last_hour": failed_recent.get(task_id, 0),
            }
        )
    return {"app_id": app.app_id, "generated_at": now, "tasks": rows}


def task_options(task: Any) -> dict[str, Any]:
    """Every option of a task as JSON values (enums by name, exception classes by dotted name)."""
    conf = task.conf
    return {name: _option_value(getattr(conf, name)) for name in conf.settings()}


def _option_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_option_value(item) for item in value]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, enum.Enum):
        return value.value
    return value


# ----- the state machine -------------------------------------------------------------------
def graph() -> dict[str, Any]:
    """``pynenc status graph --json``: the transition table as data."""
    return {
        "statuses": [status.value for status in InvocationStatus],
        "final": [status.value for status in InvocationStatus if status in FINAL],
        "queued": [status.value for status in InvocationStatus if status in QUEUED],
        "transitions": [
            {"from": source.value, "to": target.value, "by": rule}
            for source, targets in TRANSITIONS.items()
            for target, rule in targets.items()
        ],
    }
