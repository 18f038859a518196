"""Fixtures of the behavioural suite: the same tests on every backend in backends.BACKENDS."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pynenc import Pynenc
from tests.integration import behaviour_tasks
from tests.integration.backends import BACKENDS


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def app(backend: str, request: pytest.FixtureRequest) -> Iterator[Pynenc]:
    """The behaviour tasks' app on one backend, with a fresh app id and no runner yet."""
    with behaviour_tasks.prepared_app("bhv", lambda app: BACKENDS[backend](app, request)) as app:
        yield app


RunnerFactory = Callable[..., Any]


@pytest.fixture
def start_runner(app: Pynenc) -> Iterator[RunnerFactory]:
    """Start the app's ThreadRunner in a thread: ``start_runner(max_threads=2)``; stopped after the test."""
    started: list[tuple[Any, threading.Thread]] = []

    def start(max_threads: int = 2) -> Any:
        app.conf.max_threads = max_threads
        runner = app.runner
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        started.append((runner, thread))
        return runner

    yield start
    for runner, thread in started:
        runner.stop_runner_loop()
        thread.join(5)
        assert not thread.is_alive(), "runner loop did not stop"


@pytest.fixture
def runner(start_runner: RunnerFactory) -> Any:
    return start_runner(2)


@contextmanager
def no_runner() -> Iterator[None]:
    yield
