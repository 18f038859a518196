"""The app: settings, tasks and the components that run them."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from pynenc import forks
from pynenc.components import load_component
from pynenc.conf.config_pynenc import ConfigPynenc
from pynenc.context import Execution, current_execution
from pynenc.exceptions import ConfigurationError, InvocationNotFoundError, ResultTimeoutError
from pynenc.log import build_logger
from pynenc.task import DirectTask, Task

if TYPE_CHECKING:
    from pynenc.broker.base import BaseBroker
    from pynenc.models import InvocationRecord
    from pynenc.orchestrator.base import BaseOrchestrator
    from pynenc.runners.base import BaseRunner
    from pynenc.serializer.base import BaseSerializer
    from pynenc.state_backend.base import BaseStateBackend

P = ParamSpec("P")
R = TypeVar("R")

_COMPONENT_SETTINGS = {
    "orchestrator_cls",
    "broker_cls",
    "state_backend_cls",
    "runner_cls",
    "serializer_cls",
    "redis_url",
    "redis_host",
    "redis_port",
    "redis_db",
    "redis_password",
    "redis_ssl",
    "sqlite_db_path",
    "app_id",
}


class _AppConfig(ConfigPynenc):
    """The app's config: changing a component setting rebuilds that component."""

    def __init__(self, app: Pynenc, **kwargs: Any) -> None:
        self._app = app
        super().__init__(**kwargs)

    def _on_change(self, name: str) -> None:
        if name in _COMPONENT_SETTINGS and hasattr(self, "_app"):
            self._app.reset_components()
        if name.startswith("logging_") and hasattr(self, "_app"):
            self._app._logger = None


class Pynenc:
    """A pynenc application.

    ``Pynenc(app_id=..., config_values={...}, config_filepath=...)``; tasks are
    module-level functions decorated with :meth:`task` or :meth:`direct_task`.
    """

    def __init__(
        self,
        app_id: str | None = None,
        config_values: dict[str, Any] | None = None,
        config_filepath: str | None = None,
    ) -> None:
        values = dict(config_values or {})
        if app_id is not None:
            values["app_id"] = app_id
        self._lock = threading.RLock()
        self._components: dict[str, Any] = {}
        self._logger: Any = None
        self._warned_no_runner = False
        self._pid = forks.pid
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: Runners currently looping in this process (the warning about memory backends uses it).
        self.active_runners: set[Any] = set()
        self.conf = _AppConfig(self, config_values=values, config_filepath=config_filepath)

    @property
    def app_id(self) -> str:
        return self.conf.app_id

    def __repr__(self) -> str:
        return f"<Pynenc {self.app_id}>"

    # ----- components ----------------------------------------------------------------------
    def _component(self, kind: str) -> Any:
        if forks.pid != self._pid:  # forked: connections and locks of the parent are not ours
            self._pid = forks.pid
            self._lock = threading.RLock()  # another parent thread may have held it at the fork
            self._components.clear()
        component = self._components.get(kind)  # hot path: every call and claim reads a component
        if component is not None:
            return component
        with self._lock:
            component = self._components.get(kind)
            if component is None:
                name = getattr(self.conf, f"{kind}_cls")
                cls = load_component(kind, name)
                component = cls(self) if kind != "serializer" else cls()
                self._components[kind] = component
                self._check_families()
            return component

    def preload(self) -> None:
        """Import the modules of the configured components, connecting to nothing.

        A supervisor calls it before forking runners, so that code is shared by all of them
        instead of being imported again (and held privately) in each one.
        """
        for kind in ("serializer", "state_backend", "broker", "orchestrator", "runner"):
            cls = load_component(kind, getattr(self.conf, f"{kind}_cls"))
            if kind == "state_backend":
                cls.preload()

    def _check_families(self) -> None:
        families = {
            kind: getattr(self._components[kind], "family", "")
            for kind in ("orchestrator", "broker", "state_backend")
            if kind in self._components
        }
        if len(set(families.values()) - {""}) > 1:
            raise ConfigurationError(
                "orchestrator, broker and state backend must use the same backend "
                f"(got {families}); e.g. set all three to Redis* or use PynencBuilder().redis(...)"
            )

    @property
    def orchestrator(self) -> BaseOrchestrator:
        orchestrator: BaseOrchestrator | None = self._components.get("orchestrator")
        if orchestrator is not None and self._pid == forks.pid:
            return orchestrator
        # The orchestrator drives the broker and state backend: build those first.
        _ = (self.state_backend, self.broker)
        orchestrator = self._component("orchestrator")
        return orchestrator

    @property
    def broker(self) -> BaseBroker:
        broker: BaseBroker = self._component("broker")
        return broker

    @property
    def state_backend(self) -> BaseStateBackend:
        state: BaseStateBackend = self._component("state_backend")
        return state

    @property
    def serializer(self) -> BaseSerializer:
        serializer: BaseSerializer = self._component("serializer")
        return serializer

    @property
    def runner(self) -> BaseRunner:
        runner: BaseRunner = self._component("runner")
        return runner

    @property
    def logger(self) -> Any:
        if self._logger is None:
            self._logger = build_logger(self.conf)
        return self._logger

    def reset_components(self) -> None:
        """Drop built components so the next use builds them from the current settings."""
        with self._lock:
            for component in self._components.values():
                close = getattr(component, "close", None)
                if close is not None and not getattr(component, "active", False):
                    close()
            self._components.clear()

    def forget_runner(self, runner: Any) -> None:
        with self._lock:
            if self._components.get("runner") is runner:
                del self._components["runner"]

    def close(self) -> None:
        self.reset_components()

    def use_shared_backend_default(self) -> str | None:
        """Move an app left on the memory default to SQLite, for runners in several processes.

        Called by ``pynenc-supervisor`` and process-based runners at start. When none of
        orchestrator_cls, broker_cls and state_backend_cls was configured, the app switches to the
        SQLite backend on ``sqlite_db_path`` (default ``<app_id>.db`` in the working directory, made
        absolute) and returns the one setting other processes need to reach the same backend, e.g.
        ``PYNENC__SQLITE_DB_PATH=/srv/app/tasks.db``. Returns None when a backend was configured.
        """
        if not self.conf.backend_is_default():
            return None
        import shlex

        from pynenc.sqlite_store import db_path_of

        path = db_path_of(self)
        self.conf.set("sqlite_db_path", path, source="shared backend default (memory is not shared)")
        return f"PYNENC__SQLITE_DB_PATH={shlex.quote(path)}"

    def purge(self) -> None:
        """Remove every invocation, result and queue entry of this app (only this app)."""
        self.orchestrator.purge()
        self.state_backend.purge()

    # ----- tasks ---------------------------------------------------------------------------
    @overload
    def task(self, func: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, func: None = None, /, **options: Any) -> _TaskDecorator: ...

    def task(self, func: Callable[P, Any] | None = None, /, **options: Any) -> Any:
        """Decorate a module-level function as a task: ``@app.task`` or ``@app.task(**options)``."""

        def decorate(function: Callable[P, Any]) -> Task[P, Any]:
            task: Task[P, Any] = Task(self, function, options)
            self.tasks[task.task_id] = task
            return task

        return decorate if func is None else decorate(func)

    @overload
    def direct_task(self, func: Callable[P, Awaitable[R]], /) -> DirectTask[P, R]: ...

    @overload
    def direct_task(self, func: Callable[P, R], /) -> DirectTask[P, R]: ...

    @overload
    def direct_task(
        self,
        func: None = None,
        /,
        *,
        parallel_func: Callable[[dict[str, Any]], Any] | None = None,
        aggregate_func: Callable[[list[Any]], Any] | None = None,
        **options: Any,
    ) -> _DirectTaskDecorator: ...

    def direct_task(
        self,
        func: Callable[P, Any] | None = None,
        /,
        *,
        parallel_func: Callable[[dict[str, Any]], Any] | None = None,
        aggregate_func: Callable[[list[Any]], Any] | None = None,
        **options: Any,
    ) -> Any:
        """Like :meth:`task`, but calling returns the result itself."""

        def decorate(function: Callable[P, Any]) -> DirectTask[P, Any]:
            task: Task[P, Any] = Task(self, function, options)
            self.tasks[task.task_id] = task
            return DirectTask(task, parallel_func, aggregate_func)

        return decorate if func is None else decorate(func)

    def get_task(self, task_id: str) -> Task[Any, Any]:
        """The task with this id, importing its module if this process has not yet."""
        task = self.tasks.get(task_id)
        if task is None:
            module_name, _, _ = task_id.rpartition(".")
            try:
                importlib.import_module(module_name)
            except ImportError as exc:
                raise InvocationNotFoundError(f"task {task_id} cannot be imported: {exc}") from exc
            task = self.tasks.get(task_id)
        if task is None:
            raise InvocationNotFoundError(
                f"task {task_id} is not registered with app {self.app_id!r} (is it decorated with this app?)"
            )
        return task

    # ----- running -------------------------------------------------------------------------
    def execute_inline(self, task: Task[Any, Any], invocation_id: str, arguments: dict[str, Any]) -> Any:
        from pynenc.runners.inline import InlineRunner

        token = current_execution.set(Execution(InlineRunner(self), invocation_id, task.task_id, self))
        try:
            args, kwargs = task.call_args(arguments)
            value = task.func(*args, **kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
            return value
        finally:
            current_execution.reset(token)

    def wait_outside_task(self, invocation_ids: Sequence[str], timeout: float | None) -> None:
        """Block (without spinning) until every id is final, from code that is not a task."""
        remaining = list(invocation_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while remaining:
            done = self.orchestrator.wait_final(remaining, _next_wait(deadline, timeout, remaining))
            if not done:
                missing = [i for i in remaining if self.orchestrator.get_status(i) is None]
                if missing:
                    raise InvocationNotFoundError(f"invocation {missing[0]} not found")
            remaining = [i for i in remaining if i not in done]
            if remaining:
                self.warn_if_no_runner()

    def wait_record_outside_task(self, invocation_id: str, timeout: float | None) -> InvocationRecord:
        """The record of one invocation once final, from code that is not a task."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.orchestrator.wait_final_record(invocation_id, _next_wait(deadline, timeout, [invocation_id]))
            if record is not None and record.status.is_final:
                return record
            if record is None and self.orchestrator.get_status(invocation_id) is None:
                raise InvocationNotFoundError(f"invocation {invocation_id} not found")
            self.warn_if_no_runner()

    def warn_if_no_runner(self) -> None:
        """On the memory backend nothing outside this process can run our invocations: say so once."""
        if self._warned_no_runner or self.active_runners:
            return
        if getattr(self.orchestrator, "family", "") != "mem":
            return
        if not hasattr(self, "_waiting_since"):
            self._waiting_since = time.monotonic()
            return
        if time.monotonic() - self._waiting_since < self.conf.result_wait_warning_seconds:
            return
        self._warned_no_runner = True
        self.logger.warning(
            "waiting for a result on the memory backend with no runner in this process: memory is not "
            "shared between processes, so a runner elsewhere will never see these invocations; set "
            "sqlite_db_path (PYNENC__SQLITE_DB_PATH) or redis_url to the backend your runners use, or start "
            "app.runner in this process"
        )


async def _await(value: Awaitable[Any]) -> Any:
    return await value


class _TaskDecorator(Protocol):
    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...


class _DirectTaskDecorator(Protocol):
    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> DirectTask[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> DirectTask[P, R]: ...


def _next_wait(deadline: float | None, timeout: float | None, waiting: Sequence[str]) -> float:
    """How long the next wait may block: up to a second (so waits can warn and re-check),
    never past ``deadline``; ResultTimeoutError naming ``waiting`` once it has passed."""
    left = 1.0 if deadline is None else deadline - time.monotonic()
    if left <= 0:
        raise ResultTimeoutError(f"invocations {list(waiting)} not final after {timeout} s")
    return min(left, 1.0)
