"""pynenc-supervisor's options come from the declared settings; HUP forgets only project modules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pynenc.supervisors import cli

from pynenc.conf.config_pynenc import ConfigPynenc
from pynenc.exceptions import ConfigurationError


def test_every_supervisor_setting_is_an_option_and_every_option_a_setting() -> None:
    settings = ConfigPynenc.settings()
    supervisor_group = {name for name, spec in settings.items() if spec.group == "supervisor"}
    assert supervisor_group <= set(cli.OPTION_SETTINGS)
    assert set(cli.OPTION_SETTINGS) <= set(settings)


def test_help_lists_each_option_with_its_setting_and_env_var() -> None:
    result = CliRunner().invoke(cli.supervisor, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in cli.OPTION_SETTINGS:
        assert f"--{name.replace('_', '-')}" in result.output
        assert ConfigPynenc.settings()[name].env_vars[0] in result.output
    assert "--log-format" in result.output


def test_missing_app_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli.supervisor, [], env={"PYNENC_APP": ""})
    assert result.exit_code == 2
    assert "--app" in result.output


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "cli_sv_tasks.py").write_text(
        "from pynenc import Pynenc\napp = Pynenc(config_values={'sqlite_db_path': 'x.db'})\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("cli_sv_tasks", None)


def test_options_override_settings_and_name_their_source(project: Path) -> None:
    app, _ = cli.load_configured_app("cli_sv_tasks.app", {"processes": "7", "graceful_timeout": "2.5"})
    assert (app.conf.processes, app.conf.graceful_timeout) == (7, 2.5)
    assert app.conf.source_of("processes") == "option --processes"


def test_a_bad_option_value_is_a_configuration_error_naming_the_setting(project: Path) -> None:
    with pytest.raises(ConfigurationError, match="processes"):
        cli.load_configured_app("cli_sv_tasks.app", {"processes": "lots"})


def test_reload_forgets_project_modules_but_keeps_libraries(project: Path) -> None:
    baseline = set(sys.modules)
    importlib.import_module("cli_sv_tasks")
    importlib.import_module("colorsys")  # a library module first imported after the baseline
    cli._forget_project_modules(baseline)
    assert "cli_sv_tasks" not in sys.modules
    assert "colorsys" in sys.modules or "colorsys" in baseline


def test_reload_forgets_the_apps_package_even_when_installed_with_libraries(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = set(sys.modules)
    importlib.import_module("cli_sv_tasks")
    # as if the project were pip-installed: its file under the interpreter's prefix
    monkeypatch.setattr(sys, "prefix", str(project))
    cli._forget_project_modules(baseline, "cli_sv_tasks.app")
    assert "cli_sv_tasks" not in sys.modules
