"""arq tasks and client adapter (runs in bench/.venvs/arq).

Worker: arq has no option for several processes, so the harness starts two
``arq bench.peers.arq_app.WorkerSettings`` processes (defaults otherwise:
``max_jobs=10`` concurrent jobs each, queue polled every 0.5 s when idle).
arq has no blocking result wait: ``job.result()`` polls, here every
``RESULT_POLL`` seconds (its default is 0.5 s). No bulk enqueue API.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from bench.peers.common import child_tag, done_key, err_key, error_text, redis_url

RESULT_POLL = 0.002
WAIT_S = 3600.0  # a parent waits for its children "forever"; the harness has the deadline


async def noop(ctx: dict[str, Any], tag: str, i: int) -> int:
    await ctx["redis"].rpush(done_key(tag), repr(time.time()))
    return i


async def parent(ctx: dict[str, Any], tag: str, i: int, children: int) -> int:
    redis = ctx["redis"]
    try:
        jobs = [await redis.enqueue_job("noop", child_tag(tag), j) for j in range(children)]
        total = 0
        for job in jobs:
            total += await job.result(timeout=WAIT_S, poll_delay=RESULT_POLL)
    except Exception as exc:
        await redis.rpush(err_key(tag), error_text(exc))
        raise
    await redis.rpush(done_key(tag), repr(time.time()))
    return total


class WorkerSettings:
    functions = [noop, parent]
    redis_settings = RedisSettings.from_dsn(redis_url())


class Adapter:
    batch_api: str | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.redis = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(redis_url())))

    def enqueue_single(self, tag: str, n: int) -> None:
        async def go() -> None:
            for i in range(n):
                await self.redis.enqueue_job("noop", tag, i)

        self.loop.run_until_complete(go())

    def enqueue_batch(self, tag: str, n: int) -> None:
        raise NotImplementedError("arq has no bulk enqueue")

    def roundtrip(self, tag: str, i: int, timeout: float) -> Any:
        async def go() -> Any:
            job = await self.redis.enqueue_job("noop", tag, i)
            return await job.result(timeout=timeout, poll_delay=RESULT_POLL)

        return self.loop.run_until_complete(go())

    def start_fanout(self, tag: str, parents: int, children: int) -> None:
        async def go() -> None:
            for i in range(parents):
                await self.redis.enqueue_job("parent", tag, i, children)

        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.redis.aclose())
        self.loop.close()
