"""``pynenc --app tasks.app show_config``: the effective settings and where each came from."""

from __future__ import annotations

import json

import click

from pynenc.conf.config_pynenc import ConfigPynenc


@click.command("show_config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {setting: {value, source}}.")
@click.pass_obj
def show_config(handle: object, as_json: bool) -> None:
    """Print every setting of the app, its value and its source (default, pyproject, file, env, code)."""
    app = handle.app  # type: ignore[attr-defined]
    conf = app.conf
    rows = [(name, getattr(conf, name), conf.source_of(name)) for name in ConfigPynenc.settings()]
    if as_json:
        payload = {name: {"value": _jsonable(value), "source": source} for name, value, source in rows}
        payload["task_options"] = {"value": conf.task_options, "source": "see task_option_sources"}
        click.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    width = max(len(name) for name, _, _ in rows)
    click.echo(f"app {app.app_id}")
    for name, value, source in rows:
        shown = "***" if "password" in name and value else repr(value)
        click.echo(f"  {name:<{width}}  {shown:<30}  {source}")
    for task_id, options in sorted(conf.task_options.items()):
        for option, value in sorted(options.items()):
            click.echo(f"  task {task_id}.{option} = {value!r}  {conf.task_option_sources.get(f'{task_id}.{option}')}")


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
