"""pynenc's own Redis client (pynenc.redis_conn) against a real redis-server.

What the backend relies on: replies in the shapes its callers expect, error replies raised
without spoiling the connection, a lost connection reported (and the next command
reconnecting), a dead subscription noticed by its health check, and no redis-py in a
process that only talks to a single server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pynenc.exceptions import ConfigurationError
from pynenc.redis_conn import (
    Address,
    Client,
    NoScriptError,
    RedisConnectionError,
    RedisReplyError,
    RedisTimeoutError,
    parse_url,
)
from tests.redis_servers import RedisServer


def test_parse_url_forms() -> None:
    assert parse_url("redis://cache:6390/3") == Address(host="cache", port=6390, db=3)
    assert parse_url("redis://:s3cret@h") == Address(host="h", password="s3cret")
    assert parse_url("redis://me:p%40ss@h:1/0") == Address(host="h", port=1, username="me", password="p@ss")
    tls = parse_url(f"rediss://h:7000/0?ssl_ca_certs={__file__}&ssl_cert_reqs=none")
    assert tls.tls and tls.tls_options == {"ssl_ca_certs": __file__, "ssl_cert_reqs": "none"}
    assert parse_url("unix:///run/redis.sock?db=2") == Address(path="/run/redis.sock", db=2)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://h/0?socket_timeout=3", "socket_timeout"),
        ("redis://h/zero", "'zero'"),
        ("redis://h:notaport/0", "port"),
        ("http://h/0", "'http'"),
        ("rediss://h/0?ssl_cert_reqs=sometimes", "ssl_cert_reqs"),
        ("rediss://h/0?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs='/no/such/ca.pem'"),
    ],
)
def test_bad_urls_are_refused_naming_the_problem(url: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        parse_url(url)


def test_replies_have_the_shapes_the_backend_uses(clean_redis: str) -> None:
    client = Client(clean_redis)
    try:
        assert client.ping() is True
        client.zadd("q", {"a": -2.0, "b": 5.0})
        client.zadd("q", {"b": -10.0}, xx=True, incr=True)  # b: 5 - 10
        client.zadd("q", {"c": 1.0}, xx=True)  # XX: c is not queued, nothing added
        assert client.zcard("q") == 2
        assert client.zrange("q", 0, -1, withscores=True) == [("b", -5.0), ("a", -2.0)]
        assert client.zpopmin("q") == [("b", -5.0)]
        assert client.zrem("q", "a") == 1 and client.zpopmin("q") == []
        client.execute_command("HSET", "h", "f1", "v1", "f2", "v2")
        assert client.hscan("h") == (0, {"f1": "v1", "f2": "v2"})
        client.execute_command("HSET", "big", *[x for i in range(1000) for x in (f"f{i}", str(i))])
        seen: dict[str, str] = {}
        cursor, pages = 0, 0
        while True:  # past 512 fields a hash is a hashtable, scanned in pages: follow the cursor
            cursor, page = client.hscan("big", cursor, count=50)
            seen.update(page)
            pages += 1
            if cursor == 0:
                break
        assert pages > 1 and seen == {f"f{i}": str(i) for i in range(1000)}
        assert client.blpop(["empty"], timeout=0.05) is None
        client.execute_command("RPUSH", "list", "x")
        assert client.blpop(["list"], timeout=1) == ("list", "x")
        assert client.delete("h", "big", "missing") == 2 and client.delete() == 0
        assert set(client.config_get("maxmemory-policy")) == {"maxmemory-policy"}
    finally:
        client.close()


def test_an_error_reply_is_raised_and_the_connection_stays_usable(clean_redis: str) -> None:
    client = Client(clean_redis)
    try:
        client.execute_command("SET", "s", "text")
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            client.execute_command("HGET", "s", "f")
        with pytest.raises(NoScriptError):
            client.evalsha("0" * 40, 0)
        assert len(client.idle) == 1  # the same connection, given back after each error
        sha = client.script_load("return ARGV[1] .. KEYS[1]")
        assert client.evalsha(sha, 1, "k", "v") == "vk"
        assert len(client.idle) == 1
    finally:
        client.close()


def test_a_killed_connection_fails_its_command_and_the_next_one_reconnects(clean_redis: str) -> None:
    client = Client(clean_redis, health_check_interval=0)
    try:
        my_id = client.execute_command("CLIENT", "ID")
        Client(clean_redis).execute_command("CLIENT", "KILL", "ID", my_id)
        with pytest.raises(RedisConnectionError):
            client.execute_command("PING")
        assert client.execute_command("CLIENT", "ID") != my_id  # a new connection
    finally:
        client.close()


def test_a_wrong_password_is_a_connection_error_without_the_password() -> None:
    server = RedisServer(name="redis-auth-conn", password="right-one")
    try:
        client = Client(server.url.replace("right-one", "wrong-one"))
        with pytest.raises(RedisConnectionError, match="WRONGPASS") as raised:
            client.ping()
        assert "wrong-one" not in str(raised.value)
        assert Client(server.url).ping() is True
    finally:
        server.close()


def test_a_subscription_to_a_frozen_server_is_taken_for_dead(fresh_redis_server: RedisServer) -> None:
    client = Client(fresh_redis_server.url, health_check_interval=0.2)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe("chan")
        assert pubsub.get_message(timeout=5) == {"type": "subscribe", "channel": "chan", "data": 1}
        Client(fresh_redis_server.url).execute_command("PUBLISH", "chan", "hello")
        assert pubsub.get_message(timeout=5) == {"type": "message", "channel": "chan", "data": "hello"}
        pid = fresh_redis_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive but silent, as behind a dropped network link
        try:
            deadline = time.monotonic() + 10
            with pytest.raises(RedisConnectionError, match="PING"):
                while time.monotonic() < deadline:
                    pubsub.get_message(timeout=0.05)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        pubsub.close()
        client.close()


def test_a_tls_file_that_is_not_pem_is_a_configuration_error(redis_url: str, tmp_path: Path) -> None:
    # Found on the first connection, not retried for redis_retry_seconds as if Redis were away.
    bad = tmp_path / "ca.pem"
    bad.write_text("this is not a certificate\n")
    port = parse_url(redis_url).port
    client = Client(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={bad}")
    with pytest.raises(ConfigurationError, match="ssl_ca_certs"):
        client.execute_command("PING")


def test_a_silent_server_times_a_command_out(fresh_redis_server: RedisServer) -> None:
    # The socket timeout is the kernel's (SO_RCVTIMEO), not a poll() per call: a server that
    # stops answering must still fail the command after socket_timeout, as RedisTimeoutError.
    client = Client(fresh_redis_server.url, socket_timeout=0.3)
    try:
        assert client.execute_command("PING") == "PONG"
        pid = fresh_redis_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                client.execute_command("PING")
            assert time.monotonic() - started < 5  # not the kernel's TCP give-up (minutes)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert client.execute_command("PING") == "PONG"  # reconnects once the server answers
    finally:
        client.close()


def test_a_single_server_app_never_imports_redis_py(redis_url: str) -> None:
    # redis-py brings its asyncio, cluster and observability layers: about 7 MiB in every
    # runner. Only a Redis Cluster URL may import it.
    code = f"""
import sys
from pynenc import PynencBuilder
app = PynencBuilder().app_id("no-redis-py").redis(url={redis_url!r}).build()
@app.task
def add(a, b):
    return a + b
app.orchestrator.queue_depth()
app.preload()
add(1, 2)
app.purge()
print(sorted(name for name in sys.modules if name == "redis" or name.startswith("redis.")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
