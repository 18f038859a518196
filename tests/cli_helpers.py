"""Running the ``pynenc`` CLI in tests and checking its ``--json`` against docs/schemas/cli.schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from click.testing import CliRunner, Result

from pynenc.cli.main import build_cli

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "schemas" / "cli.schema.json"
APP_SPEC = "tests.cli_app.app"


def schema_for(name: str) -> dict[str, Any]:
    """The documented schema of one command's JSON (a ``$defs`` entry of the schema file)."""
    document = json.loads(SCHEMA_PATH.read_text())
    assert name in document["$defs"], f"no schema {name!r} documented"
    return {"$schema": document["$schema"], "$defs": document["$defs"], "$ref": f"#/$defs/{name}"}


def validate(name: str, data: Any) -> None:
    schema = schema_for(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


def cli(*args: str, app_spec: str | None = APP_SPEC, input: str | None = None) -> Result:
    prefix = ["--app", app_spec] if app_spec else []
    return CliRunner().invoke(build_cli(), [*prefix, *args], input=input, catch_exceptions=False)


def cli_json(schema: str, *args: str, expect_exit: int = 0) -> Any:
    """Run a command with --json, check its exit code and validate its output against ``schema``."""
    result = cli(*args, "--json")
    assert result.exit_code == expect_exit, result.output
    data = json.loads(result.stdout)
    validate(schema, data)
    return data
