"""The app's settings (``app.conf``): every setting pynenc reads, declared once."""

from __future__ import annotations

import os
from typing import Any

from pynenc.conf import sources
from pynenc.conf.settings import (
    Setting,
    parse_bool,
    parse_choice,
    parse_log_level,
    parse_non_negative_float,
    parse_non_negative_int,
    parse_optional_str,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_str,
    settings_of,
)
from pynenc.exceptions import ConfigurationError


class ConfigBase:
    """Holds values and where each came from; subclasses declare :class:`Setting` attributes."""

    def __init__(
        self,
        config_values: dict[str, Any] | None = None,
        config_filepath: str | None = None,
    ) -> None:
        self._values: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        self.task_options: dict[str, dict[str, Any]] = {}
        self.task_option_sources: dict[str, str] = {}
        specs = self.settings()
        pyproject = sources.find_pyproject()
        if pyproject is not None:
            self._apply_mapping(sources.read_pyproject(pyproject), f"pyproject.toml ({pyproject})")
        filepath = config_filepath or os.environ.get("PYNENC__FILEPATH")
        if filepath:
            self._apply_mapping(sources.read_config_file(filepath), f"file {filepath}")
        env_names = {name: spec.env_vars for name, spec in specs.items()}
        for name, (raw, variable) in sources.environ_settings(env_names).items():
            self.set(name, raw, source=f"env {variable}")
        for name, value in (config_values or {}).items():
            if name == sources.TASK_SECTION and isinstance(value, dict):
                self._apply_mapping({name: value}, "code")
            else:
                self.set(name, value, source="code")

    @classmethod
    def settings(cls) -> dict[str, Setting[Any]]:
        return settings_of(cls)

    def _apply_mapping(self, data: dict[str, Any], source: str) -> None:
        values, tasks = sources.flatten(data)
        for name, value in values.items():
            self.set(name, value, source=source)
        for task_id, options in tasks.items():
            self.task_options.setdefault(task_id, {}).update(options)
            for option in options:
                self.task_option_sources[f"{task_id}.{option}"] = source

    def set(self, name: str, value: Any, source: str = "code") -> None:
        spec = self.settings().get(name)
        if spec is None:
            raise ConfigurationError(
                f"unknown setting {name!r} (from {source}); see docs/configuration.md for the valid settings"
            )
        self._values[name] = spec.coerce(value, source)
        self._sources[name] = source
        self._on_change(name)

    def _on_change(self, name: str) -> None:
        """Hook for owners that cache something derived from a setting."""

    def source_of(self, name: str) -> str:
        return self._sources.get(name, "default")

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.settings()}


def _component(kind: str) -> Any:
    def parse(value: Any) -> str:
        from pynenc.components import check_component_name

        return check_component_name(kind, parse_str(value))

    return parse


class ConfigPynenc(ConfigBase):
    """Settings of a pynenc app. Set in code, env vars, a config file or pyproject.toml."""

    app_id = Setting(parse_str, "pynenc", "Name of the app; keys and files of the app are named after it.")
    orchestrator_cls = Setting(_component("orchestrator"), "MemOrchestrator", "Orchestrator class name.")
    broker_cls = Setting(_component("broker"), "MemBroker", "Broker class name.")
    state_backend_cls = Setting(_component("state_backend"), "MemStateBackend", "State backend class name.")
    runner_cls = Setting(_component("runner"), "DummyRunner", "Runner class name (DummyRunner cannot run tasks).")
    serializer_cls = Setting(
        _component("serializer"),
        "AutoSerializer",
        "Serializer: JsonSerializer (orjson; never loads a pickled payload, so nothing read from the backend "
        "can run code), PickleSerializer (dill) or AutoSerializer (JSON when the value round-trips, dill otherwise).",
    )
    dev_mode_force_sync_tasks = Setting(
        parse_bool, False, "Run every call inline in the caller (no runner); for development and tests."
    )
    cycle_control = Setting(parse_bool, True, "Raise CycleDetectedError when a wait would close a cycle.")
    logging_level = Setting(parse_log_level, "INFO", "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.", "logging")
    logging_stream = Setting(parse_choice("stderr", "stdout"), "stderr", "Stream logs go to.", "logging")
    logging_format = Setting(
        parse_choice("auto", "json", "console"),
        "auto",
        "Log format: json, console, or auto (console on a terminal, JSON otherwise).",
        "logging",
    )
    pipeline_registration = Setting(
        parse_bool,
        True,
        "Redis: a task call without registration concurrency returns once its registration is sent; "
        "the reply is read before the process's next Redis command (or at exit), where a refusal "
        "raises RegistrationError. False: each call waits for the reply.",
    )
    max_pending_seconds = Setting(
        parse_positive_float,
        5.0,
        "Lease of an invocation a runner claimed ahead (PENDING, not started): if the runner dies "
        "or hangs before starting it, it is requeued this soon, without counting a stall.",
    )
    lease_seconds = Setting(
        parse_positive_float, 30.0, "Lease of a claimed invocation; renewed by its runner, recovered when it expires."
    )
    max_stalls = Setting(
        parse_non_negative_int, 3, "Times an invocation may lose its runner (death, hang) before it ends FAILED."
    )
    recovery_interval = Setting(parse_positive_float, 5.0, "Seconds between a runner's checks for expired leases.")
    result_ttl = Setting(
        parse_non_negative_float,
        7 * 24 * 3600.0,
        "Seconds results and histories of final invocations are kept (Redis, SQLite).",
    )
    result_wait_warning_seconds = Setting(
        parse_non_negative_float,
        5.0,
        "On the memory backend, warn once when .result waited this long with no runner in the process.",
    )
    # --- runners ---
    min_threads = Setting(parse_non_negative_int, 1, "ThreadRunner: threads kept ready.", "runner")
    max_threads = Setting(
        parse_positive_int, 8, "ThreadRunner: invocations executing at once (paused ones do not count).", "runner"
    )
    runner_claim_batch = Setting(
        parse_positive_int, 1, "Invocations a runner claims per call when slots are free.", "runner"
    )
    # --- supervisor and process runners ---
    processes = Setting(
        parse_positive_int, 2, "Runner processes the supervisor keeps (at most this many RUNNING).", "supervisor"
    )
    max_paused = Setting(
        parse_non_negative_int,
        8,
        "Extra runner processes forked while others are paused waiting on results.",
        "supervisor",
    )
    runner_timeout = Setting(
        parse_positive_float,
        600.0,
        "Seconds a runner may go without a heartbeat before it is killed; runners do not heartbeat while a "
        "task executes, so this is also the longest one invocation may run without pausing.",
        "supervisor",
    )
    graceful_timeout = Setting(
        parse_non_negative_float, 30.0, "Warm shutdown: seconds running invocations get to finish.", "supervisor"
    )
    max_tasks_per_child = Setting(
        parse_non_negative_int, 0, "Recycle a runner after this many invocations (0: never).", "supervisor"
    )
    max_memory_per_child = Setting(
        parse_non_negative_int,
        0,
        "Recycle a runner whose RSS exceeds this many MiB, between invocations (0: never).",
        "supervisor",
    )
    # --- redis ---
    redis_url = Setting(
        parse_optional_str,
        None,
        "Redis URL: redis://, rediss:// (TLS), redis+cluster:// or rediss+cluster:// (any node of a Redis Cluster); "
        "overrides host/port/db. See docs/redis.md. Setting it while orchestrator_cls, broker_cls and "
        "state_backend_cls are not set selects the Redis backend.",
        "redis",
    )
    redis_host = Setting(parse_str, "localhost", "Redis host.", "redis")
    redis_port = Setting(parse_port, 6379, "Redis port.", "redis")
    redis_db = Setting(parse_non_negative_int, 0, "Redis database number.", "redis")
    redis_password = Setting(parse_optional_str, None, "Redis password.", "redis")
    redis_ssl = Setting(parse_bool, False, "Connect to Redis with TLS.", "redis")
    redis_retry_seconds = Setting(
        parse_non_negative_float,
        30.0,
        "Seconds a Redis command keeps retrying (with backoff) while Redis is unreachable, then fails.",
        "redis",
    )
    redis_functions = Setting(
        parse_bool,
        True,
        "Run pynenc's Lua scripts as one Redis Functions library (FUNCTION LOAD once per server, FCALL per call; "
        "Redis 7+). Off, or on a Redis older than 7, the same scripts run by EVALSHA, each call re-running their "
        "shared prelude (a few microseconds of Redis CPU per call).",
        "redis",
    )
    # --- sqlite ---
    sqlite_db_path = Setting(
        parse_optional_str,
        None,
        "SQLite database file; default: <app_id>.db in the working directory. Setting it while orchestrator_cls, "
        "broker_cls and state_backend_cls are not set selects the SQLite backend.",
        "sqlite",
    )

    _BACKEND_SETTINGS = ("orchestrator_cls", "broker_cls", "state_backend_cls")
    #: a setting that, given alone, selects its backend family
    _IMPLYING = {"sqlite_db_path": "SQLite", "redis_url": "Redis"}

    def set(self, name: str, value: Any, source: str = "code") -> None:
        super().set(name, value, source)
        family = self._IMPLYING.get(name)
        if family is not None and getattr(self, name) is not None:
            # one setting is enough to reach a shared backend (PYNENC__SQLITE_DB_PATH as printed by
            # pynenc-supervisor, PYNENC__REDIS_URL to move to Redis); chosen classes always win
            self.imply_backend(family, f"{source}, implied by {name}")

    def backend_is_default(self) -> bool:
        """Whether none of orchestrator_cls, broker_cls, state_backend_cls was set anywhere."""
        return all(self.source_of(name) == "default" for name in self._BACKEND_SETTINGS)

    def backend_is_chosen(self) -> bool:
        """Whether a backend class was set on its own (not implied by sqlite_db_path or redis_url)."""
        return any(
            self.source_of(name) != "default" and "implied by" not in self.source_of(name)
            for name in self._BACKEND_SETTINGS
        )

    def imply_backend(self, prefix: str, source: str) -> bool:
        """Select the ``prefix`` family (e.g. "SQLite") unless backend classes were chosen; True if it did."""
        if self.backend_is_chosen():
            return False
        for name in self._BACKEND_SETTINGS:
            suffix = "".join(part.capitalize() for part in name.removesuffix("_cls").split("_"))
            self.set(name, f"{prefix}{suffix}", source)
        return True


def config_for_docs() -> list[tuple[str, str, str, str, str]]:
    """(name, type, default, env var, description) rows, for the generated reference."""
    rows = []
    for name, spec in ConfigPynenc.settings().items():
        rows.append((name, spec.group, repr(spec.default), spec.env_vars[0], spec.description))
    return rows
