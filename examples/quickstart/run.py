"""Run the quick-start tasks on a ThreadRunner in this process and print what happens.

    python examples/quickstart/run.py

With two execution slots, a recursive fibonacci that waits on hundreds of its own
sub-invocations still finishes: waiting invocations give their slot away.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import add, app, fibonacci, ping  # noqa: E402

from pynenc.exceptions import CycleDetectedError  # noqa: E402


def main() -> None:
    app.conf.runner_cls = "ThreadRunner"
    app.conf.max_threads = 2
    app.conf.logging_level = "WARNING"
    runner = app.runner
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        invocation = add(1, 2)
        print(f"add(1, 2) = {invocation.result}   [{invocation.status}, id {invocation.invocation_id}]")

        group = add.parallelize([(i, i) for i in range(10)])
        print(f"parallelize: {sorted(group.results)}")

        started = time.perf_counter()
        print(f"fibonacci(12) = {fibonacci(12).result} with 2 slots in {time.perf_counter() - started:.2f} s")

        try:
            print(f"unexpected: {ping(1).result}")
        except CycleDetectedError as error:
            print(f"cycle detected, as expected: {str(error)[:100]}...")
    finally:
        runner.stop_runner_loop()
        thread.join(10)
        app.purge()
    print("quickstart finished")


if __name__ == "__main__":
    main()
