"""pynenc tasks and client adapter (runs in the project's own virtualenv).

Worker: ``pynenc-supervisor --processes 2 --app bench.peers.pynenc_app.app`` on
the Redis backend (orchestrator, broker and state backend). Round trips wait
with ``invocation.get_result(timeout)``; batched enqueue uses
``task.parallelize``. Fan-out waits inside the parent task, which pynenc allows
(the waiting invocation is paused, its slot freed for the children).
"""

from __future__ import annotations

from typing import Any

from bench.peers.common import child_tag, fan_in, record_done, redis_url
from pynenc import PynencBuilder

app = PynencBuilder().app_id("bench").redis(url=redis_url()).build()


@app.task
def noop(tag: str, i: int) -> int:
    record_done(tag)
    return i


@app.task
def parent(tag: str, i: int, children: int) -> int:
    return fan_in(tag, lambda: noop.parallelize([(child_tag(tag), j) for j in range(children)]).results)


class Adapter:
    batch_api: str | None = "task.parallelize()"

    def enqueue_single(self, tag: str, n: int) -> None:
        for i in range(n):
            noop(tag, i)

    def enqueue_batch(self, tag: str, n: int) -> None:
        noop.parallelize([(tag, i) for i in range(n)])

    def roundtrip(self, tag: str, i: int, timeout: float) -> Any:
        return noop(tag, i).get_result(timeout=timeout)

    def start_fanout(self, tag: str, parents: int, children: int) -> None:
        for i in range(parents):
            parent(tag, i, children)

    def close(self) -> None:
        pass
