"""Huey tasks and client adapter (runs in bench/.venvs/huey).

Worker: ``huey_consumer bench.peers.huey_app.huey -k process -w 2``.
Results are stored (Huey's default) with ``notify_result=True``, Huey's documented
option to wake a waiting ``result.get(blocking=True)`` by BLPOP instead of the
default polling with backoff (which starts at 50 ms). Batched enqueue uses
``task.map()``, Huey's API for many calls (one storage write per task).
"""

from __future__ import annotations

from typing import Any

from huey import RedisHuey

from bench.peers.common import child_tag, fan_in, record_done, redis_url

huey = RedisHuey("bench", url=redis_url(), notify_result=True)


@huey.task()
def noop(tag: str, i: int) -> int:
    record_done(tag)
    return i


@huey.task()
def parent(tag: str, i: int, children: int) -> int:
    return fan_in(tag, lambda: noop.map([(child_tag(tag), j) for j in range(children)]).get(blocking=True))


class Adapter:
    batch_api: str | None = "task.map()"

    def enqueue_single(self, tag: str, n: int) -> None:
        for i in range(n):
            noop(tag, i)

    def enqueue_batch(self, tag: str, n: int) -> None:
        noop.map([(tag, i) for i in range(n)])

    def roundtrip(self, tag: str, i: int, timeout: float) -> Any:
        return noop(tag, i).get(blocking=True, timeout=timeout)

    def start_fanout(self, tag: str, parents: int, children: int) -> None:
        for i in range(parents):
            parent(tag, i, children)

    def close(self) -> None:
        pass
