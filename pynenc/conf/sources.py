"""Where configuration values come from, lowest precedence first.

defaults < ``[tool.pynenc]`` in pyproject.toml < a config file (TOML, YAML or
JSON, named by ``config_filepath`` or ``PYNENC__FILEPATH``) < environment
variables < values set in code (``config_values`` or ``app.conf.x = ...``).

Files may group settings in sections (``[tool.pynenc.redis]``,
``[tool.pynenc.sqlite]``, ``runner:`` ...); sections are flattened. The
``task`` section holds per-task options keyed by task id (``tasks.add``).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pynenc.exceptions import ConfigurationError

TASK_SECTION = "task"


def find_pyproject(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_pyproject(path: Path | None = None) -> dict[str, Any]:
    path = path or find_pyproject()
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    section = data.get("tool", {}).get("pynenc", {})
    return section if isinstance(section, dict) else {}


def read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigurationError(f"config file {path!r} cannot be read: {exc}") from exc
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
            data = data.get("tool", {}).get("pynenc", data)
        elif suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigurationError(f"config file {path!r}: use a .toml, .yaml, .yml or .json file")
    except ConfigurationError:
        raise
    except Exception as exc:  # each parser has its own error type
        raise ConfigurationError(f"config file {path!r} is not valid {suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path!r} must hold a mapping of settings")
    return data


def flatten(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split a file's mapping into app settings (sections flattened) and per-task options."""
    settings: dict[str, Any] = {}
    tasks: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key == TASK_SECTION and isinstance(value, dict):
            for task_id, options in value.items():
                if isinstance(options, dict):
                    tasks[str(task_id)] = dict(options)
        elif isinstance(value, dict):
            inner, inner_tasks = flatten(value)
            settings.update(inner)
            tasks.update(inner_tasks)
        else:
            settings[key] = value
    return settings, tasks


def environ_settings(names: dict[str, list[str]]) -> dict[str, tuple[Any, str]]:
    """Settings given in the environment: {name: (raw value, variable name)}."""
    found: dict[str, tuple[Any, str]] = {}
    upper_env = {key.upper(): (key, value) for key, value in os.environ.items() if key.upper().startswith("PYNENC__")}
    for name, variables in names.items():
        for variable in variables:
            if variable in upper_env:
                found[name] = (upper_env[variable][1], upper_env[variable][0])
                break
    return found


def environ_task_options(task_id: str) -> dict[str, tuple[str, str]]:
    """``PYNENC__CONFIGTASK__<MODULE>#<TASK>__<OPTION>`` values for one task."""
    module, _, name = task_id.rpartition(".")
    wanted = {f"{module}#{name}".upper(), f"{module.replace('.', '_')}#{name}".upper()}
    found: dict[str, tuple[str, str]] = {}
    prefix = "PYNENC__CONFIGTASK__"
    for key, value in os.environ.items():
        upper = key.upper()
        if not upper.startswith(prefix):
            continue
        rest = upper[len(prefix) :]
        target, sep, option = rest.rpartition("__")
        if sep and target in wanted:
            found[option.lower()] = (value, key)
    return found
