"""``pynenc-supervisor --app tasks.app --processes N``: the process-pool daemon.

Every option comes from a setting declared in :mod:`pynenc.conf.config_pynenc` (its name
with dashes, its description as help), so the same value can come from the environment
(``PYNENC__PROCESSES=4``), a config file or pyproject.toml; a flag given on the command
line wins.  Exit codes (distinct, so systemd can refuse to restart what cannot work):

====  ===============================================================
code  meaning
====  ===============================================================
0     stopped by TERM/INT/QUIT
1     unexpected error
2     bad usage (click's own code)
3     a runner failed to boot, or the backend cannot be reached
4     the app cannot be imported (``--app``)
5     bad configuration (a setting's value, a memory-only backend)
====  ===============================================================
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import click
from pynenc.supervisors.arbiter import Arbiter

from pynenc.cli.app_loader import load_app
from pynenc.conf.config_pynenc import ConfigPynenc
from pynenc.exceptions import AppLoadError, BackendUnavailableError, ConfigurationError

EXIT_UNEXPECTED = 1
EXIT_BOOT_ERROR = 3
EXIT_APP_LOAD = 4
EXIT_CONFIGURATION = 5

#: settings offered as options, in --help order; extra option names for some
OPTION_SETTINGS = (
    "processes",
    "max_paused",
    "runner_timeout",
    "graceful_timeout",
    "max_tasks_per_child",
    "max_memory_per_child",
    "lease_seconds",
    "max_stalls",
    "recovery_interval",
    "logging_level",
    "logging_format",
)
ALIASES = {"logging_format": ["--log-format"], "logging_level": ["--log-level"]}


def ensure_shared_backend(app: Any) -> str | None:
    """Make sure runner processes share the app's backend; return a setting to tell the user.

    An app left on the memory default is switched to SQLite by
    ``Pynenc.use_shared_backend_default()`` (which returns the setting other processes need
    to find the same database); a memory backend configured on purpose is refused.
    """
    switch = getattr(app, "use_shared_backend_default", None)
    setting = switch() if callable(switch) else None
    if getattr(app.orchestrator, "family", "") == "mem":
        raise ConfigurationError(
            f"app {app.app_id!r} uses the memory backend, which runner processes cannot share; "
            "configure Redis (redis_url) or SQLite (sqlite_db_path)"
        )
    return setting if isinstance(setting, str) else None


def _forget_project_modules(baseline: set[str], app_spec: str = "") -> None:
    """Drop modules imported since ``baseline`` that are the project's own code (for HUP).

    The project's code is the app's top-level package (wherever it is installed, site-packages
    included: deploying with ``pip install`` then reloading must pick the new version) and any
    module outside the interpreter's prefixes.  Other libraries and pynenc stay loaded.
    """
    prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    top = app_spec.split(".", 1)[0]
    for name in set(sys.modules) - baseline:
        if name == "pynenc" or name.startswith("pynenc."):
            continue
        path = getattr(sys.modules.get(name), "__file__", None) or ""
        ours = bool(top) and (name == top or name.startswith(f"{top}."))
        if ours or (path and not path.startswith(prefixes)):
            del sys.modules[name]
    importlib.invalidate_caches()


def load_configured_app(spec: str, overrides: dict[str, Any]) -> tuple[Any, str | None]:
    app = load_app(spec)
    for name, value in overrides.items():
        app.conf.set(name, value, source=f"option --{name.replace('_', '-')}")
    return app, ensure_shared_backend(app)


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    settings = ConfigPynenc.settings()
    for name in reversed(OPTION_SETTINGS):
        spec = settings[name]
        flags = [f"--{name.replace('_', '-')}", *ALIASES.get(name, [])]
        help_text = f"{spec.description} [setting {name}, env {spec.env_vars[0]}; default {spec.default!r}]"
        metavar = type(spec.default).__name__.upper()
        func = click.option(*flags, name, default=None, metavar=metavar, help=help_text)(func)
    return func


def _fail(message: str, code: int) -> None:
    click.echo(f"pynenc-supervisor: {message}", err=True)
    sys.exit(code)


@click.command("pynenc-supervisor", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app", "app_spec", envvar="PYNENC_APP", required=True, help="The app, as module.attribute.")
@_options
def supervisor(app_spec: str, **values: str | None) -> None:
    """Fork and watch a pool of runner processes for one pynenc app.

    Signals: TERM/INT warm shutdown (a second one: cold), QUIT cold shutdown, HUP reload the
    app and replace the runners, TTIN/TTOU one runner more/fewer.
    """
    overrides = {name: value for name, value in values.items() if value is not None}
    baseline = set(sys.modules)
    try:
        app, setting = load_configured_app(app_spec, overrides)
    except AppLoadError as exc:
        _fail(str(exc), EXIT_APP_LOAD)
    except ConfigurationError as exc:
        _fail(f"configuration error: {exc}", EXIT_CONFIGURATION)
    except BackendUnavailableError as exc:
        _fail(f"backend unavailable: {exc}", EXIT_BOOT_ERROR)
    if setting:
        click.echo(f"pynenc-supervisor: no shared backend configured; using {setting}", err=True)

    def reload() -> Any:
        _forget_project_modules(baseline, app_spec)
        new_app, _ = load_configured_app(app_spec, overrides)
        return new_app

    arbiter = Arbiter(app, app_name=app_spec, reload=reload)
    try:
        code = arbiter.run()
    except BackendUnavailableError as exc:
        _fail(f"backend unavailable: {exc}", EXIT_BOOT_ERROR)
    if code == EXIT_BOOT_ERROR:
        _fail("a runner failed to boot (see the log above); not restarting runners", EXIT_BOOT_ERROR)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    supervisor.main(args=argv, prog_name="pynenc-supervisor")
