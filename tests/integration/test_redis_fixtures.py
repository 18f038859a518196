"""Self-tests for the real-Redis fixtures in ``tests/redis_servers.py``."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.redis_servers import (
    RedisCluster,
    RedisServer,
    RedisServerError,
    RedisServerNotFoundError,
)

# Fail fast instead of redis-py's default retries with backoff.
NO_RETRY = Retry(NoBackoff(), 0)

SET_TWO_KEYS = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); return 2"


def _eval_set_two(client: Any, key_a: str, key_b: str) -> Any:
    """``EVAL`` SETting two keys passed in KEYS (``client`` untyped: redis-py's
    cluster client lacks annotations for ``eval``)."""
    return client.eval(SET_TWO_KEYS, 2, key_a, key_b, "1", "2")


def _prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


def test_session_server_starts_and_answers(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.running
    assert redis_url == redis_server.url
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        key = _prefix() + "k"
        client.set(key, "v")
        assert client.get(key) == b"v"
        # The port really belongs to the process we started.
        assert int(client.info("server")["process_id"]) == redis_server.pid
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("dir")["dir"] == str(redis_server.dir.resolve())
    finally:
        client.close()


def test_clean_redis_flushes_session_server(redis_server: RedisServer) -> None:
    client = redis_server.client()
    try:
        client.set(_prefix() + "leftover", "x")
        assert client.dbsize() >= 1
    finally:
        client.close()


def test_clean_redis_starts_empty(clean_redis: str, redis_server: RedisServer) -> None:
    assert clean_redis == redis_server.url
    client = redis.Redis.from_url(clean_redis)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_restart_with_appendonly_keeps_data(redis_aof_server: RedisServer) -> None:
    server = redis_aof_server
    port, pid = server.port, server.pid
    client = server.client()
    try:
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.set("persist:a", "1")
        client.rpush("persist:list", "x", "y")
        server.restart()
        assert server.port == port
        assert server.pid != pid
        assert client.get("persist:a") == b"1"
        assert client.lrange("persist:list", 0, -1) == [b"x", b"y"]
        # Even a crash keeps acknowledged writes (appendfsync always).
        client.set("persist:b", "2")
        server.kill()
        server.start()
        assert server.port == port
        assert client.get("persist:b") == b"2"
    finally:
        client.close()


def test_kill_breaks_clients_and_restart_brings_it_back(
    fresh_redis_server: RedisServer,
) -> None:
    server = fresh_redis_server
    client = server.client(retry=NO_RETRY)
    try:
        client.set("volatile", "1")
        server.kill()
        assert not server.running
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        with pytest.raises(redis.exceptions.ConnectionError):
            server.client(retry=NO_RETRY).ping()
        server.restart()
        assert server.running
        assert client.ping() is True
        # No persistence on this server: the data died with the process.
        assert client.get("volatile") is None
    finally:
        client.close()


def test_fixture_servers_are_private(
    redis_server: RedisServer,
    fresh_redis_server: RedisServer,
    redis_aof_server: RedisServer,
) -> None:
    ports = {redis_server.port, fresh_redis_server.port, redis_aof_server.port}
    dirs = {redis_server.dir, fresh_redis_server.dir, redis_aof_server.dir}
    assert len(ports) == 3
    assert len(dirs) == 3


def test_close_stops_process_and_removes_dir() -> None:
    server = RedisServer()
    pid, directory = server.pid, server.dir
    assert pid is not None
    assert directory.is_dir()
    assert (directory / "redis.log").is_file()
    server.close()
    assert not server.running
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _hold_port(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_restart_waits_for_its_port(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    port = server.port
    server.kill()
    holder = _hold_port(port)
    release = threading.Timer(0.5, holder.close)
    release.start()
    try:
        server.start()  # retries binding the same port until it is free
    finally:
        release.join()
        holder.close()
    assert server.port == port
    assert server.client().ping() is True
    assert "=== starting on port" in server.log_path.read_text()


def test_busy_fixed_port_fails_with_log_tail() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    holder = _hold_port(port)
    try:
        server = RedisServer(port=port, wait_for_port=False, start=False)
        try:
            with pytest.raises(RedisServerError, match="(?is)port-in-use.*log tail:.*address already in use"):
                server.start()
        finally:
            server.close()
    finally:
        holder.close()


def test_password_server_rejects_unauthenticated_clients() -> None:
    with RedisServer(password="s3cret-pw") as server:
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=NO_RETRY)
        wrong = redis.Redis(host="127.0.0.1", port=server.port, password="nope", retry=NO_RETRY)
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                anonymous.ping()
            with pytest.raises(redis.exceptions.AuthenticationError):
                wrong.ping()
        finally:
            anonymous.close()
            wrong.close()
        assert ":s3cret-pw@" in server.url
        authed = redis.Redis.from_url(server.url)
        try:
            assert authed.ping() is True
            assert server.client().ping() is True
        finally:
            authed.close()


def test_startup_failure_reports_log_tail() -> None:
    server = RedisServer(extra_args=["--no-such-option", "x"], start=False)
    try:
        with pytest.raises(RedisServerError, match="(?s)log tail:.*no-such-option"):
            server.start()
    finally:
        server.close()


def test_missing_binary_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisServerNotFoundError, match="apt-get install -y redis-server"):
        RedisServer()


def test_cluster_same_hash_tag_multi_key_eval(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.startup_nodes) == 3
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.ports[0]}/0"
    client = redis_cluster.client()
    try:
        tag = "{app}"
        prefix = f"{tag}:{uuid.uuid4().hex}"
        key_a, key_b = f"{prefix}:a", f"{prefix}:b"
        assert client.keyslot(key_a) == client.keyslot(key_b)
        # EVAL routes on its KEYS: both share the {app} slot -> one node.
        assert _eval_set_two(client, key_a, key_b) == 2
        assert client.get(key_a) == b"1"
        assert client.get(key_b) == b"2"
    finally:
        client.close()


def test_cluster_cross_slot_eval_is_rejected(redis_cluster: RedisCluster) -> None:
    key_a, key_b = "{app}:a", "{other}:b"
    client = redis_cluster.client()
    try:
        assert client.keyslot(key_a) != client.keyslot(key_b)
        # redis-py refuses before sending ...
        with pytest.raises(redis.exceptions.RedisClusterException):
            _eval_set_two(client, key_a, key_b)
    finally:
        client.close()
    # ... and the server itself answers CROSSSLOT, whichever node is asked
    # (redis-py maps the CROSSSLOT error prefix to ClusterCrossSlotError).
    for port in redis_cluster.ports:
        node = redis.Redis(host="127.0.0.1", port=port)
        try:
            with pytest.raises(redis.exceptions.ClusterCrossSlotError):
                node.execute_command("EVAL", SET_TWO_KEYS, 2, key_a, key_b, "1", "2")
        finally:
            node.close()


def test_cluster_state_ok_on_every_node(redis_cluster: RedisCluster) -> None:
    for port in redis_cluster.ports:
        node = redis.Redis(host="127.0.0.1", port=port)
        try:
            info = node.cluster("INFO")
            assert info["cluster_state"] == "ok"
            assert int(info["cluster_known_nodes"]) == 3
            assert int(info["cluster_slots_assigned"]) == 16384
        finally:
            node.close()
    client = redis_cluster.client()
    try:
        assert isinstance(client, redis.cluster.RedisCluster)
        keys = [f"spread:{uuid.uuid4().hex}:{i}" for i in range(30)]
        for key in keys:
            client.set(key, key)
        assert all(client.get(k) == k.encode() for k in keys)
    finally:
        client.close()
