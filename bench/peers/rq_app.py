"""RQ tasks and client adapter (runs in bench/.venvs/rq).

Worker: ``rq worker-pool -n 2 -u <url> bench``. Round trips wait with
``job.latest_result(timeout=...)`` (XREAD BLOCK on the job's result stream);
batched enqueue uses ``Queue.enqueue_many`` (one pipeline).
"""

from __future__ import annotations

import math
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job

from bench.peers.common import child_tag, fan_in, record_done, redis_url

QUEUE = "bench"
WAIT_S = 3600  # a parent waits for its children "forever"; the harness has the deadline


def noop(tag: str, i: int) -> int:
    record_done(tag)
    return i


def _wait(job: Job, timeout: float) -> Any:
    result = job.latest_result(timeout=max(1, math.ceil(timeout)))
    if result is None:
        raise TimeoutError(f"no result for job {job.id} within {timeout}s")
    if result.type != result.Type.SUCCESSFUL:
        raise RuntimeError(f"job {job.id} ended as {result.type}: {result.exc_string}")
    return result.return_value


def parent(tag: str, i: int, children: int) -> int:
    def children_results() -> list[int]:
        queue = Queue(QUEUE, connection=Redis.from_url(redis_url()))
        jobs = [queue.enqueue(noop, child_tag(tag), j) for j in range(children)]
        return [_wait(job, WAIT_S) for job in jobs]

    return fan_in(tag, children_results)


class Adapter:
    batch_api: str | None = "Queue.enqueue_many()"

    def __init__(self) -> None:
        self.connection = Redis.from_url(redis_url())
        self.queue = Queue(QUEUE, connection=self.connection)

    def enqueue_single(self, tag: str, n: int) -> None:
        for i in range(n):
            self.queue.enqueue(noop, tag, i)

    def enqueue_batch(self, tag: str, n: int) -> None:
        self.queue.enqueue_many([Queue.prepare_data(noop, (tag, i)) for i in range(n)])

    def roundtrip(self, tag: str, i: int, timeout: float) -> Any:
        return _wait(self.queue.enqueue(noop, tag, i), timeout)

    def start_fanout(self, tag: str, parents: int, children: int) -> None:
        for i in range(parents):
            self.queue.enqueue(parent, tag, i, children, job_timeout=WAIT_S)

    def close(self) -> None:
        self.connection.close()
