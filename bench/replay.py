"""Benchmark the replay: dqkit with and without tracing, the machine's own limits, and a
faithful per-event implementation of the reference design — all on the same sample, in one run.

    python bench/replay.py [--events 200000] [--runs 3] [--reference-events 20000]

Each measurement runs in a fresh process (peak RSS from getrusage). Figures are medians of
``--runs``; ratios compare figures taken in the same run, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REPLAY = """
import json, shutil, sys
from pathlib import Path
from dqkit.pipeline.run import ReplayConfig, replay
out = Path(sys.argv[2]); shutil.rmtree(out, ignore_errors=True)
r = replay(sys.argv[1], out / "wh.duckdb", out / "tel", profiles=sys.argv[3], config=ReplayConfig(tracing=sys.argv[4] == "on"))
assert r.ledger.unaccounted == 0
print(json.dumps({"events": r.ledger.received, "seconds": r.seconds, "stages": r.stage_seconds, "spans": r.telemetry.spans_written}))
"""

LIMITS = """
import json, sys, time, duckdb
con = duckdb.connect()
t = time.perf_counter()
tbl = con.sql(f"SELECT unnest(events, recursive := true) FROM read_ndjson('{sys.argv[1]}', maximum_object_size=268435456)").to_arrow_table()
parse = time.perf_counter() - t
dst = duckdb.connect(sys.argv[2])
t = time.perf_counter()
dst.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM tbl LIMIT 0"); dst.execute("INSERT INTO t SELECT * FROM tbl")
insert = time.perf_counter() - t
print(json.dumps({"rows": tbl.num_rows, "parse_per_s": tbl.num_rows / parse, "insert_per_s": tbl.num_rows / insert}))
"""

REFERENCE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[5])
from reference import run
from dqkit.pipeline.geoip import default_geoip_dir
print(json.dumps(run(Path(sys.argv[1]), Path(sys.argv[3]), default_geoip_dir(), Path(sys.argv[2]))))
"""


def child(code: str, *args: str) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter; its JSON result and its own peak RSS in MB."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, so its own rusage is ours to read
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode:
            raise SystemExit(err.read())
        return json.loads(out.read().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reference-events", type=int, default=20_000)
    args = ap.parse_args()
    from dqkit.events.generator import SampleSpec, generate

    cache = ROOT / ".cache" / "bench"
    big = generate(cache / f"sample-{args.events}", SampleSpec(events=args.events, users=max(200, args.events // 20), seed=1))
    small = generate(cache / f"sample-{args.reference_events}",
                     SampleSpec(events=args.reference_events, users=max(200, args.reference_events // 20), seed=1))
    work = cache / "work"
    rows = {}
    for label, tracing in (("dqkit, full tracing", "on"), ("dqkit, tracing off", "off")):
        eps, rss = [], 0.0
        for _ in range(args.runs):
            doc, r = child(REPLAY, str(big.events_path), str(work / label.replace(" ", "_")), str(big.profiles_path), tracing)
            eps.append(doc["events"] / doc["seconds"])
            rss = max(rss, r)
        rows[label] = (statistics.median(eps), rss)
    smalls = [child(REPLAY, str(small.events_path), str(work / "small"), str(small.profiles_path), "on")[0] for _ in range(args.runs)]
    small_eps = statistics.median(d["events"] / d["seconds"] for d in smalls)
    ref = [child(REFERENCE, str(small.events_path), str(work / "reference"), str(small.profiles_path), "", str(ROOT / "bench"))[0]
           for _ in range(args.runs)]
    ref_eps = statistics.median(r["events_per_s"] for r in ref)
    limits = [child(LIMITS, str(big.events_path), str(work / "limits.duckdb"))[0] for _ in range(args.runs)]
    parse = statistics.median(x["parse_per_s"] for x in limits)
    insert = statistics.median(x["insert_per_s"] for x in limits)
    full, off = rows["dqkit, full tracing"][0], rows["dqkit, tracing off"][0]
    print(textwrap.dedent(f"""
        | measurement ({args.events:,} events unless noted; medians of {args.runs}) | figure |
        |---|---|
        | dqkit replay, full tracing + OTLP/JSON export | {full:,.0f} events/s, peak RSS {rows['dqkit, full tracing'][1]:,.0f} MB |
        | dqkit replay, tracing off | {off:,.0f} events/s (tracing costs {(off / full - 1) * 100:.1f}%) |
        | reference design, per event ({args.reference_events:,} events) | {ref_eps:,.0f} events/s |
        | dqkit on the same {args.reference_events:,} events | {small_eps:,.0f} events/s ({small_eps / ref_eps:.0f}x the reference) |
        | machine: DuckDB read_ndjson + unnest | {parse:,.0f} events/s |
        | machine: DuckDB insert from Arrow | {insert:,.0f} rows/s |
        | dqkit as a fraction of the slower limit | {full / min(parse, insert):.2f} |
    """).strip())


if __name__ == "__main__":
    main()
