"""Every investigation entry point on a pipeline dqkit did not write: the reference article's
pipeline (per-event enrich spans, unlinked insert spans, its own events_<type> tables, no trace
ids, no quarantine, no audit) and a Segment-shaped warehouse read through a mapping file."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from click.testing import CliRunner

import dqkit
from dqkit.cli import main
from dqkit.investigate import ledger
from dqkit.investigate.lag import event_lag, stage_lag


def _hours(window: dict) -> tuple[int, int]:
    def h(s):
        return datetime.fromisoformat(s.replace("Z", "+00:00")).hour if s else None

    end = h(window["end"])
    return h(window["start"]), 24 if end == 0 else end


def _near(found: dict, truth: dict, slack: int = 1) -> bool:
    """A found window matches the truth's to within ``slack`` hours at each end."""
    (fs, fe), (ts, te) = _hours(found), _hours(truth)
    return abs(fs - ts) <= slack and abs(fe - te) <= slack


def _incident(ref, stage):
    return next(i for i in ref.incidents if i["stage"] == stage)


def test_ledger_knows_what_the_spans_can_tell(reference_pipeline):
    ref = reference_pipeline
    spans = dqkit.load_spans(ref.telemetry)
    b = ledger.batch_ledger(spans)
    assert b.height == ref.expected["batches"]
    assert int(b["received"].sum()) == ref.expected["received"] and int(b["invalid"].sum()) == ref.expected["invalid"]
    # Per-event enrich spans in traces of their own, unlinked inserts: unknown per batch, never 0.
    assert b["enriched"].null_count() == b.height and b["loaded"].null_count() == b.height
    by_type = ledger.event_type_ledger(spans)
    assert by_type.height > 0 and int(by_type["loaded"].sum()) == ref.expected["loaded"]
    assert int(by_type.filter(by_type["event_type"] == "view")["dead_lettered"].sum()) == ref.expected["failed_insert_rows"]
    st = set(stage_lag(spans)["stage"].unique())
    assert {"ingest", "enrich", "insert"} <= st


def test_reconcile_catches_failed_inserts_the_totals_count_as_loaded(reference_pipeline):
    ref = reference_pipeline
    rec = dqkit.reconcile(ref.warehouse, ref.telemetry)
    t = rec.totals
    assert rec.source == "reference" and rec.per_batch is False
    assert (t["received"], t["invalid"], t["warehouse_rows"]) == (ref.expected["received"], ref.expected["invalid"],
                                                                    ref.expected["loaded"])
    assert t["dead_lettered"] == t["overstated_load"] == ref.expected["failed_insert_rows"]
    assert t["unexplained"] == 0 and t["silent_loss"] == 0 and t["over_count"] == 0
    found = {f["class"]: f for f in rec.findings()}
    truth = _incident(ref, "warehouse.insert")
    over = found["overstated_load"]
    assert over["tables"] == [truth["segment"]["table"]] and _near(over["window"], truth["window"])
    assert any("quarantine" in s for s in rec.to_dict()["unknown"])


def test_reconcile_cli_on_the_reference_source(reference_pipeline):
    ref = reference_pipeline
    res = CliRunner().invoke(main, ["reconcile", "-w", str(ref.warehouse), "-s", str(ref.telemetry), "--source",
                                    "reference", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["totals"]["overstated_load"] == ref.expected["failed_insert_rows"] and doc["balanced"]
    text = CliRunner().invoke(main, ["reconcile", "-w", str(ref.warehouse), "-s", str(ref.telemetry)])
    assert text.exit_code == 0 and "overstated load" in text.output and "unknown: no quarantine table" in text.output


def test_diagnose_names_each_incident_with_stage_segment_and_window(reference_pipeline):
    ref = reference_pipeline
    diag = dqkit.diagnose(ref.warehouse, ref.telemetry, ref.day, ref.baseline_day).to_dict()
    assert diag["verdict"] in ("pipeline", "mixed") and diag["source"] == "reference"
    assert diag["decomposition"]["adds_up"]
    by_stage = {f["stage"]: f for f in diag["findings"]}
    for stage in ("validate", "enrich.geo_ip", "warehouse.insert"):
        truth, f = _incident(ref, stage), by_stage.get(stage)
        assert f is not None, f"no {stage} finding in {diag['findings']}"
        assert f["kind"] == truth["kind"]
        assert _near(f["window"], truth["window"]), (stage, f["window"], truth["window"])
        for k, v in truth["segment"].items():
            key = "event_type" if k == "table" else k
            assert f["segment"].get(key) == (v.removeprefix("events_") if k == "table" else v), (stage, f["segment"])
    res = CliRunner().invoke(main, ["diagnose", "-w", str(ref.warehouse), "-s", str(ref.telemetry), "--day",
                                    ref.day.isoformat(), "--baseline-day", ref.baseline_day.isoformat()])
    assert res.exit_code == 0 and "validate drop [platform=android" in res.output, res.output


def test_explain_a_user_whose_rows_never_landed(reference_pipeline):
    ref = reference_pipeline
    spans = dqkit.load_spans(ref.telemetry)
    # A user with an event in a failed insert of events_view: the warehouse never saw it.
    uid = spans.con.sql("""
        WITH f AS (SELECT start_ns FROM spans WHERE name = 'analytics.warehouse.insert'
                   AND attrs['insert.success'] = 'false' AND attrs['table.name'] = 'events_view')
        SELECT e.attrs['event.user_id'] FROM spans e, f WHERE e.name = 'analytics.enrich' AND e.attrs['event.type'] = 'view'
          AND e.start_ns <= f.start_ns AND e.start_ns > f.start_ns - 60 * 1000000000::BIGINT LIMIT 1""").fetchall()[0][0]
    rows = dqkit.explain(ref.warehouse, user_id=uid, day=ref.day, spans=spans)
    lost = [r for r in rows if r["outcome"] == "enriched (from spans)"]
    assert lost and any("FAILED" in step for r in lost for step in r["decisions"]), rows
    res = CliRunner().invoke(main, ["explain", "-w", str(ref.warehouse), "--user-id", uid, "--day", ref.day.isoformat(),
                                    "-s", str(ref.telemetry)])
    assert res.exit_code == 0 and "FAILED" in res.output


def test_lag_comes_from_the_lag_metric_when_rows_have_no_load_time(reference_pipeline):
    ref = reference_pipeline
    lag = event_lag(ref.warehouse, spans=ref.telemetry)
    assert lag.height == 1 and lag["origin"][0] == "lag metric" and lag["events"][0] == ref.expected["loaded"] + \
        ref.expected["failed_insert_rows"]
    assert 0 < lag["p50_s"][0] <= lag["p95_s"][0] <= lag["p99_s"][0]
    # Without the metrics, the lag is unknown: no rows, not zeros.
    assert event_lag(ref.warehouse).is_empty()


def test_a_segment_warehouse_through_a_mapping_file(segment_warehouse):
    seg = segment_warehouse
    diag = dqkit.diagnose(seg.warehouse, day=seg.day, baseline_day=seg.baseline_day, source=seg.mapping).to_dict()
    assert diag["source"] == "segment-warehouse" and diag["dau"]["warehouse"] > 0 and diag["decomposition"]["adds_up"]
    assert any("no span export" in s for s in diag["unknown"])
    lag = event_lag(seg.warehouse, source=seg.mapping)
    assert lag["origin"].unique().to_list() == ["warehouse load times"] and int(lag["events"].sum()) == seg.expected["rows"]
    res = CliRunner().invoke(main, ["diagnose", "-w", str(seg.warehouse), "--day", seg.day.isoformat()])
    assert res.exit_code == 2 and "--source" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("bad, says", [
    ("[events]\ntables = ['nope']\n[columns]\nevent_id='id'\nuser_id='user_id'\nevent_ts='timestamp'\n", "not in the warehouse"),
    ("[events]\ntables = ['tracks']\n[columns]\nevent_id='id'\n", "must map user_id, event_ts"),
    ("[events]\ntables = ['tracks']\n[columns]\nevent_id='id'\nuser_id='user_id'\nevent_ts='when'\n", "column 'when'"),
    ("not toml [", "not valid TOML"),
])
def test_a_wrong_mapping_is_a_clear_error(segment_warehouse, tmp_path, bad, says):
    m = tmp_path / "m.toml"
    m.write_text(bad)
    res = CliRunner().invoke(main, ["diagnose", "-w", str(segment_warehouse.warehouse), "--day", "2026-11-20",
                                    "--source", str(m)])
    assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output, res.output


def test_report_and_notebooks_on_the_reference_source(reference_pipeline, tmp_path):
    """The daily report and notebooks 02 and 03, papermill-executed on the third-party pipeline."""
    import papermill as pm

    from dqkit.report import EXIT_BREACH, run_report
    from dqkit.report.run import notebooks_dir

    ref = reference_pipeline
    code, doc = run_report(ref.day.isoformat(), ref.warehouse, ref.telemetry, tmp_path / "report", source="reference")
    assert code == EXIT_BREACH, doc  # failed inserts breach max_dead_lettered
    stages = {f["stage"] for f in doc["findings"]}
    assert {"validate", "enrich.geo_ip", "warehouse.insert"} <= stages, doc
    for name in ("02_spans_vs_warehouse", "03_dau_drop_investigation"):
        out = tmp_path / f"{name}.ipynb"
        pm.execute_notebook(str(notebooks_dir() / f"{name}.ipynb"), str(out), cwd=str(tmp_path), kernel_name="python3",
                            progress_bar=False, parameters={"warehouse": str(ref.warehouse), "spans": str(ref.telemetry),
                                                            "source": "reference", "day": ref.day.isoformat()})
        text = out.read_text()
        expect = "that the load's own total still counts as loaded" if name.startswith("02") else "android"
        assert expect in text, f"{name}: {expect!r} not in its output"
