"""Benchmark the replay, in one run on one generated sample: dqkit with full tracing and with
tracing off, a faithful per-event implementation of the reference design, the machine's own
limits for the same data, and load_spans + reconcile on a ~1M-span export.

    python bench/replay.py [--events 200000] [--runs 3] [--pairs 7] [--reference-events 20000]
                           [--sustained-events 1000000] [--span-events 1000000] [--memory-events 0]
                           [--baseline REV]

Each measurement runs in a fresh process, which reports its own peak RSS. Figures are medians
of ``--runs``; ratios compare figures taken in the same run, because these machines are noisy.
Tracing's cost, a few percent, is smaller than that noise, so it is measured over ``--pairs``
back-to-back traced/untraced replays and reported as the median of the pairs' ratios.
Replay times cover the whole ``replay()`` call (opening the warehouse and reference data,
every chunk, the final commit and checkpoint), not interpreter start-up. On a 200k-event
sample (three chunks) those fixed costs weigh; ``--sustained-events`` replays a larger sample
in ``--pairs`` traced/untraced pairs too, for the rate a long replay keeps up.
``--memory-events`` adds one replay of a sample that size, for its peak RSS.
``--baseline REV`` (a git revision, e.g. ``HEAD~1``) checks that a change costs nothing: it
alternates ``--pairs`` traced replays of the ``--events`` sample by REV's code (its ``src`` and
``data``, extracted with ``git archive``) and by this checkout's, and gives the pairs' median
ratio of CPU and wall time, with their range.

The output ends with the targets (bench/README.md, "Targets") and whether this run met each; the
memory target is judged only with ``--memory-events 10000000`` or more, the span target only
on an export of 1M spans or more.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REPLAY = """
import json, shutil, sys, time
from pathlib import Path
try:
    from dqkit.allocator import keep_freed_memory
    assert keep_freed_memory()  # before Polars loads, as the dqkit command does
except ImportError:  # a --baseline older than dqkit.allocator: importing dqkit set the allocator
    import dqkit
from dqkit.pipeline.run import ReplayConfig, replay
out = Path(sys.argv[2]); shutil.rmtree(out, ignore_errors=True)
t = time.perf_counter()
r = replay(sys.argv[1], out / "wh.duckdb", out / "tel", profiles=sys.argv[3], config=ReplayConfig(tracing=sys.argv[4] == "on"))
wall = time.perf_counter() - t
assert r.ledger.unaccounted == 0
print(json.dumps({"events": r.ledger.received, "seconds": wall, "stages": r.stage_seconds, "spans": r.telemetry.spans_written}))
"""

LIMITS = """
import gzip, json, sys, time, duckdb, polars as pl
text = gzip.open(sys.argv[1]).read()
t = time.perf_counter()
events = pl.read_ndjson(text).select("events").explode("events").unnest("events")
polars_parse = time.perf_counter() - t
con = duckdb.connect()
t = time.perf_counter()
tbl = con.sql(f"SELECT unnest(events, recursive := true) FROM read_ndjson('{sys.argv[1]}', maximum_object_size=268435456)").to_arrow_table()
duck_parse = time.perf_counter() - t
dst = duckdb.connect(sys.argv[2])
t = time.perf_counter()
dst.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM tbl LIMIT 0"); dst.execute("INSERT INTO t SELECT * FROM tbl"); dst.execute("CHECKPOINT")
insert = time.perf_counter() - t
n = tbl.num_rows
assert events.height == n
print(json.dumps({"rows": n, "polars_parse_per_s": n / polars_parse, "duckdb_parse_per_s": n / duck_parse, "insert_per_s": n / insert}))
"""

SPANS = """
import json, sys, time
from dqkit.investigate.reconcile import reconcile
t = time.perf_counter()
r = reconcile(sys.argv[1], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "unexplained": r.totals["unexplained"]}))
"""

REFERENCE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[5])
from reference import run
from dqkit.paths import geoip_dir
print(json.dumps(run(Path(sys.argv[1]), Path(sys.argv[3]), geoip_dir(), Path(sys.argv[2]))))
"""


# The child's own peak RSS. Not ru_maxrss: Linux carries the parent's high-water mark across
# fork and exec, so after this script generated a large sample every child seemed as large.
_PEAK_RSS = """
print(json.dumps({"peak_rss_kb": int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))}))
"""


def child(code: str, *args: str, src: Path | None = None) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter (importing dqkit from ``src`` when given, else this
    checkout's); its JSON result (with ``cpu_seconds`` added: user + system time of the whole
    process) and its own peak RSS in MB."""
    env = None if src is None else {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code + _PEAK_RSS, *args], stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, so its own rusage is ours to read
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode:
            raise SystemExit(err.read())
        *_, result, peak = out.read().strip().splitlines()
        return {**json.loads(result), "cpu_seconds": usage.ru_utime + usage.ru_stime}, json.loads(peak)["peak_rss_kb"] / 1024


def _sample(cache: Path, events: int):
    from dqkit.events.generator import SampleSpec, generate

    return generate(cache / f"sample-{events}", SampleSpec(events=events, users=max(200, events // 20), seed=1))


def _replays(sample, work: Path, modes: list[str], runs: int) -> dict[str, list[tuple[dict, float]]]:
    """Per tracing mode, ``runs`` replays (result, peak RSS in MB). Modes alternate run by run,
    so each traced run has an untraced twin taken moments apart."""
    docs: dict[str, list] = {m: [] for m in modes}
    for _ in range(runs):
        for m in modes:
            docs[m].append(child(REPLAY, str(sample.events_path), str(work / m), str(sample.profiles_path), m))
    return docs


def _baseline_src(rev: str, cache: Path) -> tuple[str, Path]:
    """REV's short commit id and its ``src`` folder, extracted (once) under ``cache``."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", f"{rev}^{{commit}}"], capture_output=True,
                         text=True)
    if sha.returncode:
        raise SystemExit(f"--baseline {rev!r}: not a commit of this repository ({sha.stderr.strip()})")
    commit = sha.stdout.strip()
    dest = cache / f"baseline-{commit}"
    if not (dest / "src" / "dqkit").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src", "data"], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(dest, filter="data")
    return commit, dest / "src"


def _against_baseline(sample, work: Path, src: Path, pairs: int) -> dict[str, tuple[float, float, float]]:
    """This checkout's traced replay over the baseline's, alternating ``pairs`` times: per
    measure (``cpu_seconds``, ``seconds``), the median ratio of the pairs and its range. Both
    must account for every event and write the same number of spans."""
    now, before = [], []
    for _ in range(pairs):
        before.append(child(REPLAY, str(sample.events_path), str(work / "baseline"), str(sample.profiles_path), "on", src=src)[0])
        now.append(child(REPLAY, str(sample.events_path), str(work / "current"), str(sample.profiles_path), "on")[0])
    if {d["spans"] for d in now} != {d["spans"] for d in before}:
        print(f"note: the baseline wrote {before[0]['spans']:,} spans, this checkout {now[0]['spans']:,}", file=sys.stderr)
    out = {}
    for key in ("cpu_seconds", "seconds"):
        r = sorted(a[key] / b[key] for a, b in zip(now, before, strict=True))
        out[key] = (statistics.median(r), r[0], r[-1])
    return out


def _summary(runs: list[tuple[dict, float]]) -> tuple[float, float, dict, int, float]:
    """Median events/s, max peak RSS (MB), median seconds per stage, spans, median CPU seconds."""
    ds = [d for d, _ in runs]
    stages = {k: statistics.median(d["stages"][k] for d in ds) for k in ds[0]["stages"]}
    return (statistics.median(d["events"] / d["seconds"] for d in ds), max(r for _, r in runs), stages,
            ds[0]["spans"], statistics.median(d["cpu_seconds"] for d in ds))


def _overhead(on: list[tuple[dict, float]], off: list[tuple[dict, float]], key: str) -> tuple[float, float, float]:
    """Tracing's cost in percent as the median over pairs of (traced / untraced - 1), with the
    lowest and highest pair: one pair alone says little on a noisy machine."""
    ratios = sorted((a[key] / b[key] - 1) * 100 for (a, _), (b, _) in zip(on, off, strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]


def _pct(overhead: tuple[float, float, float]) -> str:
    return "{:+.1f}% (pairs {:+.1f} to {:+.1f}%)".format(*overhead)


# The targets of the benchmark, on a 2-core machine (bench/README.md, "Targets").
TARGET_EVENTS_PER_S = 250_000
TARGET_RATIO = 100
TARGET_TRACING_PCT = 5.0
TARGET_PEAK_RSS_MB = 2048
TARGET_MEMORY_EVENTS = 10_000_000
TARGET_SPAN_SECONDS = 10.0
TARGET_SPANS = 1_000_000


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _replay_targets(events: int, eps: float, ref: float, tracing_pct: float) -> list[tuple[str, str, bool]]:
    """The targets judged on a traced replay of ``events`` events: rate, ratio, tracing's cost."""
    n = f"({events:,} events)"
    return [
        (f"≥{TARGET_EVENTS_PER_S:,} events/s, full tracing {n}", f"{eps:,.0f}", eps >= TARGET_EVENTS_PER_S),
        (f"≥{TARGET_RATIO}x the reference design {n}", f"{eps / ref:.0f}x", eps / ref >= TARGET_RATIO),
        (f"tracing ≤{TARGET_TRACING_PCT:.0f}% of the wall time {n}", f"{tracing_pct:+.1f}%", tracing_pct <= TARGET_TRACING_PCT),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="sample size for the replay measurements")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (medians are reported)")
    ap.add_argument("--pairs", type=int, default=7, help="traced/untraced replay pairs for the tracing overhead")
    ap.add_argument("--reference-events", type=int, default=20_000, help="sample size for the per-event reference design")
    ap.add_argument("--sustained-events", type=int, default=1_000_000,
                    help="sample size for the sustained rate, in traced/untraced pairs (0: skip)")
    ap.add_argument("--span-events", type=int, default=1_000_000, help="events replayed for the span export (0: skip)")
    ap.add_argument("--memory-events", type=int, default=0, help="also replay a sample this large once, for peak RSS")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench",
                    help="folder for the generated samples and the runs' output (kept between runs)")
    ap.add_argument("--baseline", metavar="REV",
                    help="also compare traced replays with this git revision's code, in --pairs alternating pairs")
    args = ap.parse_args()

    work = args.cache / "work"
    big, small = _sample(args.cache, args.events), _sample(args.cache, args.reference_events)
    pairs = _replays(big, work, ["on", "off"], args.pairs)
    (full, full_rss, stages, spans, full_cpu), (off, off_rss, _, _, off_cpu) = _summary(pairs["on"]), _summary(pairs["off"])
    small_eps = _summary(_replays(small, work / "small", ["on"], args.runs)["on"])[0]
    ref = statistics.median(
        child(REFERENCE, str(small.events_path), str(work / "reference"), str(small.profiles_path), "", str(ROOT / "bench"))[0]["events_per_s"]
        for _ in range(args.runs))
    limits = [child(LIMITS, str(big.events_path), str(work / "limits.duckdb"))[0] for _ in range(args.runs)]
    lim = {k: statistics.median(x[k] for x in limits) for k in ("polars_parse_per_s", "duckdb_parse_per_s", "insert_per_s")}
    slower = min(lim["polars_parse_per_s"], lim["insert_per_s"])

    rows = [
        (f"dqkit replay, full tracing + OTLP/JSON export ({args.events:,} events, {spans:,} spans)",
         f"{full:,.0f} events/s ({full / ref:.1f}x the reference), peak RSS {full_rss:,.0f} MB"),
        (f"dqkit replay, tracing off ({args.pairs} runs, each right after a full-tracing one)",
         f"{off:,.0f} events/s, peak RSS {off_rss:,.0f} MB; CPU {full_cpu:.1f} s with tracing, {off_cpu:.1f} s without"),
        ("tracing overhead, wall time", _pct(wall := _overhead(pairs["on"], pairs["off"], "seconds"))),
        ("tracing overhead, CPU time", _pct(_overhead(pairs["on"], pairs["off"], "cpu_seconds"))),
        (f"reference design, per event ({args.reference_events:,} events)", f"{ref:,.0f} events/s"),
        (f"dqkit on the same {args.reference_events:,} events", f"{small_eps:,.0f} events/s ({small_eps / ref:.0f}x the reference)"),
        ("machine: Polars read_ndjson + explode", f"{lim['polars_parse_per_s']:,.0f} events/s"),
        ("machine: DuckDB read_ndjson + unnest", f"{lim['duckdb_parse_per_s']:,.0f} events/s"),
        ("machine: DuckDB insert from Arrow (+ checkpoint)", f"{lim['insert_per_s']:,.0f} rows/s"),
        ("dqkit as a fraction of the slower of Polars parse and DuckDB insert", f"{full / slower:.2f}"),
    ]
    targets = _replay_targets(args.events, full, ref, wall[0])
    if args.baseline:
        commit, src = _baseline_src(args.baseline, args.cache)
        vs = _against_baseline(big, work / "vs", src, args.pairs)
        rows += [(f"this checkout / {commit} ({args.baseline}), {name}, full tracing ({args.pairs} pairs)",
                  "{:.3f} (pairs {:.3f} to {:.3f})".format(*vs[key])) for key, name in (("cpu_seconds", "CPU time"),
                                                                                    ("seconds", "wall time"))]
    if args.sustained_events:
        long = _replays(_sample(args.cache, args.sustained_events), work / "sustained", ["on", "off"], args.pairs)
        (l_on, l_rss, _, l_spans, l_cpu), (l_off, _, _, _, l_off_cpu) = _summary(long["on"]), _summary(long["off"])
        rows += [
            (f"sustained: dqkit replay of {args.sustained_events:,} events, full tracing ({l_spans:,} spans)",
             f"{l_on:,.0f} events/s ({l_on / ref:.1f}x the reference), peak RSS {l_rss:,.0f} MB"),
            ("sustained: tracing off", f"{l_off:,.0f} events/s; CPU {l_cpu:.1f} s with tracing, {l_off_cpu:.1f} s without"),
            ("sustained: tracing overhead, wall time", _pct(l_wall := _overhead(long["on"], long["off"], "seconds"))),
            ("sustained: tracing overhead, CPU time", _pct(_overhead(long["on"], long["off"], "cpu_seconds"))),
        ]
        targets += _replay_targets(args.sustained_events, l_on, ref, l_wall[0])
    if args.span_events:
        exp = work / f"spans-{args.span_events}"
        if not (exp / "wh.duckdb").exists():
            s = _sample(args.cache, args.span_events)
            child(REPLAY, str(s.events_path), str(exp), str(s.profiles_path), "on")
        with open(exp / "tel" / "traces.jsonl") as fh:
            n_spans = sum(line.count('"startTimeUnixNano"') for line in fh)
        res = [child(SPANS, str(exp / "wh.duckdb"), str(exp / "tel")) for _ in range(args.runs)]
        assert all(d["unexplained"] == 0 for d, _ in res)
        span_s = statistics.median(d["seconds"] for d, _ in res)
        rows.append((f"load_spans + reconcile, {n_spans:,} spans", f"{span_s:.1f} s, peak RSS {max(r for _, r in res):,.0f} MB"))
        if n_spans >= TARGET_SPANS:
            targets.append((f"load_spans + reconcile of {n_spans:,} spans in ≤{TARGET_SPAN_SECONDS:.0f} s", f"{span_s:.1f} s",
                            span_s <= TARGET_SPAN_SECONDS))
    if args.memory_events:
        eps, rss, _, _, _ = _summary(_replays(_sample(args.cache, args.memory_events), work / "memory", ["on"], 1)["on"])
        rows.append((f"dqkit replay of {args.memory_events:,} events (one run)", f"{eps:,.0f} events/s, peak RSS {rss:,.0f} MB"))
        if args.memory_events >= TARGET_MEMORY_EVENTS:
            targets.append((f"replay of {args.memory_events:,} events within {TARGET_PEAK_RSS_MB:,} MB peak RSS", f"{rss:,.0f} MB",
                            rss <= TARGET_PEAK_RSS_MB))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; medians of {args.runs}\n")
    print("| measurement | figure |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print("\n| stage (full tracing, median seconds) | s |\n|---|---|")
    for k, v in stages.items():
        print(f"| {k} | {v:.2f} |")
    print("\n| target | figure | |\n|---|---|---|")
    for k, v, met in targets:
        print(f"| {k} | {v} | {_verdict(met)} |")


if __name__ == "__main__":
    main()
