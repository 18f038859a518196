"""Invocations: one call of a task, and groups of them.

``inv.result`` blocks until the invocation is final and returns its value, or
re-raises the task's exception with its original type and message. Inside a
running task the wait goes through the runner, which pauses the waiting
invocation (recording what it waits for) and gives its slot to other work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pynenc.context import current_execution
from pynenc.exceptions import (
    ConcurrencyControlledError,
    InvocationKilledError,
    InvocationNotFoundError,
    ResultTimeoutError,
)
from pynenc.status import InvocationStatus

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.models import InvocationRecord
    from pynenc.task import Task

R = TypeVar("R")
S = InvocationStatus


def final_value(app: Pynenc, invocation_id: str) -> Any:
    """The value of a final invocation, or raise what it ended with."""
    return value_of(app, invocation_id, app.orchestrator.get_record(invocation_id))


def value_of(app: Pynenc, invocation_id: str, record: InvocationRecord | None) -> Any:
    """The value of a final invocation's record, or raise what it ended with."""
    if record is None:
        raise InvocationNotFoundError(f"invocation {invocation_id} not found (purged, expired or never created)")
    if record.status is S.SUCCESS:
        return app.serializer.loads(record.result or "jnull")
    if record.status is S.FAILED:
        raise app.serializer.loads_error(record.error or "{}")
    if record.status is S.KILLED:
        raise InvocationKilledError(f"invocation {invocation_id} of {record.task_id} was killed")
    if record.status is S.CONCURRENCY_CONTROLLED_FINAL:
        raise ConcurrencyControlledError(
            f"invocation {invocation_id} of {record.task_id} did not run: a matching invocation was running "
            "(running_concurrency with reroute_on_concurrency_control=False)"
        )
    raise AssertionError(f"invocation {invocation_id} is not final: {record.status}")


def wait_until_final(app: Pynenc, invocation_ids: Sequence[str], timeout: float | None = None) -> dict[str, str | None]:
    """Block until every id is final; inside a task this pauses the caller.

    Returns what the wait learned: final ids in the order they became final, each with its
    stored SUCCESS result when it came with the final event (else None); ``{}`` when nothing
    was learned (outside a task, or everything was final already).
    """
    execution = current_execution.get()
    if execution is not None and execution.app is app:
        return execution.runner.wait_for(execution, invocation_ids, timeout)
    app.wait_outside_task(invocation_ids, timeout)
    return {}


class Invocation(Generic[R]):
    """A registered call of a task."""

    def __init__(self, app: Pynenc, task: Task[Any, R], invocation_id: str, arguments: dict[str, Any]) -> None:
        self.app = app
        self.task = task
        self.invocation_id = invocation_id
        self.arguments = arguments

    def __repr__(self) -> str:
        return f"<Invocation {self.task.task_id} {self.invocation_id}>"

    @property
    def status(self) -> InvocationStatus:
        status = self.app.orchestrator.get_status(self.invocation_id)
        if status is None:
            raise InvocationNotFoundError(f"invocation {self.invocation_id} not found")
        return status

    @property
    def num_retries(self) -> int:
        record = self.app.orchestrator.get_record(self.invocation_id)
        if record is None:
            raise InvocationNotFoundError(f"invocation {self.invocation_id} not found")
        return record.num_retries

    @property
    def result(self) -> R:
        return self.get_result()

    def get_result(self, timeout: float | None = None) -> R:
        """Like ``.result``, but raise :class:`ResultTimeoutError` after ``timeout`` seconds."""
        execution = current_execution.get()
        if execution is not None and execution.app is self.app:
            learned = wait_until_final(self.app, [self.invocation_id], timeout)  # pauses the calling task
            result = learned.get(self.invocation_id)
            if result is not None:  # it came with the final event: no read
                loaded: R = self.app.serializer.loads(result)
                return loaded
            record = self.app.orchestrator.get_record(self.invocation_id)
        else:
            record = self.app.wait_record_outside_task(self.invocation_id, timeout)
        value: R = value_of(self.app, self.invocation_id, record)
        return value

    async def async_result(self) -> R:
        return await asyncio.to_thread(self.get_result)


class SyncInvocation(Invocation[R]):
    """An invocation that ran inline (``dev_mode_force_sync_tasks``)."""

    def __init__(
        self,
        app: Pynenc,
        task: Task[Any, R],
        invocation_id: str,
        arguments: dict[str, Any],
        value: Any = None,
        error: BaseException | None = None,
        num_retries: int = 0,
    ) -> None:
        super().__init__(app, task, invocation_id, arguments)
        self._value = value
        self._error = error
        self._num_retries = num_retries

    @property
    def status(self) -> InvocationStatus:
        return S.FAILED if self._error is not None else S.SUCCESS

    @property
    def num_retries(self) -> int:
        return self._num_retries

    def get_result(self, timeout: float | None = None) -> R:
        if self._error is not None:
            raise self._error
        value: R = self._value
        return value


class InvocationGroup(Generic[R]):
    """Invocations made together by ``task.parallelize``."""

    def __init__(self, app: Pynenc, task: Task[Any, R], invocations: list[Invocation[R]]) -> None:
        self.app = app
        self.task = task
        self.invocations = invocations

    def __len__(self) -> int:
        return len(self.invocations)

    def __iter__(self) -> Iterator[Invocation[R]]:
        return iter(self.invocations)

    @property
    def results(self) -> Iterator[R]:
        """Each result as its invocation finishes (not in call order)."""
        return self._iter_results(None)

    def _iter_results(self, timeout: float | None) -> Iterator[R]:
        by_id = {inv.invocation_id: inv for inv in self.invocations}
        if any(isinstance(inv, SyncInvocation) for inv in self.invocations):
            for inv in self.invocations:
                yield inv.result
            return
        execution = current_execution.get()
        if execution is not None and execution.app is self.app:
            # Inside a task: pause once for the whole group, then yield in finishing order.
            # Small results come with their final events; the records of the others are
            # read together (one round trip, not two per invocation).
            ids = list(by_id)
            learned = wait_until_final(self.app, ids, timeout)
            to_read = [i for i in ids if learned.get(i) is None]
            records = dict(zip(to_read, self.app.orchestrator.get_records(to_read), strict=True))

            def finished_at(invocation_id: str) -> float:
                record = records[invocation_id]
                return record.history[-1].timestamp if record and record.history else 0.0

            order = [*learned, *(i for i in ids if i not in learned)] if learned else sorted(ids, key=finished_at)
            for invocation_id in order:
                result = learned.get(invocation_id)
                if result is not None:
                    yield self.app.serializer.loads(result)
                else:
                    yield value_of(self.app, invocation_id, records[invocation_id])
            return
        remaining = list(by_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while remaining:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ResultTimeoutError(f"{len(remaining)} invocations of {self.task.task_id} still not final")
            done = self.app.orchestrator.wait_final(remaining, min(left or 1.0, 1.0))
            for invocation_id in remaining:
                if invocation_id in done:
                    yield final_value(self.app, invocation_id)
            remaining = [i for i in remaining if i not in done]
            self.app.warn_if_no_runner()

    async def async_results(self) -> AsyncIterator[R]:
        iterator = self._iter_results(None)
        sentinel = object()
        while True:
            value = await asyncio.to_thread(next, iterator, sentinel)
            if value is sentinel:
                return
            yield value  # type: ignore[misc]
