"""RedisBroker: the queue as a sorted set in Redis.

Score = ``-priority * 2**32 + order`` (lowest first), so the most waited-on
invocation comes first and FIFO order holds within a priority; ``front``
entries take orders below every ``back`` one. The orchestrator's scripts
manipulate the same sorted set inside their transitions; these methods are
for inspection and for tests.
"""

from __future__ import annotations

from typing import Any

from pynenc.broker.base import BaseBroker
from pynenc.redis_keys import PRIORITY_UNIT, queue_priority
from pynenc.state_backend.redis_state_backend import RedisStateBackend


class RedisBroker(BaseBroker):
    family = "redis"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        state = app.state_backend
        if not isinstance(state, RedisStateBackend):
            from pynenc.exceptions import ConfigurationError

            raise ConfigurationError("RedisBroker needs RedisStateBackend (use PynencBuilder().redis(...))")
        self.state = state
        self.keys = state.keys

    def enqueue(self, invocation_id: str, priority: int = 0, front: bool = False) -> None:
        self.state.run("enqueue", invocation_id, priority, "1" if front else "0")

    def pop(self) -> str | None:
        popped = self.state.conn.call(lambda client: client.zpopmin(self.keys.queue))
        return str(popped[0][0]) if popped else None

    def add_priority(self, invocation_id: str, delta: int) -> None:
        # XX: only when queued; INCR: atomically, keeping its FIFO order within the new priority.
        self.state.conn.call(
            lambda client: client.zadd(self.keys.queue, {invocation_id: -delta * PRIORITY_UNIT}, xx=True, incr=True)
        )

    def remove(self, invocation_id: str) -> None:
        self.state.conn.call(lambda client: client.zrem(self.keys.queue, invocation_id))

    def depth(self) -> int:
        return int(self.state.conn.call(lambda client: client.zcard(self.keys.queue)))

    def peek(self, limit: int = 10) -> list[tuple[str, int]]:
        entries = self.state.conn.call(lambda client: client.zrange(self.keys.queue, 0, limit - 1, withscores=True))
        return [(str(member), queue_priority(score)) for member, score in entries]

    def purge(self) -> None:
        self.state.conn.call(lambda client: client.delete(self.keys.queue))

    def close(self) -> None:
        self.state.conn.close()
