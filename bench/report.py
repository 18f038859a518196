"""The report: a markdown table with ratios, ``results.json`` and ``chart.png``.

Inputs are the per-system results of ``bench.scenarios`` (``metrics`` holds a
median/min/max summary per metric, ``notes`` says why a metric has no number:
unsupported, refused, deadlock, error) and the floor of ``bench.floor``.

Ratios are always ``pynenc median / peer median`` for the same metric; the
``better`` column says which direction wins (for latency, idle CPU and memory a
ratio below 1 is pynenc ahead).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import targets
from bench.metrics import METRIC_BY_KEY, METRICS, Metric, best_peer, fmt_number, median_of

__all__ = ["METRICS", "METRIC_BY_KEY", "Metric", "best_peer", "fmt_number", "median_of"]

JSON_NAME = "results.json"
TABLE_NAME = "table.md"
CHART_NAME = "chart.png"
SCHEMA_VERSION = 1
LOG_UNITS = ("tasks/s", "ms")


def cell(system: dict[str, Any], key: str) -> str:
    summary = system.get("metrics", {}).get(key)
    if summary is not None:
        return f"{fmt_number(summary['median'])} ({fmt_number(summary['min'])}–{fmt_number(summary['max'])})"
    note = str(system.get("notes", {}).get(key) or "")
    if note:
        return note.split(":")[0]  # the kind: unsupported / refused / deadlock / error
    return "–"


def ratios(systems: dict[str, dict[str, Any]], base: str = "pynenc") -> dict[str, dict[str, float | None]]:
    """``{peer: {metric: base median / peer median}}``; None where either side has no number."""
    out: dict[str, dict[str, float | None]] = {}
    if base not in systems:
        return out
    for name, system in systems.items():
        if name == base:
            continue
        row: dict[str, float | None] = {}
        for metric in METRICS:
            ours, theirs = median_of(systems[base], metric.key), median_of(system, metric.key)
            row[metric.key] = None if ours is None or theirs is None or theirs == 0 else ours / theirs
        out[name] = row
    return out


def table(systems: dict[str, dict[str, Any]], floor: dict[str, float] | None) -> str:
    """Markdown: one row per metric, a column per system, then the floor and the ratios."""
    names = list(systems)
    peers = [n for n in names if n != "pynenc"]
    header = ["metric", "better", *names]
    if floor is not None:
        header.append("redis floor")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in METRICS:
        row = [f"{metric.label} ({metric.unit})", "higher" if metric.higher_is_better else "lower"]
        row += [cell(systems[n], metric.key) for n in names]
        if floor is not None:
            value = floor.get(metric.key)
            row.append(fmt_number(value) if value is not None else "")
        lines.append("| " + " | ".join(row) + " |")
    notes = [
        f"- {name}, {METRIC_BY_KEY[key].label}: {text}"
        for name in names
        for key, text in systems[name].get("notes", {}).items()
    ]
    if "pynenc" in systems and peers:
        all_ratios = ratios(systems)
        lines += [
            "",
            "| pynenc / peer | better | " + " | ".join(peers) + " | best peer |",
            "|" + "---|" * (len(peers) + 3),
        ]
        for metric in METRICS:
            row = [metric.label, "higher" if metric.higher_is_better else "lower"]
            for peer in peers:
                value = all_ratios[peer][metric.key]
                row.append("–" if value is None else f"{value:.2f}x")
            best = best_peer(systems, metric)
            ours = median_of(systems["pynenc"], metric.key)
            if best is None or ours is None or best[1] == 0:
                row.append("–")
            else:
                row.append(f"{ours / best[1]:.2f}x vs {best[0]}")
            lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def build(
    meta: dict[str, Any],
    sizes: dict[str, Any],
    systems: dict[str, dict[str, Any]],
    floor: dict[str, Any] | None,
) -> dict[str, Any]:
    """The JSON document of a run (see docs/benchmarks.md for its shape)."""
    derived = floor.get("derived") if floor else None
    found = targets.verdicts(systems, sizes) if "pynenc" in systems else []
    text = table(systems, derived)
    if found:
        caveat = ""
        if meta.get("mode") == "quick":  # e.g. a 0.5 s idle window: one 10 ms CPU tick is 2 %
            caveat = " (quick mode: sizes too small for a verdict; judge a full run)"
        text += f"\nTargets (pynenc against the best peer of this run){caveat}:\n\n" + targets.markdown(found)
    return {
        "schema": SCHEMA_VERSION,
        "meta": meta,
        "sizes": sizes,
        "metrics": {m.key: {"label": m.label, "unit": m.unit, "higher_is_better": m.higher_is_better} for m in METRICS},
        "floor": floor,
        "systems": systems,
        "ratios": ratios(systems),
        "targets": [asdict(verdict) for verdict in found],
        "table": text,
    }


def write(document: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write results.json, table.md and chart.png into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / JSON_NAME, "table": out_dir / TABLE_NAME, "chart": out_dir / CHART_NAME}
    paths["json"].write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    paths["table"].write_text(document["table"])
    chart(document, paths["chart"])
    return paths


def chart(document: dict[str, Any], path: Path) -> None:
    """One bar chart per metric: median bars, min–max whiskers, the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems: dict[str, dict[str, Any]] = document["systems"]
    floor = (document.get("floor") or {}).get("derived") or {}
    shown = [m for m in METRICS if m.chart]
    columns = 4
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    names = list(systems)
    colors = ["#d62728" if n == "pynenc" else "#7f7f7f" for n in names]
    for ax, metric in zip(axes.flat, shown, strict=False):
        medians, low, high = [], [], []
        for name in names:
            summary = systems[name].get("metrics", {}).get(metric.key)
            if summary is None:
                medians.append(math.nan)  # no bar; the reason is written instead
                low.append(0.0)
                high.append(0.0)
            else:
                medians.append(summary["median"])
                low.append(summary["median"] - summary["min"])
                high.append(summary["max"] - summary["median"])
        positions = range(len(names))
        ax.bar(positions, medians, color=colors, yerr=[low, high], capsize=3)
        for x, name in zip(positions, names, strict=True):
            if systems[name].get("metrics", {}).get(metric.key) is None:
                ax.text(
                    x, 0.03, cell(systems[name], metric.key), rotation=90, ha="center", va="bottom",
                    fontsize=8, transform=ax.get_xaxis_transform(),
                )  # fmt: skip
        if metric.unit in LOG_UNITS and any(v > 0 for v in medians if math.isfinite(v)):
            # Systems differ by orders of magnitude here (and from the floor).
            ax.set_yscale("log")
        if metric.key in floor:
            ax.axhline(floor[metric.key], color="#1f77b4", linestyle="--", linewidth=1, label="redis floor")
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(list(positions), names, rotation=30, fontsize=8)
        arrow = "higher is better" if metric.higher_is_better else "lower is better"
        ax.set_title(f"{metric.label}\n{metric.unit}, {arrow}", fontsize=9)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    meta = document.get("meta", {})
    fig.suptitle(f"pynenc vs peers, 2 worker processes each ({meta.get('mode', '')}, {meta.get('started', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary_markdown(document: dict[str, Any]) -> str:
    """The docs section of a run: when, on what, with which versions, the table."""
    meta = document.get("meta", {})
    machine = meta.get("machine", {})
    sizes = document.get("sizes", {})
    lines = [
        f"Run `{meta.get('command', 'python -m bench run')}` ({meta.get('mode', '?')} mode), "
        f"started {meta.get('started', '?')}, took {meta.get('seconds', '?')} s, "
        f"at commit {meta.get('git_commit', '?')}.",
        "",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('memory', '?')}, "
        f"{machine.get('os', '?')}, Python {machine.get('python', '?')}, "
        f"redis-server {meta.get('redis_version', '?')}.",
        f"- Load average (1, 5, 15 min) before: {meta.get('load_average_before')}, "
        f"after: {meta.get('load_average_after')} (other work shared the machine).",
        f"- Sizes: {sizes.get('repeats')} repeats; enqueue {sizes.get('enqueue_n')} tasks; throughput "
        f"{sizes.get('drain_n')} tasks; latency {sizes.get('latency_n')} calls; fan-out "
        f"{sizes.get('fanout_parents')} x {sizes.get('fanout_children')} (deadline {sizes.get('fanout_timeout')} s); "
        f"idle window {sizes.get('idle_window')} s.",
    ]
    for name, system in document.get("systems", {}).items():
        versions = ", ".join(_main_versions(name, system.get("versions", [])))
        lines.append(f"- {name}: {system.get('worker', '')}; {versions}")
    lines += ["", "Cells: median (min–max) over the repeats.", "", document.get("table", "").rstrip()]
    return "\n".join(lines) + "\n"


def _main_versions(name: str, frozen: list[str]) -> list[str]:
    wanted = {name, "redis", "kombu"}
    return [line for line in frozen if line.split("==")[0].lower() in wanted] or frozen[:3]
