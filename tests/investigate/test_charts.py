"""Charts for people: one theme, human legends, readable lag ticks, an honest DAU waterfall, and
cells without loss left white."""

from datetime import date

import altair as alt
import polars as pl
import pytest

import dqkit
from dqkit import demo
from dqkit.investigate import charts
from dqkit.investigate.dau import dau_days
from dqkit.investigate.lag import event_lag


@pytest.fixture(scope="module")
def drop(tmp_path_factory):
    made = demo.build(tmp_path_factory.mktemp("drop"), incident="validate_drop", events=15_000, users=900, seed=3)
    return made, dqkit.diagnose(made.warehouse, made.telemetry, made.last_day).to_dict(), dqkit.reconcile(made.warehouse, made.telemetry)


def _values(chart) -> list[dict]:
    spec = chart.to_dict(format="vega")
    return [v for d in spec["data"] for v in d.get("values", [])]


def test_the_dqkit_theme_is_enabled_and_applied():
    assert alt.theme.active == "dqkit"
    spec = alt.Chart(pl.DataFrame({"x": [1]})).mark_point().encode(x="x:Q").to_dict()
    assert spec["config"]["title"]["anchor"] == "start" and spec["config"]["axis"]["labelFontSize"] == 12


def test_waterfall_steps_from_the_baseline_to_the_day(drop):
    _, d, _ = drop
    rows = _values(charts.dau_decomposition(d))
    steps = [r for r in rows if "kind" in r]
    assert steps[0]["end"] == d["dau"]["baseline"] and steps[-1]["end"] == d["dau"]["warehouse"]
    for before, after in zip(steps[1:-1], steps[2:-1]):
        assert after["start"] == before["end"], "each part starts where the previous ended"
    moves = [r for r in steps if r["kind"] != "total"]
    assert sum(r["value"] for r in moves) == d["decomposition"]["total_change"]
    assert {"lost at validation"} <= {r["step"] for r in moves}, "parts are named for people"
    assert d["dau"]["change_pct"] < -3, "the demo shows a real drop"


def test_lag_axis_reads_in_minutes_and_hours(drop):
    made, _, _ = drop
    spec = charts.lag_percentiles(event_lag(made.warehouse)).to_dict()
    axis = spec["encoding"]["y"]["axis"]
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
    assert "'1 min'" in axis["labelExpr"] and "'1 h'" in axis["labelExpr"]
    assert {v["percentile"] for v in _values(charts.lag_percentiles(event_lag(made.warehouse)))} == {
        "median", "95th percentile", "99th percentile"}


def test_rows_vs_spans_has_one_legend_with_human_names(drop):
    _, _, rec = drop
    spec = charts.warehouse_vs_spans(rec).to_dict()
    enc = spec["encoding"]
    assert enc["color"]["scale"]["domain"] == enc["strokeDash"]["scale"]["domain"] == [
        "insert spans say loaded", "rows in the warehouse"]
    assert "legend" not in enc["color"] or enc["color"]["legend"] is not None


def test_heatmap_leaves_cells_without_loss_white(drop):
    _, _, rec = drop
    chart = charts.segment_stage_heatmap(rec)
    color = chart.to_dict()["layer"][0]["encoding"]["color"]
    assert color["value"] == "white" and color["condition"]["test"] == "(datum.events > 0)"
    values = _values(chart)
    assert any(v["what"] == "rejected as invalid" and v["platform"] == "android" and v["events"] > 0 for v in values)
    assert all(v["label"] is None for v in values if v["events"] == 0), "no '0%' printed where nothing was lost"


def test_dau_by_day_and_losses_by_hour(drop, tmp_path):
    made, d, rec = drop
    days = dau_days(made.warehouse, d["baseline_day"], d["day"])
    assert days.height == 8 and days["day"][-1] == date.fromisoformat(d["day"])
    assert days["warehouse"][-1] == d["dau"]["warehouse"] and days["received"][-1] == d["dau"]["received"]
    lost = _values(charts.losses_by_hour(rec, "platform", day=d["day"]))
    by = pl.DataFrame(lost).group_by("segment").agg(pl.col("events").sum()).sort("events", descending=True)
    assert by["segment"][0] == "android", "the incident's platform carries the losses"
    for name, chart in {"dau": charts.dau_by_day(days, d), "lost": charts.losses_by_hour(rec, day=d["day"]),
                        "waterfall": charts.dau_decomposition(d)}.items():
        assert charts.save(chart, tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
