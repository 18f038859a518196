"""Dramatiq tasks and client adapter (runs in bench/.venvs/dramatiq).

Worker: ``dramatiq bench.peers.dramatiq_app -p 2`` (8 threads per process, the default).
Results: the Results middleware on Redis, so ``message.get_result(block=True)``
waits on Redis rather than polling. Batched enqueue uses ``group(...).run()``,
Dramatiq's API for many messages (it enqueues them one at a time).
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from bench.peers.common import child_tag, fan_in, record_done, redis_url

broker = RedisBroker(url=redis_url())
broker.add_middleware(Results(backend=RedisBackend(url=redis_url())))
dramatiq.set_broker(broker)

WAIT_MS = 3_600_000  # a parent waits for its children "forever"; the harness has the deadline


@dramatiq.actor(store_results=True, max_retries=0)
def noop(tag: str, i: int) -> int:
    record_done(tag)
    return i


@dramatiq.actor(store_results=True, max_retries=0)
def parent(tag: str, i: int, children: int) -> int:
    return fan_in(
        tag,
        lambda: (
            dramatiq.group(noop.message(child_tag(tag), j) for j in range(children))
            .run()
            .get_results(block=True, timeout=WAIT_MS)
        ),
    )


class Adapter:
    batch_api: str | None = "group(...).run()"

    def enqueue_single(self, tag: str, n: int) -> None:
        for i in range(n):
            noop.send(tag, i)

    def enqueue_batch(self, tag: str, n: int) -> None:
        dramatiq.group(noop.message(tag, i) for i in range(n)).run()

    def roundtrip(self, tag: str, i: int, timeout: float) -> Any:
        return noop.send(tag, i).get_result(block=True, timeout=int(timeout * 1000))

    def start_fanout(self, tag: str, parents: int, children: int) -> None:
        for i in range(parents):
            parent.send(tag, i, children)

    def close(self) -> None:
        broker.close()
