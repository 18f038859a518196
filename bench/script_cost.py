"""What Redis spends on a busy runner's script call, measured without noise.

``python -m bench script-cost [--tasks N] [--callgrind]`` starts a private redis-server,
registers N + 3 no-op invocations and then plays a busy pool runner from one client: N
times ``finish_claim`` finishing the invocation that ran, starting the one held ahead and
claiming the next one ahead (what each task of the throughput drain costs a runner; no
worker runs). It prints, per task, the nested Redis commands by name and the microseconds
Redis reports for the call (``INFO commandstats``).

Those microseconds move with the machine (on a shared 2-core machine by 20 % or more
between runs). With ``--callgrind`` the server runs under valgrind's callgrind and the
count of instructions it executed for the N calls is printed too: the same code gives the
same count to within a fraction of a percent, so a change to the scripts can be judged
by it (valgrind makes the server ~50x slower: a thousand tasks take a few seconds).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.redis_server import BenchRedis
from bench.registry import BenchError

APP_ID = "script-cost"


@dataclass(frozen=True)
class ScriptCost:
    tasks: int
    #: nested command name -> calls per task
    commands: dict[str, float]
    #: Redis' own time per script call (INFO commandstats), microseconds
    usec_per_call: float
    #: instructions redis-server executed per task (callgrind), or None
    instructions: float | None

    def lines(self) -> list[str]:
        nested = sum(self.commands.values())
        out = [
            f"busy runner's finish_claim, {self.tasks} tasks:",
            f"  Redis time per call: {self.usec_per_call:.1f} us (INFO commandstats; "
            + ("under valgrind)" if self.instructions is not None else "moves with the machine)"),
            f"  nested commands per task: {nested:.1f} ("
            + ", ".join(f"{name} {count:.2f}" for name, count in self.commands.items() if count >= 0.01)
            + ")",
        ]
        if self.instructions is not None:
            out.append(f"  redis-server instructions per task: {self.instructions / 1000:.1f}k (callgrind)")
        return out


def measure(tasks: int, callgrind: bool = False) -> ScriptCost:
    if tasks < 1:
        raise BenchError("--tasks must be at least 1")
    server = BenchRedis()
    if callgrind:
        for tool in ("valgrind", "callgrind_control"):
            if shutil.which(tool) is None:
                server.close()
                raise BenchError(f"--callgrind needs {tool} (apt-get install -y valgrind)")
        out = server.dir / "callgrind.out"
        server.prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        server.start_timeout = 120.0
    with server:
        return _play(server, tasks, callgrind)


def _play(server: BenchRedis, tasks: int, callgrind: bool) -> ScriptCost:
    from pynenc import PynencBuilder
    from pynenc.models import Outcome, OutcomeKind

    app = PynencBuilder().app_id(APP_ID).redis(url=server.url).build()

    @app.task
    def noop(i: int) -> int:
        return i

    noop.parallelize([(i,) for i in range(tasks + 3)])  # the first, the one held, and one per call
    orchestrator = app.orchestrator
    runner, done = "script-cost-runner", Outcome(OutcomeKind.SUCCESS, "j1")
    first = orchestrator.claim(runner, 1, 60)
    if not first:
        raise BenchError("nothing to claim: the registration did not reach Redis")
    # One to run now and one held ahead, as a busy runner starts; then the loop below.
    running = first[0].invocation_id
    held = orchestrator.finish_start_claim(runner, running, done, None, 2, 1, 60)().claimed
    running, ahead = held[0].invocation_id, held[1].invocation_id
    stats = redis.Redis.from_url(server.url)
    try:
        stats.config_resetstat()
        if callgrind:
            _callgrind_control(server, "on")
        for _ in range(tasks):
            reply = orchestrator.finish_start_claim(runner, running, done, ahead, 1, 0, 60)()
            if not (reply.done and reply.started and reply.claimed):
                raise BenchError(f"the busy runner's call did not finish, start and claim: {reply}")
            running, ahead = ahead, reply.claimed[0].invocation_id
        # (instrumentation stays on until the server exits: switched off, callgrind kept no
        # totals; the few commands after the loop add well under 0.1 % per task)
        commandstats = stats.info("commandstats")
    finally:
        stats.close()
        app.close()
    script = commandstats.get("cmdstat_fcall") or commandstats.get("cmdstat_evalsha") or {}
    commands = {
        name.removeprefix("cmdstat_"): values["calls"] / tasks
        for name, values in sorted(commandstats.items(), key=lambda item: -item[1]["calls"])
        if name not in ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_config|resetstat", "cmdstat_info")
    }
    instructions = None
    if callgrind:
        server.stop()  # callgrind writes its totals when the server exits
        instructions = _callgrind_total(server.dir / "callgrind.out") / tasks
    return ScriptCost(tasks, commands, float(script.get("usec_per_call", 0.0)), instructions)


def _callgrind_control(server: BenchRedis, switch: str) -> None:
    assert server.proc is not None
    subprocess.run(
        ["callgrind_control", "-i", switch, str(server.proc.pid)], check=True, capture_output=True, timeout=60
    )


def _callgrind_total(path: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise BenchError(f"callgrind wrote no totals to {path}")
