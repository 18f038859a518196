"""Celery tasks and client adapter (runs in bench/.venvs/celery).

Worker: ``celery -A bench.peers.celery_app worker -P prefork -c 2``, defaults
otherwise. Broker and result backend on Redis; ``AsyncResult.get()`` waits on
the backend's pub/sub. Batched enqueue uses ``group(...).apply_async()``.
Fan-out calls ``.get()`` inside a task with Celery's default, which refuses it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, group

from bench.peers.common import child_tag, fan_in, record_done, redis_url

app = Celery("bench", broker=redis_url(), backend=redis_url())
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)

WAIT_S = 3600.0  # a parent waits for its children "forever"; the harness has the deadline


@app.task(name="bench.noop")
def noop(tag: str, i: int) -> int:
    record_done(tag)
    return i


@app.task(name="bench.parent")
def parent(tag: str, i: int, children: int) -> int:
    return fan_in(
        tag, lambda: group(noop.s(child_tag(tag), j) for j in range(children)).apply_async().get(timeout=WAIT_S)
    )


class Adapter:
    batch_api: str | None = "group(...).apply_async()"

    def enqueue_single(self, tag: str, n: int) -> None:
        for i in range(n):
            noop.delay(tag, i)

    def enqueue_batch(self, tag: str, n: int) -> None:
        group(noop.s(tag, i) for i in range(n)).apply_async()

    def roundtrip(self, tag: str, i: int, timeout: float) -> Any:
        return noop.delay(tag, i).get(timeout=timeout)

    def start_fanout(self, tag: str, parents: int, children: int) -> None:
        for i in range(parents):
            parent.delay(tag, i, children)

    def close(self) -> None:
        app.close()
