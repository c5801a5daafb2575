"""The benchmark's one command still runs end to end (on tiny samples: figures here mean nothing)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "replay.py"


def _row(out: str, label: str) -> str:
    rows = [line for line in out.splitlines() if line.startswith(f"| {label}")]
    assert rows, f"no row starting {label!r} in:\n{out}"
    return rows[0]


def test_bench_reports_every_measurement_and_the_targets(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--events", "1500", "--runs", "1", "--pairs", "2", "--reference-events", "300",
         "--sustained-events", "1500", "--span-events", "2000", "--cache", str(tmp_path), "--baseline", "HEAD"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    traced = _row(out, "dqkit replay, full tracing + OTLP/JSON export (1,500 events")
    assert int(re.search(r"\| ([\d,]+) events/s", traced).group(1).replace(",", "")) > 0
    assert re.search(r"peak RSS [\d,]+ MB", traced)
    assert "(2 runs, each right after a full-tracing one)" in _row(out, "dqkit replay, tracing off")
    assert re.search(r"[+-]\d+\.\d% \(pairs [+-]\d+\.\d to [+-]\d+\.\d%\)", _row(out, "tracing overhead, wall time"))
    assert re.search(r"\| [\d,]+ events/s \|$", _row(out, "reference design, per event (300 events)"))
    for label in ("machine: Polars read_ndjson", "machine: DuckDB read_ndjson", "machine: DuckDB insert from Arrow"):
        assert re.search(r"\| [\d,]+ (events|rows)/s \|$", _row(out, label))
    # the span export was loaded and reconciled with nothing unexplained (the bench asserts it)
    assert re.search(r"\d+\.\d s, peak RSS", _row(out, "load_spans + reconcile"))
    assert re.search(r"\| \d+\.\d\d \|$", _row(out, "warehouse.insert"))
    assert re.search(r"\| [\d,]+ events/s \(\d+\.\dx the reference\)", _row(out, "sustained: dqkit replay of 1,500 events"))
    # --baseline: the committed code extracted and replayed against this checkout, pair by pair
    vs = [line for line in out.splitlines() if line.startswith("| this checkout / ")]
    assert [m in row for row, m in zip(vs, ("CPU time", "wall time"), strict=True)] == [True, True], out
    assert all(re.search(r"\(2 pairs\) \| \d+\.\d{3} \(pairs \d+\.\d{3} to \d+\.\d{3}\) \|$", row) for row in vs), vs
    assert next(tmp_path.glob("baseline-*/src/dqkit/pipeline/run.py")).is_file()
    # targets: three each for the replay and the sustained samples; the span and memory ones
    # are judged only on 1M spans / 10M events
    targets = out[out.index("| target |"):].splitlines()[2:]
    assert len(targets) == 6 and all(t.endswith(("| met |", "| **missed** |")) for t in targets)
    assert all("250,000 events/s" in targets[i] and "1,500 events" in targets[i] for i in (0, 3))
    assert (tmp_path / "sample-1500" / "events.ndjson.gz").is_file()


def _bench_module():
    spec = importlib.util.spec_from_file_location("dqkit_bench_replay", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_targets_are_judged_against_their_thresholds():
    bench = _bench_module()
    met = bench._replay_targets(200_000, eps=260_000, ref=2_000, tracing_pct=4.9)
    assert [m for _, _, m in met] == [True, True, True]
    assert [v for _, v, _ in met] == ["260,000", "130x", "+4.9%"]
    missed = bench._replay_targets(200_000, eps=49_375, ref=500, tracing_pct=5.1)
    assert [m for _, _, m in missed] == [False, False, False]
    assert bench._verdict(False) == "**missed**" and bench._verdict(True) == "met"
