"""Operator actions: ``pynenc invocation retry ID``, ``pynenc invocation kill ID``, ``pynenc purge``.

Each is one atomic orchestrator transition (see :mod:`pynenc.orchestrator.base`):

- kill: any non-final invocation -> KILLED (whoever waits for its result gets
  InvocationKilledError). Refused for final ones and those being recovered.
- retry: FAILED, KILLED or CONCURRENCY_CONTROLLED_FINAL -> REROUTED (queued again).
  Refused for every other status.

A refused action prints why and exits 1; an unknown id says "not found" and exits 1.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pynenc.cli.status_cmd import emit_json, operator_app
from pynenc.exceptions import InvocationNotFoundError

_json_option = click.option("--json", "as_json", is_flag=True, help="Print the documented JSON document instead.")

_REFUSED = {
    "kill": "only invocations that are not final (and not being recovered) can be killed",
    "retry": "only FAILED, KILLED or CONCURRENCY_CONTROLLED_FINAL invocations can be retried",
}


@click.group("invocation")
def invocation() -> None:
    """Operator actions on one invocation."""


@invocation.command("retry")
@click.argument("invocation_id")
@_json_option
@click.pass_context
def retry(ctx: click.Context, invocation_id: str, as_json: bool) -> None:
    """Queue a FAILED, KILLED or CONCURRENCY_CONTROLLED_FINAL invocation again (as REROUTED)."""
    _act(ctx, "retry", invocation_id, as_json)


@invocation.command("kill")
@click.argument("invocation_id")
@_json_option
@click.pass_context
def kill(ctx: click.Context, invocation_id: str, as_json: bool) -> None:
    """End a non-final invocation as KILLED (its runner's work is discarded)."""
    _act(ctx, "kill", invocation_id, as_json)


def _act(ctx: click.Context, action: str, invocation_id: str, as_json: bool) -> None:
    orchestrator = operator_app(ctx).orchestrator
    before = orchestrator.get_status(invocation_id)
    if before is None:
        raise InvocationNotFoundError(f"invocation {invocation_id} not found")
    done = bool(getattr(orchestrator, action)(invocation_id))
    after = orchestrator.get_status(invocation_id)
    result = {
        "invocation_id": invocation_id,
        "action": action,
        "done": done,
        "status_before": before.value,
        "status_after": after.value if after is not None else None,
        "reason": None if done else f"{_REFUSED[action]} (it is {after or before})",
    }
    if as_json:
        emit_json(result)
    elif done:
        click.echo(f"{action}: invocation {invocation_id} {before} -> {after}")
    else:
        click.echo(f"pynenc: cannot {action} invocation {invocation_id}: {result['reason']}", err=True)
    if not done:
        ctx.exit(1)


@click.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required when stdin is not a terminal).")
@_json_option
@click.pass_context
def purge(ctx: click.Context, yes: bool, as_json: bool) -> None:
    """Remove every invocation, result and queue entry of this app (and only this app)."""
    app = operator_app(ctx)
    removed = sum(app.orchestrator.status_counts().values())
    if not yes:
        if not _stdin_is_terminal():
            raise click.UsageError("purge deletes everything of the app: pass --yes (stdin is not a terminal)")
        prompt = f"Remove all {removed} invocations of app {app.app_id!r} ({_where(app)})?"
        if not click.confirm(prompt, default=False):
            click.echo("pynenc: purge cancelled", err=True)
            ctx.exit(1)
    app.purge()
    if as_json:
        emit_json({"app_id": app.app_id, "purged": True, "invocations_removed": removed})
    else:
        click.echo(f"purged app {app.app_id}: {removed} invocations removed")


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _where(app: Any) -> str:
    return str(getattr(app.orchestrator, "family", "") or type(app.orchestrator).__name__) + " backend"
