"""``pynenc --app tasks.app status ...``: what the system is doing, from any host.

Everything is read from the backend through the component contracts (see
:mod:`pynenc.cli.snapshot`), so the answer never depends on runners replying.
Each command prints rich tables, or with ``--json`` the documented JSON
document (docs/cli.md; schemas in docs/schemas/).

``--json`` may be given to ``status`` itself or to its subcommand
(``pynenc status --json tasks`` == ``pynenc status tasks --json``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import click
from rich.live import Live

from pynenc.cli import render, snapshot

FORMATS = ("text", "dot", "svg")


def operator_app(ctx: click.Context) -> Any:
    """The ``--app``, seen from a process other than its runners' (an operator's terminal).

    An app left on the memory default is read from the SQLite file ``pynenc-supervisor``
    uses for it (:meth:`Pynenc.use_shared_backend_default`), so ``pynenc status`` run where
    the supervisor runs sees its work. An app put on the memory backend on purpose keeps its
    invocations inside its own process: say so rather than show an empty system.
    """
    app = ctx.obj.app
    if ctx.meta.get("pynenc.operator_app_checked"):
        return app
    ctx.meta["pynenc.operator_app_checked"] = True
    switch = getattr(app, "use_shared_backend_default", None)
    setting = switch() if callable(switch) else None
    if setting:
        click.echo(f"pynenc: no backend configured for app {app.app_id}; reading {setting}", err=True)
    elif snapshot.backend_family(app) == "mem":
        click.echo(
            f"pynenc: app {app.app_id} uses the memory backend: only this process's invocations are "
            "visible; configure redis_url or sqlite_db_path to see what runners elsewhere do",
            err=True,
        )
    return app


def emit_json(data: Any, compact: bool = False) -> None:
    if compact:
        click.echo(json.dumps(data, sort_keys=True, separators=(",", ":")))
    else:
        click.echo(json.dumps(data, indent=2, sort_keys=True))


def _wants_json(ctx: click.Context, own: bool) -> bool:
    parent = ctx.parent
    return own or bool(parent is not None and parent.params.get("as_json"))


_json_option = click.option("--json", "as_json", is_flag=True, help="Print the documented JSON document instead.")


@click.group("status", invoke_without_command=True)
@_json_option
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C (with --json: one document per line).")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option(
    "--count", type=click.IntRange(min=0), default=0, help="With --watch: stop after this many refreshes (0: never)."
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, interval: float, count: int) -> None:
    """One screen: counts by status and task, queue, throughput, supervisors, slots and runners."""
    if ctx.invoked_subcommand is not None:
        if watch:
            raise click.UsageError("--watch refreshes the overview only: use `pynenc status --watch`")
        return
    app = operator_app(ctx)
    if not watch:
        data = snapshot.overview(app, time.time())
        if as_json:
            emit_json(data)
        else:
            render.console().print(render.overview(data))
        return
    try:
        _watch(app, as_json, interval, count)
    except KeyboardInterrupt:
        pass


def _watch(app: Any, as_json: bool, interval: float, count: int) -> None:
    """Refresh every ``interval`` seconds; in place on a terminal, frame after frame otherwise."""
    refreshes = 0

    def frames() -> Any:
        nonlocal refreshes
        while True:
            yield snapshot.overview(app, time.time())
            refreshes += 1
            if count and refreshes >= count:
                return
            time.sleep(interval)  # the refresh period, not a synchronisation

    if as_json:
        for data in frames():
            emit_json(data, compact=True)
        return
    console = render.console()
    if not console.is_terminal:
        for data in frames():
            console.print(render.overview(data))
            console.print()
        return
    with Live(console=console, auto_refresh=False, screen=False) as live:
        for data in frames():
            live.update(render.overview(data), refresh=True)


@status.command("invocation")
@click.argument("invocation_id")
@_json_option
@click.pass_context
def invocation(ctx: click.Context, invocation_id: str, as_json: bool) -> None:
    """One invocation: arguments, history, result or error, what it waits for and what waits for it.

    An unknown id is reported as not found (exit code 1), never as pending.
    """
    data = snapshot.invocation(operator_app(ctx), invocation_id, time.time())
    if _wants_json(ctx, as_json):
        emit_json(data)
    else:
        render.console().print(render.invocation(data))


@status.command("tasks")
@_json_option
@click.pass_context
def tasks(ctx: click.Context, as_json: bool) -> None:
    """Every task of the app or seen in the backend, with its options and counts by status."""
    data = snapshot.tasks(operator_app(ctx), time.time())
    if _wants_json(ctx, as_json):
        emit_json(data)
    else:
        render.console().print(render.tasks(data))


@status.command("runners")
@_json_option
@click.pass_context
def runners(ctx: click.Context, as_json: bool) -> None:
    """Every published supervisor (with its slots) and runner, with heartbeat ages; dead ones flagged."""
    data = snapshot.runners(operator_app(ctx), time.time())
    if _wants_json(ctx, as_json):
        emit_json(data)
    else:
        render.console().print(render.runners(data))


@status.command("graph")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
@_json_option
@click.pass_context
def graph(ctx: click.Context, fmt: str, output: Path | None, as_json: bool) -> None:
    """The invocation status state machine, generated from the transition table (no --app needed).

    ``--format svg`` runs Graphviz ``dot``; without it installed, use ``--format dot``.
    """
    if _wants_json(ctx, as_json):
        text = json.dumps(snapshot.graph(), indent=2, sort_keys=True) + "\n"
    elif fmt == "text":
        text = render.graph_text()
    elif fmt == "dot":
        text = render.graph_dot()
    else:
        text = _svg(ctx)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"pynenc: wrote {output}", err=True)


def _svg(ctx: click.Context) -> str:
    dot = shutil.which("dot")
    if dot is None:
        click.echo(
            "pynenc: Graphviz 'dot' is not installed, so no SVG: install graphviz "
            "(e.g. apt-get install graphviz) or use --format dot and render it elsewhere",
            err=True,
        )
        ctx.exit(1)
    done = subprocess.run([dot, "-Tsvg"], input=render.graph_dot(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        click.echo(f"pynenc: dot -Tsvg failed ({done.returncode}): {done.stderr.strip()}", err=True)
        ctx.exit(1)
    return done.stdout


status.add_command(graph, "render")
