"""DummyRunner: the default, which cannot run anything and says what to configure."""

from __future__ import annotations

from pynenc.runners.base import BaseRunner

from pynenc.exceptions import RunnerNotConfiguredError


class DummyRunner(BaseRunner):
    def run(self) -> None:
        raise RunnerNotConfiguredError(
            "the app uses DummyRunner, which cannot run tasks: set runner_cls (e.g. app.conf.runner_cls = "
            "'ThreadRunner', env PYNENC__RUNNER_CLS=ThreadRunner, or PynencBuilder().thread_runner()), or "
            "start pynenc-supervisor"
        )

    def stop_runner_loop(self) -> None:
        """Nothing runs, so nothing to stop."""
