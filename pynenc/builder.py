"""PynencBuilder: a fluent way to configure an app in code.

``PynencBuilder().app_id("x").redis(url="redis://host").multi_thread_runner().build()``
"""

from __future__ import annotations

from typing import Any

from pynenc.app import Pynenc


class PynencBuilder:
    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._app_id: str | None = None

    def app_id(self, app_id: str) -> PynencBuilder:
        self._app_id = app_id
        return self

    def _backend(self, prefix: str) -> None:
        self._values["orchestrator_cls"] = f"{prefix}Orchestrator"
        self._values["broker_cls"] = f"{prefix}Broker"
        self._values["state_backend_cls"] = f"{prefix}StateBackend"

    def memory(self) -> PynencBuilder:
        self._backend("Mem")
        return self

    def redis(self, url: str | None = None, db: int | None = None) -> PynencBuilder:
        self._backend("Redis")
        if url is not None:
            self._values["redis_url"] = url
        if db is not None:
            self._values["redis_db"] = db
        return self

    def sqlite(self, sqlite_db_path: str | None = None) -> PynencBuilder:
        self._backend("SQLite")
        if sqlite_db_path is not None:
            self._values["sqlite_db_path"] = sqlite_db_path
        return self

    def thread_runner(self, min_threads: int | None = None, max_threads: int | None = None) -> PynencBuilder:
        self._values["runner_cls"] = "ThreadRunner"
        if min_threads is not None:
            self._values["min_threads"] = min_threads
        if max_threads is not None:
            self._values["max_threads"] = max_threads
        return self

    def process_runner(self) -> PynencBuilder:
        self._values["runner_cls"] = "ProcessRunner"
        return self

    def persistent_process_runner(self, num_processes: int | None = None) -> PynencBuilder:
        self._values["runner_cls"] = "PersistentProcessRunner"
        if num_processes is not None:
            self._values["processes"] = num_processes
        return self

    def multi_thread_runner(self, min_threads: int | None = None, max_threads: int | None = None) -> PynencBuilder:
        self._values["runner_cls"] = "MultiThreadRunner"
        if min_threads is not None:
            self._values["min_threads"] = min_threads
        if max_threads is not None:
            self._values["max_threads"] = max_threads
        return self

    def dev_mode(self, force_sync_tasks: bool = True) -> PynencBuilder:
        self._values["dev_mode_force_sync_tasks"] = force_sync_tasks
        return self

    def logging_level(self, level: str) -> PynencBuilder:
        self._values["logging_level"] = level
        return self

    def logging_stream(self, stream: str) -> PynencBuilder:
        self._values["logging_stream"] = stream
        return self

    def max_pending_seconds(self, seconds: float) -> PynencBuilder:
        self._values["max_pending_seconds"] = seconds
        return self

    def serializer_json(self) -> PynencBuilder:
        self._values["serializer_cls"] = "JsonSerializer"
        return self

    def serializer_pickle(self) -> PynencBuilder:
        self._values["serializer_cls"] = "PickleSerializer"
        return self

    def serializer_auto(self) -> PynencBuilder:
        self._values["serializer_cls"] = "AutoSerializer"
        return self

    def cycle_control(self, enabled: bool = True) -> PynencBuilder:
        self._values["cycle_control"] = enabled
        return self

    def custom_config(self, **values: Any) -> PynencBuilder:
        self._values.update(values)
        return self

    def build(self) -> Pynenc:
        return Pynenc(app_id=self._app_id, config_values=dict(self._values))
