"""Charts an analyst would rather look at than read. Each function returns an Altair chart;
:func:`save` renders it to PNG or SVG offline (vl-convert), or HTML."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from dqkit.investigate.reconcile import CLASSES, Reconciliation

_LOSS_COLORS = alt.Scale(
    domain=["invalid", "duplicate", "dead_lettered", "silent_loss", "never_loaded", "in_flight", "over_count"],
    range=["#e45756", "#f58518", "#b279a2", "#9d0000", "#54a24b", "#4c78a8", "#bab0ac"],
)


def funnel(rec: Reconciliation, title: str = "Where the events went") -> alt.Chart:
    """Received → valid → unique (published) → in the warehouse, with what each step lost."""
    t = rec.totals
    steps = pl.DataFrame({
        "step": ["1 received", "2 valid", "3 published (unique)", "4 in the warehouse"],
        "events": [t["received"], t["received"] - t["invalid"], t["published"], t["warehouse_rows"]],
        "lost": [0, t["invalid"], t["duplicate"], t["published"] - t["warehouse_rows"]],
        "why": ["", "invalid", "duplicate", "not in the warehouse"],
    }).with_columns(label=pl.when(pl.col("lost") > 0).then(pl.format("{} (−{} {})", pl.col("events"), pl.col("lost"), pl.col("why")))
                    .otherwise(pl.col("events").cast(pl.String)))
    base = alt.Chart(steps).encode(y=alt.Y("step:N", title=None, sort=None))
    bars = base.mark_bar(color="#4c78a8").encode(x=alt.X("events:Q", title="events"),
                                                 tooltip=["step", "events", "lost"])
    text = base.mark_text(align="left", dx=4).encode(x="events:Q", text="label:N")
    return (bars + text).properties(title=title, width=480, height=160)


def _hourly_losses(rec: Reconciliation) -> pl.DataFrame:
    b = rec.batches.filter(pl.col("received_at").is_not_null())
    cols = ["invalid", "duplicate", *CLASSES]
    hourly = b.group_by(pl.col("received_at").dt.truncate("1h").alias("hour")).agg(
        pl.col("received").sum(), *[pl.col(c).sum() for c in cols]
    )
    return hourly.unpivot(index=["hour", "received"], on=cols, variable_name="stage", value_name="events").with_columns(
        rate=pl.when(pl.col("received") > 0).then(pl.col("events") / pl.col("received")).otherwise(0.0)
    ).sort("hour", "stage")


def drop_rate_by_stage(rec: Reconciliation, title: str = "Share of received events lost, by stage and hour") -> alt.Chart:
    """Lines of each loss class's share of the hour's received events."""
    return alt.Chart(_hourly_losses(rec)).mark_line(point=True).encode(
        x=alt.X("hour:T", title="hour received (UTC)"),
        y=alt.Y("rate:Q", title="share of received", axis=alt.Axis(format="%")),
        color=alt.Color("stage:N", scale=_LOSS_COLORS, title="stage / class"),
        tooltip=["hour:T", "stage:N", "events:Q", alt.Tooltip("rate:Q", format=".2%")],
    ).properties(title=title, width=560, height=220)


def lag_percentiles(lag: pl.DataFrame, title: str = "Event-to-warehouse lag") -> alt.Chart:
    """p50/p95/p99 lag over time (from :func:`dqkit.investigate.lag.event_lag`)."""
    when = "hour" if "hour" in lag.columns else "day"
    long = lag.unpivot(index=[when], on=["p50_s", "p95_s", "p99_s"], variable_name="percentile", value_name="seconds")
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X(f"{when}:T", title=f"{when} of event (UTC)"),
        y=alt.Y("seconds:Q", title="lag (s)", scale=alt.Scale(type="symlog")),
        color=alt.Color("percentile:N", title=None),
        tooltip=[f"{when}:T", "percentile:N", alt.Tooltip("seconds:Q", format=",.1f")],
    ).properties(title=title, width=560, height=220)


def segment_stage_heatmap(rec: Reconciliation, segment: str = "platform",
                          title: str | None = None) -> alt.Chart:
    """Loss rate per segment (rows) and stage or class (columns)."""
    cols = ["invalid", "duplicate", *CLASSES]
    seg = rec.batches.group_by(segment).agg(pl.col("received").sum(), *[pl.col(c).sum() for c in cols])
    long = seg.unpivot(index=[segment, "received"], on=cols, variable_name="stage", value_name="events").with_columns(
        rate=pl.when(pl.col("received") > 0).then(pl.col("events") / pl.col("received")).otherwise(0.0)
    )
    return alt.Chart(long).mark_rect().encode(
        x=alt.X("stage:N", title=None, sort=cols),
        y=alt.Y(f"{segment}:N", title=segment),
        color=alt.Color("rate:Q", title="share lost", scale=alt.Scale(scheme="reds"), legend=alt.Legend(format="%")),
        tooltip=[f"{segment}:N", "stage:N", "events:Q", alt.Tooltip("rate:Q", format=".2%")],
    ).properties(title=title or f"Losses by {segment} and stage", width=420, height=alt.Step(22))


def warehouse_vs_spans(rec: Reconciliation, title: str = "Rows in the warehouse vs rows the insert spans loaded") -> alt.Chart:
    """Per hour: rows the spans say were inserted and rows the warehouse holds."""
    hourly = rec.tables.group_by("hour").agg(pl.col("span_loaded").sum().alias("spans say loaded"),
                                              pl.col("warehouse_rows").sum().alias("in the warehouse"))
    long = hourly.unpivot(index="hour", variable_name="source", value_name="rows").sort("hour")
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("hour:T", title="hour loaded (UTC)"), y=alt.Y("rows:Q", title="rows"),
        color=alt.Color("source:N", title=None, scale=alt.Scale(range=["#4c78a8", "#e45756"])),
        strokeDash=alt.StrokeDash("source:N", legend=None),
        tooltip=["hour:T", "source:N", alt.Tooltip("rows:Q", format=",")],
    ).properties(title=title, width=560, height=220)


def save(chart: alt.TopLevelMixin, path: str | Path, scale: float = 2.0) -> Path:
    """Render ``chart`` to ``.png``, ``.svg`` or ``.html`` without a browser or network."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".png":
        chart.save(str(p), scale_factor=scale)
    else:
        chart.save(str(p))
    return p


def png(chart: alt.TopLevelMixin, scale: float = 1.5):
    """The chart as an embedded PNG for notebooks and HTML reports (no JavaScript, no network)."""
    import vl_convert
    from IPython.display import Image

    return Image(data=vl_convert.vegalite_to_png(chart.to_json(), scale=scale))
