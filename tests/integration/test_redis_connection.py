"""Connecting to Redis: URL forms (password, TLS, unix socket), unreachable or lost Redis,
and the scripts loaded when the app connects. Real redis-server processes only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from pynenc import Pynenc
from pynenc.exceptions import BackendUnavailableError, ConfigurationError
from pynenc.redis_keys import RedisKeys
from pynenc.redis_scripts import load_library, load_scripts
from tests.integration.test_redis_backend import (
    RunnerThread,
    app,
    configure,
    orchestrator_of,
    server_on_socket,
    spec,
    square,
)
from tests.redis_servers import RedisServer, find_free_port


def test_redis_down_at_start_names_the_url_without_password() -> None:
    port = find_free_port()
    target = configure(Pynenc(app_id="down"), f"redis://:s3cret-pass@127.0.0.1:{port}/0")
    with pytest.raises(BackendUnavailableError) as raised:
        target.orchestrator
    message = str(raised.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in message
    assert "s3cret" not in message
    target.close()


def test_lost_redis_fails_after_retry_seconds_with_a_clear_error() -> None:
    with server_on_socket() as (server, url):
        target = configure(Pynenc(app_id="lost"), url, redis_retry_seconds=0.3)
        orchestrator = orchestrator_of(target)
        orchestrator.register([spec()])
        server.stop()
        with pytest.raises(BackendUnavailableError, match=r"unreachable for 0.3 s"):
            orchestrator.register([spec()])
        target.close()


def test_unknown_url_scheme_is_a_configuration_error() -> None:
    target = configure(Pynenc(app_id="scheme"), "http://:pw@localhost:6379/0")
    with pytest.raises(ConfigurationError, match=r"unknown scheme 'http'.*redis\+cluster://") as raised:
        target.orchestrator
    assert "pw" not in str(raised.value)


def test_the_functions_library_is_loaded_when_the_app_connects(fresh_redis_server: RedisServer) -> None:
    client = fresh_redis_server.client()
    try:
        client.function_flush()
        target = configure(Pynenc(app_id="preload"), fresh_redis_server.url)
        orchestrator_of(target)
        [library] = client.function_list(library=load_library().name)
        functions = {entry[entry.index(b"name") + 1].decode() for entry in library[library.index(b"functions") + 1]}
        assert functions == {script.function for script in load_scripts().values()}
        target.close()
    finally:
        client.close()


@contextmanager
def app_at(url: str, client: redis.Redis, **values: Any) -> Iterator[Pynenc]:
    """The module's app configured for ``url``; purged, and ``client`` closed, afterwards."""
    target = configure(app, url, **values)
    try:
        yield target
    finally:
        client.close()
        target.purge()
        target.reset_components()


def script_commands_of_one_call(client: redis.Redis, target: Pynenc) -> dict[str, Any]:
    """Run one square(7) on ``target`` from a clean slate: the server's command statistics."""
    if int(str(client.info("server")["redis_version"]).split(".")[0]) >= 7:  # Redis 6 has no functions
        client.function_flush()
    client.config_resetstat()
    runner = RunnerThread(target)
    try:
        assert square(7).result == 49
    finally:
        runner.stop()
    calls: dict[str, Any] = client.info("commandstats")
    return calls


def test_without_functions_the_scripts_run_by_evalsha(fresh_redis_server: RedisServer) -> None:
    client = fresh_redis_server.client()
    with app_at(fresh_redis_server.url, client, redis_functions=False) as target:
        shas = [script.sha for script in load_scripts().values()]
        client.script_flush()
        calls = script_commands_of_one_call(client, target)
        assert "cmdstat_evalsha" in calls and "cmdstat_fcall" not in calls
        assert client.script_exists(*shas) == [True] * len(shas)
        assert client.function_list() == []


def test_an_acl_forbidding_functions_falls_back_to_evalsha(fresh_redis_server: RedisServer) -> None:
    # Managed Redis services may forbid FUNCTION LOAD to application users.
    client = fresh_redis_server.client()
    client.execute_command("ACL", "SETUSER", "app", "on", ">app-pass", "~*", "&*", "+@all", "-function")
    host, port = client.connection_pool.connection_kwargs["host"], client.connection_pool.connection_kwargs["port"]
    with app_at(f"redis://app:app-pass@{host}:{port}/0", client) as target:
        calls = script_commands_of_one_call(client, target)
        assert "cmdstat_evalsha" in calls and "cmdstat_fcall" not in calls


def test_on_redis_6_the_scripts_run_by_evalsha(redis6_server: RedisServer) -> None:
    # The behavioural suite runs on this server too (backend "redis6"); here: it is Redis 6,
    # and what pynenc sent it.
    client = redis6_server.client()
    assert str(client.info("server")["redis_version"]).startswith("6.")
    with app_at(redis6_server.url, client) as target:
        calls = script_commands_of_one_call(client, target)
        assert calls["cmdstat_evalsha"]["calls"] >= 3  # register, claim, finish at least
        assert "cmdstat_fcall" not in calls


def test_password_protected_redis() -> None:
    server = RedisServer(name="redis-auth", password="pa55-word")
    try:
        assert server.url.startswith("redis://:pa55-word@")
        configure(app, server.url, max_threads=2)
        runner = RunnerThread(app)
        try:
            assert square(12).get_result(timeout=10) == 144
        finally:
            runner.stop()
        app.purge()
        app.reset_components()
        wrong = configure(Pynenc(app_id="wrong"), server.url.replace("pa55-word", "not-it"))
        with pytest.raises(BackendUnavailableError) as raised:
            wrong.orchestrator
        assert "redis://:***@127.0.0.1" in str(raised.value) and "not-it" not in str(raised.value)
        wrong.close()
    finally:
        server.close()


def test_tls_rediss_url(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    tls_port = find_free_port()
    server = RedisServer(
        name="redis-tls",
        extra_args=["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                    "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"],
    )  # fmt: skip
    try:
        configure(app, f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}", max_threads=2)
        runner = RunnerThread(app)
        try:
            assert square(11).get_result(timeout=10) == 121
        finally:
            runner.stop()
        client = server.client()
        try:  # the plain-TCP view of the same server sees what went over TLS
            assert client.hlen(RedisKeys(app.app_id).state) == 1
        finally:
            client.close()
        app.purge()
        app.reset_components()
    finally:
        server.close()


def test_builder_and_redis_url_alone_select_the_redis_backend(redis_url: str) -> None:
    from pynenc import PynencBuilder
    from pynenc.orchestrator.redis_orchestrator import RedisOrchestrator

    for target in (
        PynencBuilder().app_id("built").redis(url=redis_url).build(),
        Pynenc(app_id="by-url", config_values={"redis_url": redis_url}),
    ):
        assert isinstance(target.orchestrator, RedisOrchestrator)
        assert type(target.broker).__name__ == "RedisBroker"
        assert type(target.state_backend).__name__ == "RedisStateBackend"
        target.close()
