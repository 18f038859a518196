"""Report of the benchmark harness: table, ratios, JSON shape, PNG; floor parsing; options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import floor, report, stats
from bench.registry import PEER_NAMES, BenchError, select
from bench.scenarios import FULL, QUICK, sizes_for

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def summary(*values: float) -> dict[str, Any]:
    return dict(stats.summarize(list(values)).as_dict())


def sample_systems() -> dict[str, dict[str, Any]]:
    return {
        "pynenc": {
            "metrics": {
                "throughput_per_s": summary(3000, 2800, 3100),
                "latency_p50_ms": summary(1.0, 1.2, 0.9),
                "fanout_parents_per_s": summary(500, 450, 520),
                "idle_cpu_percent": summary(0.5, 0.4, 0.6),
            },
            "notes": {},
        },
        "celery": {
            "metrics": {
                "throughput_per_s": summary(600, 500, 650),
                "latency_p50_ms": summary(4.0, 4.5, 3.9),
                "idle_cpu_percent": summary(0.0, 0.0, 0.0),
            },
            "notes": {"fanout_parents_per_s": "failed: 200/200 parents failed with RuntimeError: Never call get"},
        },
        "huey": {
            "metrics": {
                "throughput_per_s": summary(1500, 1400, 1600),
                "latency_p50_ms": summary(2.0, 2.1, 1.9),
            },
            "notes": {
                "fanout_parents_per_s": "deadlock: 0/200 parents and 10/1000 children done after 60s",
                "enqueue_batch_per_s": "unsupported: no bulk enqueue API",
            },
        },
    }


def test_ratios_are_pynenc_over_peer_and_none_without_both_numbers() -> None:
    ratios = report.ratios(sample_systems())
    assert set(ratios) == {"celery", "huey"}
    assert ratios["celery"]["throughput_per_s"] == pytest.approx(3000 / 600)
    assert ratios["huey"]["latency_p50_ms"] == pytest.approx(1.0 / 2.0)
    assert ratios["celery"]["fanout_parents_per_s"] is None  # celery has no number
    assert ratios["celery"]["idle_cpu_percent"] is None  # division by a zero median
    assert ratios["huey"]["enqueue_single_per_s"] is None  # nobody measured it


def test_ratios_without_pynenc_are_empty() -> None:
    systems = sample_systems()
    del systems["pynenc"]
    assert report.ratios(systems) == {}


def test_best_peer_follows_the_direction_of_the_metric() -> None:
    systems = sample_systems()
    assert report.best_peer(systems, report.METRIC_BY_KEY["throughput_per_s"]) == ("huey", 1500.0)
    assert report.best_peer(systems, report.METRIC_BY_KEY["latency_p50_ms"]) == ("huey", 2.0)
    assert report.best_peer(systems, report.METRIC_BY_KEY["fanout_parents_per_s"]) is None


def test_table_has_a_column_per_system_values_notes_and_ratios() -> None:
    text = report.table(sample_systems(), {"throughput_per_s": 5000.0, "latency_p50_ms": 0.3})
    lines = text.splitlines()
    assert lines[0] == "| metric | better | pynenc | celery | huey | redis floor |"
    throughput = next(line for line in lines if line.startswith("| end-to-end throughput"))
    assert "| 3,000 (2,800–3,100) | 600 (500–650) | 1,500 (1,400–1,600) | 5,000 |" in throughput
    fanout = next(line for line in lines if line.startswith("| fan-out/fan-in"))
    assert "| failed | deadlock |" in fanout
    batch = next(line for line in lines if line.startswith("| enqueue, batch API"))
    assert "| unsupported |" in batch
    assert "| pynenc / peer | better | celery | huey | best peer |" in lines
    ratio_row = next(line for line in lines if line.startswith("| end-to-end throughput |"))
    assert "| 5.00x | 2.00x | 2.00x vs huey |" in ratio_row
    assert any(line.startswith("- huey, fan-out/fan-in parents: deadlock: 0/200") for line in lines)


def test_table_without_floor_or_pynenc_has_no_such_columns() -> None:
    systems = sample_systems()
    del systems["pynenc"]
    text = report.table(systems, None)
    assert "redis floor" not in text
    assert "pynenc / peer" not in text


@pytest.mark.parametrize(
    ("value", "shown"),
    [(123456.7, "123,457"), (45.67, "45.7"), (4.567, "4.57"), (0.04567, "0.046"), (0.0, "0.000")],
)
def test_numbers_are_shown_with_three_significant_figures(value: float, shown: str) -> None:
    assert report.fmt_number(value) == shown


def test_written_report_has_json_of_the_documented_shape_a_table_and_a_png(tmp_path: Path) -> None:
    meta = {"started": "2026-01-01T00:00:00+00:00", "mode": "quick"}
    floor_doc = {"requests": 10, "raw": {}, "derived": {"throughput_per_s": 5000.0}}
    document = report.build(meta, QUICK.as_dict(), sample_systems(), floor_doc)
    paths = report.write(document, tmp_path / "out")

    loaded = json.loads(paths["json"].read_text())
    assert set(loaded) == {"schema", "meta", "sizes", "metrics", "floor", "systems", "ratios", "targets", "table"}
    assert loaded["schema"] == report.SCHEMA_VERSION
    assert loaded["sizes"]["repeats"] == 3
    assert set(loaded["metrics"]) == {m.key for m in report.METRICS}
    assert loaded["systems"]["pynenc"]["metrics"]["throughput_per_s"]["median"] == 3000
    assert loaded["ratios"]["huey"]["throughput_per_s"] == pytest.approx(2.0)
    assert paths["table"].read_text() == loaded["table"]

    png = paths["chart"].read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 10_000  # a real picture with 8 panels, not an empty canvas


def test_floor_parses_redis_benchmark_csv_and_derives_the_task_floors() -> None:
    columns = ["test", "rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms", "p95_latency_ms"]
    header = ",".join(f'"{c}"' for c in [*columns, "p99_latency_ms", "max_latency_ms"]) + "\n"

    def csv_for(rps: float, p50: float) -> str:
        names = ["LPUSH", "RPOP", "SET", "GET", "EVAL return 1 0"]
        return header + "".join(f'"{n}","{rps}","0.1","0.02","{p50}","0.2","0.3","5"\n' for n in names)

    rows = floor.parse_csv(csv_for(9000, 0.05))
    assert set(rows) == {"LPUSH", "RPOP", "SET", "GET", "EVAL"}
    assert rows["LPUSH"] == {"rps": 9000.0, "p50_ms": 0.05, "p99_ms": 0.3}
    raw = {
        "c1": floor.parse_csv(csv_for(10000, 0.05)),
        "c2": floor.parse_csv(csv_for(18000, 0.06)),
        "c1p16": floor.parse_csv(csv_for(200000, 0.1)),
    }
    derived = floor.derive(raw)
    assert derived["enqueue_single_per_s"] == 10000.0
    assert derived["enqueue_batch_per_s"] == 200000.0
    assert derived["throughput_per_s"] == pytest.approx(6000.0)  # 18000 ops/s, 3 per task
    assert derived["latency_p50_ms"] == pytest.approx(0.2)  # 4 round trips of 0.05 ms
    with pytest.raises(BenchError, match="lacks"):
        floor.derive({"c1": {}, "c2": {}, "c1p16": {}})


def test_peer_selection_and_sizes_reject_bad_options() -> None:
    assert [s.name for s in select(None)] == ["pynenc", *PEER_NAMES]
    assert [s.name for s in select("rq, Celery,rq")] == ["pynenc", "rq", "celery"]
    assert [s.name for s in select("pynenc")] == ["pynenc"]
    assert [s.name for s in select("arq", include_pynenc=False)] == ["arq"]
    with pytest.raises(BenchError, match="unknown system.*bogus"):
        select("rq,bogus")
    assert sizes_for(False) == FULL
    tiny = sizes_for(True, count=7, repeats=4)
    assert (tiny.drain_n, tiny.enqueue_n, tiny.latency_n, tiny.repeats) == (7, 7, 7, 4)
    with pytest.raises(BenchError, match="--count"):
        sizes_for(True, count=1)
    with pytest.raises(BenchError, match="--repeats"):
        sizes_for(True, repeats=0)
    assert sizes_for(True, fanout_timeout=42.0).fanout_timeout == 42.0
    with pytest.raises(BenchError, match="--fanout-timeout"):
        sizes_for(True, fanout_timeout=0.0)


def test_publish_replaces_only_the_marked_section_with_the_run(tmp_path: Path) -> None:
    from bench.__main__ import END, START, publish

    meta = {"started": "2026-01-01T00:00:00+00:00", "mode": "quick", "command": "python -m bench run --quick"}
    document = report.build(meta, QUICK.as_dict(), sample_systems(), None)
    results = tmp_path / "run"
    report.write(document, results)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\nintro\n\n{START}\nold numbers\n{END}\n\nafter\n")

    assert publish(results, doc, tmp_path / "chart.png") == 0

    text = doc.read_text()
    assert text.startswith("# Title\n\nintro\n\n")
    assert text.endswith(f"{END}\n\nafter\n")
    assert "old numbers" not in text
    assert document["table"].rstrip() in text
    assert "python -m bench run --quick" in text and "![chart](chart.png)" in text
    assert (tmp_path / "chart.png").read_bytes().startswith(PNG_MAGIC)


def test_publish_refuses_a_folder_without_results_or_a_doc_without_markers(tmp_path: Path) -> None:
    from bench.__main__ import publish

    with pytest.raises(BenchError, match="no readable results.json"):
        publish(tmp_path, tmp_path / "doc.md", tmp_path / "chart.png")
    report.write(report.build({}, QUICK.as_dict(), sample_systems(), None), tmp_path)
    (tmp_path / "doc.md").write_text("no markers here\n")
    with pytest.raises(BenchError, match="lacks the markers"):
        publish(tmp_path, tmp_path / "doc.md", tmp_path / "chart.png")


def test_a_system_that_could_not_be_set_up_shows_error_in_every_row() -> None:
    from bench.__main__ import not_measured
    from bench.registry import SYSTEMS

    systems = sample_systems()
    systems["rq"] = not_measured(SYSTEMS["rq"], "error: setup failed: could not install rq")
    lines = report.table(systems, None).splitlines()
    rows = [line for line in lines[2 : 2 + len(report.METRICS)]]
    assert all(row.split(" | ")[-1] == "error |" for row in rows)
    assert report.ratios(systems)["rq"] == {m.key: None for m in report.METRICS}
    assert "- rq, end-to-end throughput: error: setup failed: could not install rq" in lines


def test_targets_are_judged_against_the_best_peer_of_the_run() -> None:
    from bench import targets

    systems = sample_systems()
    systems["pynenc"]["metrics"]["pss_per_worker_mb"] = summary(20, 20, 20)
    systems["huey"]["metrics"]["pss_per_worker_mb"] = summary(18, 18, 18)
    found = {
        v.target.split(" ")[0] + " " + v.target.split(" ")[1]: v
        for v in targets.verdicts(systems, {"fanout_children": 5})
    }
    throughput = found["throughput with"]
    assert throughput.met is False  # 3000 / 1500 (huey, the fastest peer) = 2x, not 3x
    assert "2.00x huey" in throughput.measured
    assert found["round trip"].met is True  # 1.0 / 2.0 (huey, the best peer) = 0.5x
    assert found["fan-out/fan-in completes"].met is True  # 500 * 6 = 3000 >= 3000 / 2
    assert found["idle pool"].met is True
    assert found["worker PSS"].met is False  # 20 MiB against huey's 18
    assert found["single enqueue"].met is None and found["single enqueue"].measured == "–"  # nobody measured it
    text = targets.markdown(list(found.values()))
    assert "| round trip p50 at most half the best peer's | 1.00 ms = 0.50x huey (2.00 ms) | yes |" in text
    assert "| single enqueue at least the fastest peer's | – | – |" in text


def test_the_report_of_a_run_with_pynenc_carries_the_targets() -> None:
    document = report.build({}, {"fanout_children": 5}, sample_systems(), None)
    assert [t["met"] for t in document["targets"]][:2] == [False, True]
    assert "Targets (pynenc against the best peer of this run)" in document["table"]
    assert report.build({}, {}, {"huey": sample_systems()["huey"]}, None)["targets"] == []


def test_a_quick_run_says_its_targets_are_no_verdict() -> None:
    # Quick sizes (a 0.5 s idle window, 10 round trips) cannot judge a target.
    quick = report.build({"mode": "quick"}, {"fanout_children": 5}, sample_systems(), None)["table"]
    assert "quick mode: sizes too small for a verdict" in quick
    full = report.build({"mode": "full"}, {"fanout_children": 5}, sample_systems(), None)["table"]
    assert "quick mode" not in full
