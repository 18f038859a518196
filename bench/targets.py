"""The speed pynenc aims at, checked against one run (same run, same machine, ratios).

Each target compares pynenc's median with the best peer's median of the same run (or with
pynenc's own numbers), so the verdict printed with every report, and published in
docs/benchmarks.md, comes from the run and never from hand-copied figures:

- end-to-end throughput with 2 processes: at least 3x the fastest peer;
- round-trip latency p50: at most half the best peer's;
- batched enqueue: at least 5x the fastest peer's single enqueue;
- single enqueue: at least the fastest peer's;
- fan-out/fan-in completes at no less than half of pynenc's plain throughput (invocations
  per second: each parent and its children);
- idle pool: under 1 % of a core;
- worker PSS: no more than the leanest peer's.

A target that cannot be judged (no peer measured it, pynenc has no number) shows "–".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.metrics import BASE, METRIC_BY_KEY, best_peer, fmt_number, median_of


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not judged (a number is missing)


def _against_peer(
    systems: dict[str, dict[str, Any]],
    target: str,
    key: str,
    holds: Callable[[float], bool],
    peer_key: str | None = None,
) -> Verdict:
    """pynenc's ``key`` over the best peer's ``peer_key`` (default the same metric)."""
    ours = median_of(systems.get(BASE, {}), key)
    best = best_peer(systems, METRIC_BY_KEY[peer_key or key])
    if ours is None or best is None or best[1] == 0:
        return Verdict(target, "–", None)
    ratio = ours / best[1]
    unit = METRIC_BY_KEY[key].unit
    measured = f"{fmt_number(ours)} {unit} = {ratio:.2f}x {best[0]} ({fmt_number(best[1])} {unit})"
    return Verdict(target, measured, holds(ratio))


def verdicts(systems: dict[str, dict[str, Any]], sizes: dict[str, Any]) -> list[Verdict]:
    pynenc = systems.get(BASE, {})
    out = [
        _against_peer(
            systems, "throughput with 2 processes at least 3x the fastest peer's",
            "throughput_per_s", lambda r: r >= 3.0,
        ),
        _against_peer(
            systems, "round trip p50 at most half the best peer's",
            "latency_p50_ms", lambda r: r <= 0.5,
        ),
        _against_peer(
            systems, "batched enqueue at least 5x the fastest peer's single enqueue",
            "enqueue_batch_per_s", lambda r: r >= 5.0, peer_key="enqueue_single_per_s",
        ),
        _against_peer(
            systems, "single enqueue at least the fastest peer's",
            "enqueue_single_per_s", lambda r: r >= 1.0,
        ),
    ]  # fmt: skip
    fanout, plain = median_of(pynenc, "fanout_parents_per_s"), median_of(pynenc, "throughput_per_s")
    target = "fan-out/fan-in completes at no less than half the plain throughput"
    children = sizes.get("fanout_children")
    if fanout is None or plain is None or not isinstance(children, int):
        out.append(Verdict(target, "–", None))
    else:
        invocations = fanout * (1 + children)
        measured = (
            f"{fmt_number(fanout)} parents/s = {fmt_number(invocations)} invocations/s vs half of {fmt_number(plain)}"
        )
        out.append(Verdict(target, measured, invocations >= plain / 2))
    idle = median_of(pynenc, "idle_cpu_percent")
    target = "idle pool under 1 % of a core"
    out.append(Verdict(target, "–", None) if idle is None else Verdict(target, f"{fmt_number(idle)} %", idle < 1.0))
    out.append(
        _against_peer(
            systems, "worker PSS no more than the leanest peer's",
            "pss_per_worker_mb", lambda r: r <= 1.0,
        )
    )  # fmt: skip
    return out


def markdown(found: list[Verdict]) -> str:
    lines = ["| target | this run | met |", "|---|---|---|"]
    for verdict in found:
        met = "–" if verdict.met is None else ("yes" if verdict.met else "no")
        lines.append(f"| {verdict.target} | {verdict.measured} | {met} |")
    return "\n".join(lines) + "\n"
