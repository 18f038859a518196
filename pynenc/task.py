"""Tasks: module-level functions decorated with ``@app.task``.

Calling a task serializes its arguments (an argument that cannot be serialized
raises :class:`SerializationError` naming it, before anything is stored),
applies its registration concurrency and registers one invocation.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, TypeVar

from pynenc.conf.config_task import ConcurrencyControlType, ConfigTask
from pynenc.context import current_execution
from pynenc.exceptions import DifferentNonKeyArgumentsError, SerializationError
from pynenc.invocation import Invocation, InvocationGroup, SyncInvocation
from pynenc.log import TaskLogger
from pynenc.models import CallSpec, RegisterOutcome, new_invocation_id

if TYPE_CHECKING:
    from pynenc.app import Pynenc

P = ParamSpec("P")
R = TypeVar("R")


def task_id_of(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


class Task(Generic[P, R]):
    """A function that runs as invocations, on runners."""

    def __init__(self, app: Pynenc, func: Callable[P, Any], options: dict[str, Any]) -> None:
        self.app = app
        self.func = func
        self.task_id = task_id_of(func)
        self.options = dict(options)
        self.signature = inspect.signature(func)
        kinds = {p.kind for p in self.signature.parameters.values()}
        # Every parameter can be passed by keyword (no *args, **kwargs or positional-only):
        # a run then passes its bound arguments as they are, without inspect rebuilding them.
        self._by_keyword = kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}
        # The parameter names when every one is plain positional-or-keyword: a call giving
        # each of them positionally then binds by position, without inspect (same result).
        self._plain_names: tuple[str, ...] | None = (
            tuple(self.signature.parameters) if kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD} else None
        )
        self.is_async = inspect.iscoroutinefunction(func)
        self._conf: ConfigTask | None = None
        _ = self.conf  # validate options at decoration time
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", self.task_id)
        self.__module__ = func.__module__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<Task {self.task_id}>"

    @property
    def conf(self) -> ConfigTask:
        if self._conf is None:
            self._conf = ConfigTask(self.task_id, self.options, self.app.conf.task_options.get(self.task_id))
        return self._conf

    @property
    def logger(self) -> TaskLogger:
        return TaskLogger(self)

    @property
    def invocation(self) -> Invocation[R] | None:
        """Inside a running invocation of this task: that invocation."""
        execution = current_execution.get()
        if execution is None or execution.task_id != self.task_id:
            return None
        return Invocation(self.app, self, execution.invocation_id, {})

    # ----- calling -------------------------------------------------------------------------
    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self._plain_names
        if names is not None and not kwargs and len(args) == len(names):
            return dict(zip(names, args, strict=True))
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.task_id}: {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def call_args(self, arguments: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self._by_keyword:
            return (), arguments
        bound = inspect.BoundArguments(self.signature, arguments)  # type: ignore[arg-type,unused-ignore]
        return bound.args, bound.kwargs

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Invocation[R]:
        arguments = self.bind(args, kwargs)
        if self.app.conf.dev_mode_force_sync_tasks:
            return self.run_inline(arguments)
        spec = self.make_call(arguments)
        if spec.registration_key is None and self.app.conf.pipeline_registration:
            # Without a registration key the call is created under its own id: nothing in
            # the backend's reply can change what is returned.
            self.app.orchestrator.register_ahead(spec)
            return Invocation(self.app, self, spec.invocation_id, arguments)
        return self.register([(spec, arguments)])[0]

    def parallelize(
        self, param_iter: Iterable[tuple[Any, ...] | dict[str, Any]], common_args: dict[str, Any] | None = None
    ) -> InvocationGroup[R]:
        """One invocation per item (a tuple of positional or a dict of keyword arguments)."""
        common = dict(common_args or {})
        invocations: list[Invocation[R]] = []
        batch: list[tuple[CallSpec, dict[str, Any]]] = []
        batch_size = max(1, self.conf.parallel_batch_size)
        # One batch is being registered while the next is prepared; collected in order.
        in_flight: Callable[[], list[Invocation[R]]] | None = None
        options = self._call_options()
        for item in param_iter:
            if isinstance(item, dict):
                arguments = self.bind((), {**common, **item})
            elif isinstance(item, tuple):
                arguments = self.bind(item, common)
            else:
                arguments = self.bind((item,), common)
            if self.app.conf.dev_mode_force_sync_tasks:
                invocations.append(self.run_inline(arguments))
                continue
            batch.append((self.make_call(arguments, options), arguments))
            if len(batch) >= batch_size:
                if in_flight is not None:
                    invocations.extend(in_flight())
                in_flight = self.register_later(batch)
                batch = []
        if in_flight is not None:
            invocations.extend(in_flight())
        if batch:
            invocations.extend(self.register(batch))
        return InvocationGroup(self.app, self, invocations)

    def register(self, calls: list[tuple[CallSpec, dict[str, Any]]]) -> list[Invocation[R]]:
        return self.register_later(calls)()

    def register_later(self, calls: list[tuple[CallSpec, dict[str, Any]]]) -> Callable[[], list[Invocation[R]]]:
        read = self.app.orchestrator.register_later([spec for spec, _ in calls])
        return lambda: self._invocations(read(), calls)

    def _invocations(
        self, outcomes: list[RegisterOutcome], calls: list[tuple[CallSpec, dict[str, Any]]]
    ) -> list[Invocation[R]]:
        invocations: list[Invocation[R]] = []
        for outcome, (_, arguments) in zip(outcomes, calls, strict=True):
            if outcome.error:
                raise DifferentNonKeyArgumentsError(f"{self.task_id}: {outcome.error}")
            invocations.append(Invocation(self.app, self, outcome.invocation_id, arguments))
        return invocations

    def serialize_arguments(
        self, arguments: dict[str, Any], dumps: Callable[[Any], str] | None = None
    ) -> dict[str, str]:
        serialized = {}
        if dumps is None:
            dumps = self.app.serializer.dumps
        for name, value in arguments.items():
            try:
                serialized[name] = dumps(value)
            except SerializationError as exc:
                raise SerializationError(f"{self.task_id}: argument {name!r} cannot be serialized: {exc}") from exc
        return serialized

    def make_call(self, arguments: dict[str, Any], options: _CallOptions | None = None) -> CallSpec:
        """The call to register; ``options`` (from :meth:`_call_options`) when making many at once."""
        if options is None:
            options = self._call_options()
        serialized = self.serialize_arguments(arguments, options.dumps)
        call_key = _digest(self.task_id, serialized)
        return CallSpec(
            invocation_id=new_invocation_id(),
            task_id=self.task_id,
            arguments=serialized,
            call_key=call_key,
            registration_key=self._concurrency_key(options.registration, serialized, call_key),
            running_key=self._concurrency_key(options.running, serialized, call_key),
            reroute_on_concurrency_control=options.reroute,
            on_diff_non_key_args_raise=options.refuse_different,
            parent_invocation_id=options.parent,
        )

    def _call_options(self) -> _CallOptions:
        """What every call made now shares: read once per ``parallelize``, not per item."""
        conf = self.conf
        execution = current_execution.get()
        return _CallOptions(
            self.app.serializer.dumps,
            conf.registration_concurrency,
            conf.running_concurrency,
            conf.reroute_on_concurrency_control,
            conf.on_diff_non_key_args_raise,
            execution.invocation_id if execution else None,
        )

    def _concurrency_key(self, kind: ConcurrencyControlType, serialized: dict[str, str], call_key: str) -> str | None:
        if kind is ConcurrencyControlType.DISABLED:
            return None
        if kind is ConcurrencyControlType.TASK:
            return self.task_id
        if kind is ConcurrencyControlType.ARGUMENTS:
            return call_key
        keys: dict[str, str] = {name: serialized.get(name, "") for name in self.conf.key_arguments}
        return _digest(self.task_id + "#keys", keys)

    def run_inline(self, arguments: dict[str, Any]) -> SyncInvocation[R]:
        """Run now, in the caller (dev mode), with retries as a runner would."""
        self.serialize_arguments(arguments)  # same errors as a real call
        invocation_id = new_invocation_id()
        retries = 0
        while True:
            try:
                value = self.app.execute_inline(self, invocation_id, arguments)
                return SyncInvocation(self.app, self, invocation_id, arguments, value=value, num_retries=retries)
            except self.conf.retry_for as exc:
                if retries >= self.conf.max_retries:
                    return SyncInvocation(self.app, self, invocation_id, arguments, error=exc, num_retries=retries)
                retries += 1
            except Exception as exc:
                return SyncInvocation(self.app, self, invocation_id, arguments, error=exc, num_retries=retries)


class _CallOptions(NamedTuple):
    dumps: Callable[[Any], str]
    registration: ConcurrencyControlType
    running: ConcurrencyControlType
    reroute: bool
    refuse_different: bool
    parent: str | None


def _digest(task_id: str, serialized: dict[str, str]) -> str:
    # One buffer hashed once: the same bytes, so the same digest, as hashing piece by piece.
    parts = [task_id.encode()]
    for name in sorted(serialized):
        parts.append(b"\0" + name.encode() + b"=" + serialized[name].encode())
    return hashlib.sha1(b"".join(parts)).hexdigest()


class DirectTask(Generic[P, R]):
    """``@app.direct_task``: calling returns the result itself.

    With ``parallel_func`` and ``aggregate_func`` the call is split into pieces
    that run as parallel invocations and are combined into one result.
    """

    def __init__(
        self,
        task: Task[P, R],
        parallel_func: Callable[[dict[str, Any]], Any] | None = None,
        aggregate_func: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if (parallel_func is None) != (aggregate_func is None):
            from pynenc.exceptions import ConfigurationError

            raise ConfigurationError(f"{task.task_id}: parallel_func and aggregate_func go together")
        self.task = task
        self.parallel_func = parallel_func
        self.aggregate_func = aggregate_func
        self.task_id = task.task_id
        self.__doc__ = task.func.__doc__
        self.__name__ = task.__name__
        self.__wrapped__ = task.func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.parallel_func is None or self.aggregate_func is None:
            return self.task(*args, **kwargs).result
        arguments = self.task.bind(args, kwargs)
        pieces = self.parallel_func(arguments)
        common: dict[str, Any] | None = None
        if isinstance(pieces, tuple) and len(pieces) == 2 and isinstance(pieces[0], dict):
            common, pieces = pieces
        group = self.task.parallelize(pieces, common_args=common)
        result: R = self.aggregate_func(list(group.results))
        return result

    @property
    def logger(self) -> TaskLogger:
        return self.task.logger

    @property
    def conf(self) -> ConfigTask:
        return self.task.conf

    @property
    def invocation(self) -> Invocation[R] | None:
        return self.task.invocation
