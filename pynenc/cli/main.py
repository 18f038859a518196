"""The ``pynenc`` command: ``pynenc --app tasks.app <command>``.

Commands live in modules of this package, one per area, each exposing click
commands that :func:`build_cli` adds to the group. Errors pynenc knows about
(bad app, bad settings, backend unreachable) end the command with a one-line
message and a distinct exit code, never a traceback:

====  ==========================================================
code  meaning
====  ==========================================================
0     done
1     the command ran and found a problem (e.g. not found)
2     bad usage (click's own code)
3     backend unavailable (Redis down, database unreadable)
4     the app cannot be imported (``--app``)
5     bad configuration
====  ==========================================================
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pynenc.cli.app_loader import load_app
from pynenc.exceptions import AppLoadError, BackendUnavailableError, ConfigurationError, PynencError

EXIT_FOUND_PROBLEM = 1
EXIT_BACKEND_UNAVAILABLE = 3
EXIT_APP_LOAD = 4
EXIT_CONFIGURATION = 5


class PynencGroup(click.Group):
    """A click group that turns pynenc errors into a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AppLoadError as exc:
            _fail(str(exc), EXIT_APP_LOAD)
        except ConfigurationError as exc:
            _fail(f"configuration error: {exc}", EXIT_CONFIGURATION)
        except BackendUnavailableError as exc:
            _fail(str(exc), EXIT_BACKEND_UNAVAILABLE)
        except PynencError as exc:
            _fail(f"{type(exc).__name__}: {exc}", EXIT_FOUND_PROBLEM)


def _fail(message: str, code: int) -> None:
    click.echo(f"pynenc: {message}", err=True)
    sys.exit(code)


class AppHandle:
    """The ``--app`` of the group, imported on first use (``--help`` must not import it)."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            if not self.spec:
                raise click.UsageError("this command needs --app module.attribute (or env PYNENC_APP)")
            self._app = load_app(self.spec)
        return self._app


def build_cli() -> click.Group:
    from pynenc.cli import config_cmd, invocation_cmd, runner_cmd, status_cmd

    @click.group(cls=PynencGroup)
    @click.option("--app", "app_spec", envvar="PYNENC_APP", help="The app, as module.attribute (e.g. tasks.app).")
    @click.version_option(package_name="pynenc")
    @click.pass_context
    def cli(ctx: click.Context, app_spec: str | None) -> None:
        """pynenc: distributed task orchestration for Python."""
        ctx.obj = AppHandle(app_spec)

    cli.add_command(config_cmd.show_config)
    cli.add_command(runner_cmd.runner)
    cli.add_command(status_cmd.status)
    cli.add_command(invocation_cmd.invocation)
    cli.add_command(invocation_cmd.purge)
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli().main(args=argv, prog_name="pynenc")
