"""redis-py clients for a Redis Cluster (``redis+cluster://``), built the way pynenc needs them.

pynenc talks to a single server with its own small client (:mod:`pynenc.redis_conn`); on a
cluster it uses redis-py, which routes each call to the primary of its slot. This module
says how those clients are made:

- the command client starts from the URL's node, or from every node an earlier client knew
  (:func:`command_client`, :func:`known_nodes`): after a primary died, a fresh client from
  all of them finds the promoted replica even when the old one kept the dead node;
- the subscriber's client (:func:`subscriber_client`) goes to the URL's node first and to
  the next known node at each new subscription, so a dead node is left behind;
- redis-py's own retries are off: :meth:`pynenc.redis_client.RedisConnection.call` retries
  with its backoff and deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pynenc import redis_errors as errors

COMMAND_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def _redis_py_options() -> dict[str, Any]:
    """redis-py's own retries off; its version given, else it looks it up in package
    metadata on every new connection."""
    redis = errors.redis_py()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {"decode_responses": True, "retry": Retry(NoBackoff(), 0)}
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 7 knows only lib_version
        options["lib_version"] = redis.__version__
    else:
        options["driver_info"] = DriverInfo(lib_version=redis.__version__)
    return options


def node_options(url: str, tls: bool) -> dict[str, Any]:
    """redis-py's options for the node in the URL (the others are discovered)."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 6379,
        "username": parts.username or None,
        "password": parts.password,
        "ssl": tls,
        **_redis_py_options(),
    }


def command_client(url: str, tls: bool, nodes: Sequence[tuple[str, int]] = ()) -> Any:
    """A RedisCluster client starting from ``nodes`` when given, else from the URL's node."""
    redis = errors.redis_py()
    options = node_options(url, tls)
    if nodes:
        del options["host"], options["port"]
        options["startup_nodes"] = [redis.cluster.ClusterNode(host, port) for host, port in nodes]
    return redis.cluster.RedisCluster(socket_timeout=COMMAND_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT, **options)


def known_nodes(url: str, client: Any) -> list[tuple[str, int]]:
    """The URL's node and every node ``client`` knows, as (host, port), sorted."""
    parts = urlsplit(url)
    known = {(parts.hostname or "localhost", parts.port or 6379)}
    try:
        known |= {(node.host, node.port) for node in client.get_nodes()}
    except Exception:  # noqa: BLE001 - the URL's node alone, then
        pass
    return sorted(known)


def subscriber_client(url: str, tls: bool, client: Any, turn: int) -> Any:
    """A plain redis-py client for subscription number ``turn`` of this process: the URL's
    node first, then the next node ``client`` knows each time (cluster PUBLISH reaches every
    node). A silently dead subscription is noticed by a PING after 15 s of silence."""
    options = node_options(url, tls)
    if turn:
        try:
            nodes = sorted(client.get_nodes(), key=lambda node: node.name)
        except Exception:  # noqa: BLE001 - no view of the cluster yet: the URL's node
            nodes = []
        if nodes:
            node = nodes[turn % len(nodes)]
            options.update(host=node.host, port=node.port)
    return errors.redis_py().Redis(socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=15, **options)
