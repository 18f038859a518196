"""What the Redis backend catches, and how it reports the scripts' own refusals.

A single server is reached through :mod:`pynenc.redis_conn`, whose errors are listed here
from the start; redis-py is imported only for Redis Cluster (:func:`redis_py`), and its
errors join the tuples then. Always read them as attributes of this module
(``redis_errors.CONNECTION_ERRORS``) so the joined ones are seen.
"""

from __future__ import annotations

import re
from typing import Any

from pynenc.exceptions import InvocationStatusTransitionError, PynencError
from pynenc.redis_conn import NoScriptError, RedisConnectionError, RedisReplyError

#: what a lost or unreachable server raises; redis-py's errors join when a cluster is used
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, OSError)
#: an error reply (redis-py's joins when a cluster is used)
REPLY_ERRORS: tuple[type[BaseException], ...] = (RedisReplyError,)
#: the script or function called is not loaded on the server
NOSCRIPT_ERRORS: tuple[type[BaseException], ...] = (NoScriptError,)

_TRANSITION_ERROR = re.compile(r"PYNENC -3 (\S+) (\S+) (\S+)")
_SCRIPT_ERROR = re.compile(r"PYNENC -\d+ (.*)")


def redis_py() -> Any:
    """redis-py, imported only for Redis Cluster (about 7 MiB a process); its errors are caught too."""
    global CONNECTION_ERRORS, REPLY_ERRORS, NOSCRIPT_ERRORS
    import redis
    import redis.cluster

    if redis.exceptions.ConnectionError not in CONNECTION_ERRORS:
        # CLUSTERDOWN and TRYAGAIN are a cluster between states (a primary failed, its
        # replica not promoted yet; a slot migrating): retried like an unreachable server.
        CONNECTION_ERRORS += (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
        )
        REPLY_ERRORS += (redis.exceptions.ResponseError,)
        NOSCRIPT_ERRORS += (redis.exceptions.NoScriptError,)
    return redis


def translate(exc: BaseException) -> BaseException:
    """Errors the scripts raise on purpose ("PYNENC <code> ...") as pynenc errors."""
    text = str(exc)
    transition = _TRANSITION_ERROR.search(text)
    if transition:
        invocation_id, current, requested = transition.groups()
        return InvocationStatusTransitionError(invocation_id, current, requested, "refused by the Redis script")
    other = _SCRIPT_ERROR.search(text)
    if other:
        return PynencError(f"Redis script refused the call: {other.group(1)}")
    return exc
