"""The systems under test: pinned packages, worker commands, client modules.

Every peer is installed from PyPI at a pinned version into a virtualenv of its
own under ``bench/.venvs/<name>`` (their dependency pins conflict with each
other and with pynenc's). pynenc runs from the interpreter running the harness.

Each system runs in its standard worker with 2 processes:

- Celery: ``celery worker -P prefork -c 2``
- Dramatiq: ``dramatiq -p 2`` (default threads per process)
- Huey: ``huey_consumer -k process -w 2``
- RQ: ``rq worker-pool -n 2``
- arq: has no multi-process option, so two ``arq`` worker processes
- pynenc: ``pynenc-supervisor --processes 2``
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pynenc.exceptions import PynencError

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"

# Environment variable through which workers and clients learn the Redis URL.
REDIS_URL_ENV = "BENCH_REDIS_URL"


class BenchError(PynencError):
    """The benchmark could not run as asked (bad option, missing setup, a system failing)."""


@dataclass(frozen=True)
class SystemSpec:
    """How to install, start and drive one system."""

    name: str
    # Requirements handed to pip (exact pins). Empty for pynenc (runs in place).
    requirements: tuple[str, ...]
    # Module with the tasks and the client ``Adapter`` (bench/peers/<name>_app.py).
    module: str
    # Worker commands, given the bin directory of the system's interpreter and
    # the Redis URL. Several commands mean several independent processes.
    worker_argv: Callable[[Path, str], list[list[str]]]
    notes: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def is_peer(self) -> bool:
        return self.name != "pynenc"

    def venv_dir(self) -> Path:
        return VENVS_DIR / self.name

    def bin_dir(self) -> Path:
        if not self.is_peer:
            return Path(sys.executable).parent
        return self.venv_dir() / "bin"

    def python(self) -> Path:
        if not self.is_peer:
            return Path(sys.executable)
        return self.bin_dir() / "python"


def _celery(bin_dir: Path, url: str) -> list[list[str]]:
    return [
        [
            str(bin_dir / "celery"),
            "-A", "bench.peers.celery_app", "worker",
            "-P", "prefork", "-c", "2", "--loglevel", "WARNING",
        ]
    ]  # fmt: skip


def _dramatiq(bin_dir: Path, url: str) -> list[list[str]]:
    return [[str(bin_dir / "dramatiq"), "bench.peers.dramatiq_app", "-p", "2"]]


def _huey(bin_dir: Path, url: str) -> list[list[str]]:
    return [
        [str(bin_dir / "huey_consumer"), "bench.peers.huey_app.huey", "-k", "process", "-w", "2", "-q"],
    ]


def _rq(bin_dir: Path, url: str) -> list[list[str]]:
    return [[str(bin_dir / "rq"), "worker-pool", "-n", "2", "-u", url, "-q", "bench"]]


def _arq(bin_dir: Path, url: str) -> list[list[str]]:
    one = [str(bin_dir / "arq"), "bench.peers.arq_app.WorkerSettings"]
    return [one, list(one)]


def _pynenc(bin_dir: Path, url: str) -> list[list[str]]:
    script = bin_dir / "pynenc-supervisor"
    # The console script exists once pynenc is (re)installed; the module form is the same program.
    command = [str(script)] if script.exists() else [str(bin_dir / "python"), "-m", "pynenc.supervisors"]
    return [[*command, "--processes", "2", "--app", "bench.peers.pynenc_app.app"]]


#: Every peer gets the reply parser pynenc uses (redis-py picks hiredis up when installed):
#: without it each Redis reply, the tasks' own RPUSH included, costs a peer more CPU than
#: it costs pynenc, and the comparison would measure the parser as much as the queue.
HIREDIS = "hiredis==3.5.0"

SYSTEMS: dict[str, SystemSpec] = {
    spec.name: spec
    for spec in (
        SystemSpec(
            "pynenc",
            (),
            "bench.peers.pynenc_app",
            _pynenc,
            "pynenc-supervisor --processes 2",
            # Warnings only, as the peers run (celery -l WARNING, rq -q, huey -q).
            extra_env={"PYNENC__LOGGING_LEVEL": "warning"},
        ),
        SystemSpec(
            "celery",
            ("celery[redis]==5.7.0", HIREDIS),
            "bench.peers.celery_app",
            _celery,
            "celery worker -P prefork -c 2",
        ),
        SystemSpec(
            "dramatiq",
            ("dramatiq[redis]==2.2.1", HIREDIS),
            "bench.peers.dramatiq_app",
            _dramatiq,
            "dramatiq -p 2 (default threads)",
        ),
        SystemSpec(
            "huey", ("huey==3.5.4", "redis==8.1.0", HIREDIS), "bench.peers.huey_app", _huey, "huey -k process -w 2"
        ),
        SystemSpec("rq", ("rq==2.12.0", HIREDIS), "bench.peers.rq_app", _rq, "rq worker-pool -n 2"),
        SystemSpec("arq", ("arq==0.28.0", HIREDIS), "bench.peers.arq_app", _arq, "2 x arq worker (no pool option)"),
    )
}

PEER_NAMES: tuple[str, ...] = tuple(name for name in SYSTEMS if name != "pynenc")


def select(names: str | None, *, include_pynenc: bool = True) -> list[SystemSpec]:
    """Parse ``--peers a,b`` (None = all peers); pynenc is always first unless excluded."""
    if names is None or names.strip() == "":
        chosen = list(PEER_NAMES)
    else:
        chosen = [n.strip().lower() for n in names.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in SYSTEMS]
        if unknown:
            raise BenchError(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    specs = [SYSTEMS[n] for n in dict.fromkeys(chosen) if n != "pynenc"]
    if include_pynenc:
        specs.insert(0, SYSTEMS["pynenc"])
    return specs
