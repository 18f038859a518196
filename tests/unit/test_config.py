"""Configuration: sources, precedence, per-task options and the errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynenc import ConcurrencyControlType, Pynenc, PynencBuilder
from pynenc.broker.mem_broker import MemBroker
from pynenc.conf.config_task import ConcurrencyControlType as FromConfigTask
from pynenc.conf.config_task import ConfigTask
from pynenc.exceptions import ConfigurationError, InvalidComponentError, UnknownTaskOptionError


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty directory so no pyproject.toml of the checkout is read."""
    monkeypatch.chdir(tmp_path)


def test_concurrency_enum_is_importable_from_both_places() -> None:
    assert ConcurrencyControlType is FromConfigTask


def test_defaults_and_source() -> None:
    app = Pynenc()
    assert app.conf.runner_cls == "DummyRunner"
    assert app.conf.orchestrator_cls == "MemOrchestrator"
    assert app.conf.source_of("runner_cls") == "default"


def test_precedence_code_over_env_over_file_over_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pynenc]\nlogging_level = "ERROR"\nmax_stalls = 7\nlease_seconds = 11\n'
        "[tool.pynenc.redis]\nredis_port = 6390\n"
    )
    config = tmp_path / "pynenc.yaml"
    config.write_text("max_stalls: 8\nlease_seconds: 12\n")
    monkeypatch.setenv("PYNENC__LEASE_SECONDS", "13")
    app = Pynenc(config_filepath=str(config), config_values={"app_id": "p"})
    assert app.conf.logging_level == "ERROR"
    assert app.conf.source_of("logging_level").startswith("pyproject.toml")
    assert app.conf.redis_port == 6390  # sections are flattened
    assert app.conf.max_stalls == 8
    assert app.conf.source_of("max_stalls") == f"file {config}"
    assert app.conf.lease_seconds == 13.0
    assert app.conf.source_of("lease_seconds") == "env PYNENC__LEASE_SECONDS"
    assert app.conf.app_id == "p"
    app.conf.lease_seconds = 14
    assert (app.conf.lease_seconds, app.conf.source_of("lease_seconds")) == (14.0, "code")


def test_env_variables_of_the_published_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__RUNNER_CLS", "ThreadRunner")
    monkeypatch.setenv("PYNENC__DEV_MODE_FORCE_SYNC_TASKS", "True")
    monkeypatch.setenv("PYNENC__CONFIGLOGGING__LOGGING_LEVEL", "debug")
    app = Pynenc()
    assert app.conf.runner_cls == "ThreadRunner"
    assert app.conf.dev_mode_force_sync_tasks is True
    assert app.conf.logging_level == "DEBUG"


def test_json_and_toml_config_files(tmp_path: Path) -> None:
    as_json = tmp_path / "c.json"
    as_json.write_text('{"max_threads": 5, "task": {"tests.unit.unit_app.flaky": {"max_retries": 4}}}')
    assert Pynenc(config_filepath=str(as_json)).conf.max_threads == 5
    as_toml = tmp_path / "c.toml"
    as_toml.write_text("[runner]\nmax_threads = 6\n")
    assert Pynenc(config_filepath=str(as_toml)).conf.max_threads == 6


def test_unknown_setting_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting 'max_thread'"):
        Pynenc(config_values={"max_thread": 3})


def test_bad_value_names_the_setting_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__MAX_STALLS", "many")
    with pytest.raises(ConfigurationError, match=r"'max_stalls' from env PYNENC__MAX_STALLS"):
        Pynenc()


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("lease_seconds", "0", "above 0"),  # every claim would expire at once and be recovered
        ("recovery_interval", "-1", "above 0"),
        ("runner_timeout", "nan", "above 0"),
        ("processes", "0", "1 or more"),
        ("max_threads", "0", "1 or more"),
        ("max_stalls", "-1", "0 or more"),
        ("result_ttl", "-5", "0 or more"),
        ("redis_port", "70000", "TCP port"),
    ],
)
def test_out_of_range_numbers_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(f"PYNENC__{name.upper()}", value)
    with pytest.raises(ConfigurationError, match=rf"'{name}' from env PYNENC__{name.upper()}: expected .*{expected}"):
        Pynenc()


def test_zero_is_accepted_where_it_means_something_and_refused_per_task_where_not() -> None:
    app = Pynenc(config_values={"max_paused": 0, "result_ttl": 0, "max_tasks_per_child": 0})
    assert (app.conf.max_paused, app.conf.result_ttl, app.conf.max_tasks_per_child) == (0, 0.0, 0)
    with pytest.raises(ConfigurationError, match="'parallel_batch_size'.*1 or more"):
        ConfigTask("tests.unit.unit_app.add", {"parallel_batch_size": 0}, None)


def test_bad_component_name_lists_the_valid_ones() -> None:
    app = Pynenc()
    with pytest.raises(InvalidComponentError) as info:
        app.conf.runner_cls = "ThredRunner"
    message = str(info.value)
    assert "ThredRunner" in message and "ThreadRunner" in message and "DummyRunner" in message


def test_custom_component_that_cannot_be_loaded() -> None:
    app = Pynenc(config_values={"serializer_cls": "nowhere.module:Thing"})
    with pytest.raises(InvalidComponentError, match="cannot be loaded"):
        _ = app.serializer


def test_unreadable_and_invalid_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Pynenc(config_filepath=str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigurationError, match="not valid json"):
        Pynenc(config_filepath=str(bad))
    ini = tmp_path / "conf.ini"
    ini.write_text("x=1")
    with pytest.raises(ConfigurationError, match="use a .toml"):
        Pynenc(config_filepath=str(ini))


def test_task_options_from_decorator_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('task:\n  "tests.unit.test_config.configured":\n    max_retries: 4\n    parallel_batch_size: 9\n')
    monkeypatch.setenv("PYNENC__CONFIGTASK__TESTS.UNIT.TEST_CONFIG#CONFIGURED__PARALLEL_BATCH_SIZE", "10")
    app = Pynenc(config_filepath=str(config))

    def configured(x: int) -> int:
        return x

    configured.__module__ = "tests.unit.test_config"
    configured.__qualname__ = "configured"
    task = app.task(running_concurrency="task")(configured)
    assert task.conf.max_retries == 4
    assert task.conf.parallel_batch_size == 10
    assert task.conf.running_concurrency is ConcurrencyControlType.TASK
    assert task.conf.source_of("running_concurrency") == "decorator"


def test_unknown_task_option_is_refused_at_decoration() -> None:
    app = Pynenc()
    with pytest.raises(UnknownTaskOptionError, match="max_retry"):

        @app.task(max_retry=3)
        def job() -> None: ...


def test_keys_concurrency_needs_key_arguments() -> None:
    app = Pynenc()
    with pytest.raises(ConfigurationError, match="key_arguments"):

        @app.task(running_concurrency=ConcurrencyControlType.KEYS)
        def job(x: int) -> None: ...


def test_bad_retry_for_names_the_problem() -> None:
    app = Pynenc()
    with pytest.raises(ConfigurationError, match="not an exception class"):

        @app.task(retry_for=("builtins.len",))
        def job() -> None: ...


def test_builder_sets_the_published_names() -> None:
    app = (
        PynencBuilder()
        .app_id("built")
        .redis(url="redis://example:6379/2")
        .multi_thread_runner()
        .logging_level("info")
        .logging_stream("stdout")
        .max_pending_seconds(3.0)
        .build()
    )
    assert app.app_id == "built"
    assert (app.conf.orchestrator_cls, app.conf.broker_cls, app.conf.state_backend_cls) == (
        "RedisOrchestrator",
        "RedisBroker",
        "RedisStateBackend",
    )
    assert app.conf.redis_url == "redis://example:6379/2"
    assert app.conf.runner_cls == "MultiThreadRunner"
    assert app.conf.max_pending_seconds == 3.0
    thread_app = PynencBuilder().sqlite("x.db").thread_runner(min_threads=1, max_threads=8).build()
    assert thread_app.conf.max_threads == 8 and thread_app.conf.sqlite_db_path == "x.db"
    assert thread_app.conf.orchestrator_cls == "SQLiteOrchestrator"


class OtherFamilyBroker(MemBroker):
    family = "other"


def test_mixing_backend_families_is_refused() -> None:
    app = Pynenc(config_values={"broker_cls": "tests.unit.test_config:OtherFamilyBroker"})
    with pytest.raises(ConfigurationError, match="same backend"):
        _ = app.orchestrator
