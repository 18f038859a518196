"""``pynenc --app tasks.app runner start``: run the app's configured runner in this process.

SIGTERM and SIGINT stop the runner loop (nothing is left RUNNING: unfinished
work goes back to the queue); a second signal exits at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click


@click.group("runner")
def runner() -> None:
    """Run the app's runner (runner_cls) in this process."""


@runner.command("start")
@click.pass_obj
def start(handle: object) -> None:
    """Start the runner and serve until SIGTERM / Ctrl-C."""
    app = handle.app  # type: ignore[attr-defined]
    the_runner = app.runner
    signals_seen: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No lock here (the handler may run inside code that holds one): a plain list append.
        signals_seen.append(signum)
        if len(signals_seen) > 1:
            raise SystemExit(128 + signum)  # a second signal: stop now
        threading.Thread(target=the_runner.stop_runner_loop, name="pynenc-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(f"pynenc: {type(the_runner).__name__} serving app {app.app_id}", err=True)
    the_runner.run()
