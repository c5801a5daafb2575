import duckdb

from dqkit.investigate import charts
from dqkit.investigate.lag import event_lag, stage_lag
from dqkit.investigate.reconcile import reconcile
from tests.conftest import batch, event, write_lines


def _run(tmp_path, run_sample):
    items = [batch("b-1", [event("e1", ts="2026-11-20T10:00:00Z"), event("e2", ts="2026-11-20T10:59:00Z", etype="tap")],
                   received="2026-11-20T11:00:30Z", platform="android"),
             batch("b-2", [event("e3", ts="2026-11-20T23:59:50Z")], received="2026-11-21T00:00:10Z")]
    return run_sample(write_lines(tmp_path / "s.ndjson", items))


def test_event_lag_and_day_close(tmp_path, run_sample):
    run = _run(tmp_path, run_sample)
    lag = {r["hour"].hour: r for r in event_lag(run.warehouse).iter_rows(named=True)}
    # Loads run on the minute: b-1 enters 11:00:30 and loads at 11:01:00.
    assert lag[10]["events"] == 2 and round(lag[10]["p50_s"]) == round((3660 + 120) / 2)
    assert lag[23]["after_day_close"] == 1.0 and lag[10]["after_day_close"] == 0.0


def test_stage_lag_from_spans(tmp_path, run_sample):
    run = _run(tmp_path, run_sample)
    st = stage_lag(run.spans())
    stages = set(st["stage"])
    assert stages == {"ingest", "queue", "enrich", "load_wait", "total"}
    total = st.filter(st["stage"] == "total")
    assert total["batches"].sum() == 2
    assert (total["p50_s"] > 0).all() and (total["p99_s"] <= 60.5).all(), "within one load interval"


def test_charts_render_offline(tmp_path, run_sample):
    run = _run(tmp_path, run_sample)
    con = duckdb.connect(str(run.warehouse))
    con.execute("DELETE FROM events_tap")
    con.close()
    rec = reconcile(run.warehouse, run.telemetry)
    made = {
        "funnel": charts.funnel(rec), "drop": charts.drop_rate_by_stage(rec),
        "lag": charts.lag_percentiles(event_lag(run.warehouse)), "heat": charts.segment_stage_heatmap(rec),
        "wvs": charts.warehouse_vs_spans(rec),
    }
    heat = made["heat"].to_dict(format="vega")
    values = [v for d in heat["data"] for v in d.get("values", [])]
    assert any(v.get("platform") == "android" and v.get("stage") == "silent_loss" and v.get("events") == 1 for v in values)
    for name, chart in made.items():
        png = charts.save(chart, tmp_path / f"{name}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    svg = charts.save(made["funnel"], tmp_path / "funnel.svg").read_text()
    assert "<svg" in svg and "not in the warehouse" in svg
