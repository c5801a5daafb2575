"""Benchmark: load a span export and reconcile it against the warehouse; time and peak memory.

    python bench/investigate.py [--events 1000000] [--runs 3]

Generates a sample (cached under .cache/bench), replays it once, then runs ``load_spans`` +
``reconcile`` in a fresh process per run and reports wall time and peak RSS (medians).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from dqkit.investigate.reconcile import reconcile
t = time.perf_counter()
r = reconcile(sys.argv[1], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "unexplained": r.totals["unexplained"],
                  "received": r.totals["received"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from dqkit.events.generator import SampleSpec, generate
    from dqkit.pipeline.run import replay

    work = ROOT / ".cache" / "bench" / f"investigate-{args.events}"
    wh, tel = work / "wh.duckdb", work / "tel"
    if not wh.exists():
        s = generate(work / "sample", SampleSpec(events=args.events, users=max(100, args.events // 20), seed=1))
        replay(s.events_path, wh, tel, profiles=s.profiles_path)
    n_spans = sum(line.count('"parentSpanId"') for line in open(tel / "traces.jsonl"))
    secs, rss = [], []
    for _ in range(args.runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = subprocess.run([sys.executable, "-c", CHILD, str(wh), str(tel)], capture_output=True, text=True, check=True)
        doc = json.loads(out.stdout)
        secs.append(doc["seconds"])
        rss.append(max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024)
        assert doc["unexplained"] == 0
    print("| export | runs | load + reconcile (median s) | peak RSS (max MB) |")
    print("|---|---|---|---|")
    print(f"| {args.events:,} events, {n_spans:,} spans | {args.runs} | {statistics.median(secs):.1f} | {max(rss):,.0f} |")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"(total {time.perf_counter() - t0:.0f}s)", file=sys.stderr)
