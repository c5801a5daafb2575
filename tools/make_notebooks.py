"""Build the notebooks in notebooks/ from the cell lists below, then execute them in place.

    python tools/make_notebooks.py

Notebooks stay thin: narrative, a papermill ``parameters`` cell of literals, and one dqkit call
per cell. Cells whose output changes from run to run (charts, times) carry ``# NBVAL_IGNORE_OUTPUT``;
each notebook ends with a canonical, sorted summary that nbval compares strictly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
IGNORE = "# NBVAL_IGNORE_OUTPUT\n"


def params(src: str):
    c = new_code_cell(src)
    c.metadata["tags"] = ["parameters"]
    return c


NOTEBOOKS = {
    "01_replay_sample.ipynb": [
        new_markdown_cell("# Replay an event sample\n\nGenerate (or pick) a sample, optionally inject pipeline faults, "
                          "replay it through the traced pipeline into DuckDB, and see where every event went."),
        params('sample = ""  # an NDJSON(.gz)/Parquet sample; empty: generate one\n'
               'profiles = ""\nout_dir = "../.cache/notebooks/01"\nevents = 20000\nusers = 1500\nseed = 7\n'
               'faults = ["insert_failure:table=events_like,start=2026-11-20T12:00:00Z,duration=4h"]'),
        new_code_cell("from pathlib import Path\nimport shutil\n\nimport dqkit\nfrom dqkit.events.generator import SampleSpec, generate\n"
                      "from dqkit.investigate import charts, ledger\nfrom dqkit.pipeline.faults import parse_fault\n"
                      "from dqkit.pipeline.run import ReplayConfig"),
        new_code_cell("out = Path(out_dir)\nshutil.rmtree(out, ignore_errors=True)\n"
                      "if not sample:\n    made = generate(out / \"sample\", SampleSpec(events=events, users=users, seed=seed))\n"
                      "    sample, profiles = str(made.events_path), str(made.profiles_path)"),
        new_markdown_cell("## Replay"),
        new_code_cell(IGNORE + "result = dqkit.replay(sample, out / \"warehouse.duckdb\", out / \"telemetry\", profiles=profiles or None,\n"
                      "                      config=ReplayConfig(faults=tuple(parse_fault(f) for f in faults)))\n"
                      "print(f\"{result.ledger.received:,} events in {result.deliveries:,} batches, {result.seconds:.1f}s\")"),
        new_code_cell("lg = result.ledger\nprint(f\"Of {lg.received:,} events, {lg.loaded:,} loaded, {lg.invalid:,} were invalid, \"\n"
                      "      f\"{lg.duplicate:,} duplicates and {lg.dead_lettered:,} dead-lettered; {lg.unaccounted} unaccounted.\")\n"
                      "for f in result.faults:\n    print(f\"Fault {f['name']} hit {f['events']:,} events of {f['users']:,} users.\")"),
        new_markdown_cell("## The ledger by hour and platform, from the spans alone"),
        new_code_cell(IGNORE + "spans = dqkit.load_spans(out / \"telemetry\")\n"
                      "ledger.rollup(ledger.batch_ledger(spans), by=[\"platform\"]).head(12)"),
        new_code_cell(IGNORE + "charts.png(charts.drop_rate_by_stage(dqkit.reconcile(out / \"warehouse.duckdb\", spans)))"),
        new_markdown_cell("## Summary"),
        new_code_cell("summary = {\"received\": lg.received, \"loaded\": lg.loaded, \"invalid\": lg.invalid, \"duplicate\": lg.duplicate,\n"
                      "           \"dead_lettered\": lg.dead_lettered, \"in_flight\": lg.in_flight, \"unaccounted\": lg.unaccounted}\n"
                      "for k in sorted(summary):\n    print(f\"{k:<14}{summary[k]:>10}\")"),
    ],
    "02_spans_vs_warehouse.ipynb": [
        new_markdown_cell("# Spans vs warehouse\n\nLoad a span export and a warehouse, reconcile them, and chart where events "
                          "were dropped or delayed — by stage, hour and segment."),
        params('warehouse = ""  # a DuckDB warehouse; empty: build a demo with an injected silent loss\n'
               'spans = ""\nout_dir = "../.cache/notebooks/02"\nseed = 11'),
        new_code_cell("from pathlib import Path\nimport shutil\n\nimport duckdb\nimport dqkit\n"
                      "from dqkit.events.generator import SampleSpec, generate\nfrom dqkit.investigate import charts, lag"),
        new_code_cell("if not warehouse:\n    out = Path(out_dir)\n    shutil.rmtree(out, ignore_errors=True)\n"
                      "    s = generate(out / \"sample\", SampleSpec(events=20000, users=1500, seed=seed))\n"
                      "    dqkit.replay(s.events_path, out / \"warehouse.duckdb\", out / \"telemetry\", profiles=s.profiles_path)\n"
                      "    warehouse, spans = str(out / \"warehouse.duckdb\"), str(out / \"telemetry\")\n"
                      "    dqkit.explain  # the demo then loses rows behind the pipeline's back:\n"
                      "    con = duckdb.connect(warehouse)\n"
                      "    con.execute(\"DELETE FROM events_view WHERE platform = 'android' AND hour(loaded_at) BETWEEN 14 AND 16\")\n"
                      "    con.close()"),
        new_markdown_cell("## Reconcile"),
        new_code_cell("rec = dqkit.reconcile(warehouse, spans)\nt = rec.totals\n"
                      "print(f\"The spans account for {t['received']:,} events; the warehouse holds {t['warehouse_rows']:,} rows.\")\n"
                      "for f in rec.findings():\n"
                      "    print(f\"{f['class'].replace('_', ' ')}: {f['events']:,} events in {f['batches']:,} batches \"\n"
                      "          f\"({', '.join(f['tables']) or 'all tables'}), mostly {f['segments'][0]['platform']}.\")"),
        new_code_cell(IGNORE + "charts.png(charts.funnel(rec))"),
        new_code_cell(IGNORE + "charts.png(charts.warehouse_vs_spans(rec))"),
        new_code_cell(IGNORE + "charts.png(charts.segment_stage_heatmap(rec, \"platform\"))"),
        new_markdown_cell("## Delays"),
        new_code_cell(IGNORE + "charts.png(charts.lag_percentiles(lag.event_lag(warehouse)))"),
        new_markdown_cell("## Summary"),
        new_code_cell("for k in sorted(t):\n    print(f\"{k:<16}{t[k]:>10}\")\nprint(\"findings:\", sorted(f['class'] for f in rec.findings()))"),
    ],
    "03_dau_drop_investigation.ipynb": [
        new_markdown_cell("# DAU dropped — real, or the pipeline?\n\nThe analyst's story for one day: DAU three ways, the "
                          "decomposition of the change, ranked findings, and a look at some of the lost events."),
        params('warehouse = ""  # empty: build a demo week where an SDK release breaks timestamps on the last day\n'
               'spans = ""\nday = "2026-11-27"\nbaseline_day = ""  # empty: same weekday a week before, else the day before\n'
               'out_dir = "../.cache/notebooks/03"'),
        new_code_cell("from pathlib import Path\nimport shutil\n\nimport dqkit\nfrom dqkit.events.generator import SampleSpec, generate\n"
                      "from dqkit.events.scenarios import parse_scenario"),
        new_code_cell("if not warehouse:\n    out = Path(out_dir)\n    shutil.rmtree(out, ignore_errors=True)\n"
                      "    incident = parse_scenario(f\"sdk_bad_timestamps:app_version=8.4.0,start={day}T08:00:00Z,duration=8h\")\n"
                      "    s = generate(out / \"sample\", SampleSpec(events=40000, users=1500, days=8, seed=3, scenarios=(incident,)))\n"
                      "    dqkit.replay(s.events_path, out / \"warehouse.duckdb\", out / \"telemetry\", profiles=s.profiles_path)\n"
                      "    warehouse, spans = str(out / \"warehouse.duckdb\"), str(out / \"telemetry\")"),
        new_markdown_cell("## DAU three ways"),
        new_code_cell("d = dqkit.diagnose(warehouse, spans, day, baseline_day or None).to_dict()\ndau = d[\"dau\"]\n"
                      "print(f\"On {d['day']} the warehouse counts {dau['warehouse']:,} active users, {dau['change_pct']:+.1f}% against \"\n"
                      "      f\"{d['baseline_day']} ({d['baseline_reason']}). The pipeline received events from {dau['received']:,} users; \"\n"
                      "      f\"about {dau['expected_late']:,} more are expected to arrive late.\")"),
        new_markdown_cell("## Where the change comes from"),
        new_code_cell("for part, users in d[\"decomposition\"][\"parts\"].items():\n    print(f\"{part:<18}{users:>+8,} users\")\n"
                      "print(f\"{'total':<18}{d['decomposition']['total_change']:>+8,} users\")"),
        new_markdown_cell("## Findings, most important first"),
        new_code_cell("print(f\"Verdict: {d['verdict'].upper()}\")\nfor i, f in enumerate(d[\"findings\"], 1):\n"
                      "    seg = \", \".join(f\"{k}={v}\" for k, v in f[\"segment\"].items()) or \"all traffic\"\n"
                      "    print(f\"{i}. {f['stage']} {f['kind']} in {seg}, {f['window']['start']} to {f['window']['end']}: {f['evidence']}\")"),
        new_markdown_cell("## A few of the lost events, decision by decision"),
        new_code_cell(IGNORE + "import duckdb\ncon = duckdb.connect(warehouse, read_only=True)\n"
                      "lost = [r[0] for r in con.execute(\"SELECT event_id FROM rejected_events WHERE stage = 'validate' \"\n"
                      "                                   \"AND CAST(received_at AS DATE) = ? ORDER BY event_id LIMIT 2\", [day]).fetchall()]\n"
                      "con.close()\nfor event_id in lost:\n    for occurrence in dqkit.explain(warehouse, event_id=event_id):\n"
                      "        print(event_id, *occurrence[\"decisions\"], sep=\"\\n  - \")"),
        new_markdown_cell("## Summary"),
        new_code_cell("top = d[\"findings\"][0] if d[\"findings\"] else {}\n"
                      "summary = {\"verdict\": d[\"verdict\"], \"dau_warehouse\": dau[\"warehouse\"], \"dau_received\": dau[\"received\"],\n"
                      "           \"dau_baseline\": dau[\"baseline\"], \"top_stage\": top.get(\"stage\"), \"top_kind\": top.get(\"kind\"),\n"
                      "           \"top_segment\": sorted(top.get(\"segment\", {}).items())}\n"
                      "for k in sorted(summary):\n    print(f\"{k:<14}{summary[k]}\")"),
    ],
    "quality_report.ipynb": [
        new_markdown_cell("# Daily data-quality report\n\nHealth of the analytics pipeline for one day: what arrived, what loaded, "
                          "what was lost or late, and why."),
        params('day = "2026-11-27"\nwarehouse = ""  # empty: a demo replay\nspans = ""\nfindings_path = "../.cache/notebooks/report/findings.json"\n'
               'max_unexplained_loss = 0\nmax_lag_p95_s = 3600.0\nmax_rejected_share = 0.05\nout_dir = "../.cache/notebooks/report"'),
        new_code_cell("import json\nfrom pathlib import Path\nimport shutil\n\nimport dqkit\nfrom dqkit.events.generator import SampleSpec, generate\n"
                      "from dqkit.investigate import charts, lag\nfrom dqkit.report import Thresholds, quality_summary"),
        new_code_cell("if not warehouse:\n    out = Path(out_dir)\n    shutil.rmtree(out, ignore_errors=True)\n"
                      "    s = generate(out / \"sample\", SampleSpec(events=30000, users=1500, days=8, seed=5))\n"
                      "    dqkit.replay(s.events_path, out / \"warehouse.duckdb\", out / \"telemetry\", profiles=s.profiles_path)\n"
                      "    warehouse, spans = str(out / \"warehouse.duckdb\"), str(out / \"telemetry\")"),
        new_code_cell("report = quality_summary(warehouse, spans, day, Thresholds(max_unexplained_loss, max_lag_p95_s, max_rejected_share))\n"
                      "Path(findings_path).write_text(json.dumps(report, indent=2, default=str))\n"
                      "state = \"HEALTHY\" if report[\"healthy\"] else \"THRESHOLD BREACHED\"\n"
                      "print(f\"{report['day']}: {state}. {report['received']:,} events received, {report['rejected_share']:.2%} rejected \"\n"
                      "      f\"as invalid, {report['unexplained_loss']:,} lost without explanation; verdict on DAU: {report['verdict']}.\")\n"
                      "for b in report[\"breaches\"]:\n    print(\"BREACH:\", b)"),
        new_markdown_cell("## Where the events went"),
        new_code_cell(IGNORE + "from datetime import datetime, timedelta, timezone\n"
                      "start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)\n"
                      "rec = dqkit.reconcile(warehouse, spans).window(start, start + timedelta(days=1))\n"
                      "charts.png(charts.funnel(rec, title=f\"Where the events of {day} went\"))"),
        new_code_cell(IGNORE + "charts.png(charts.drop_rate_by_stage(rec))"),
        new_markdown_cell("## Lag"),
        new_code_cell(IGNORE + "print(f\"p95 lag on {day}: {report['lag_p95_s']} s\")\n"
                      "hourly = lag.event_lag(warehouse)\n"
                      "charts.png(charts.lag_percentiles(hourly.filter(hourly[\"hour\"].dt.date() == start.date())))"),
        new_markdown_cell("## Findings"),
        new_code_cell("for i, f in enumerate(report[\"findings\"], 1):\n"
                      "    seg = \", \".join(f\"{k}={v}\" for k, v in f[\"segment\"].items()) or \"all traffic\"\n"
                      "    print(f\"{i}. {f['stage']} {f['kind']} in {seg}: {f['evidence']}\")\n"
                      "if not report[\"findings\"]:\n    print(\"No findings.\")"),
        new_markdown_cell("## Summary"),
        new_code_cell("summary = {k: report[k] for k in (\"day\", \"healthy\", \"received\", \"rejected_share\", \"unexplained_loss\", \"verdict\")}\n"
                      "summary[\"breaches\"] = len(report[\"breaches\"])\nfor k in sorted(summary):\n    print(f\"{k:<18}{summary[k]}\")"),
    ],
}


def main() -> None:
    import papermill as pm

    out = ROOT / "notebooks"
    for name, cells in NOTEBOOKS.items():
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        path = out / name
        nbformat.write(nb, str(path))
        pm.execute_notebook(str(path), str(path), cwd=str(out), kernel_name="python3", progress_bar=False)
        print("executed", path)


if __name__ == "__main__":
    main()
