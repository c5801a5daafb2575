"""Charts an analyst would rather look at than read. Each function returns an Altair chart;
:func:`save` renders it to PNG or SVG offline (vl-convert), or HTML, and :func:`png` embeds it
in a notebook. Importing this module enables the ``dqkit`` theme (fonts, sizes, palette) for
every chart; labels are for people (:data:`LABELS`), never column names."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import altair as alt
import polars as pl

from dqkit.investigate.reconcile import CLASSES, Reconciliation

LABELS = {
    "invalid": "rejected as invalid", "duplicate": "removed as duplicate", "dead_lettered": "dead-lettered",
    "silent_loss": "silently lost", "never_loaded": "never loaded", "in_flight": "still in flight",
    "over_count": "counted twice",
}
"""Loss classes and stages as the charts and the report name them."""

PART_LABELS = {
    "validate": "lost at validation", "dedup": "lost as duplicates", "warehouse.insert": "lost at warehouse insert",
    "late_arrival": "still to arrive (late)", "real_change": "real change in users",
}
"""The parts of a DAU change (``diagnose(...).decomposition['parts']``), for people."""

_LOSS_COLORS = {"rejected as invalid": "#e45756", "removed as duplicate": "#f58518", "dead-lettered": "#b279a2",
                "silently lost": "#9d0000", "never loaded": "#54a24b", "still in flight": "#4c78a8", "counted twice": "#bab0ac"}
_INK, _MUTED, _GRID = "#1f2328", "#57606a", "#e6e8eb"
_LOSS, _GAIN, _TOTAL = "#d1242f", "#1a7f37", "#4c78a8"


@alt.theme.register("dqkit", enable=True)
def theme() -> alt.theme.ThemeConfig:
    """One look for every dqkit chart: readable sizes, quiet grid, titles left-aligned."""
    font = "DejaVu Sans, Helvetica, Arial, sans-serif"
    return {
        "config": {
            "font": font,
            "view": {"continuousWidth": 560, "continuousHeight": 220, "stroke": None},
            "title": {"fontSize": 15, "fontWeight": "bold", "anchor": "start", "color": _INK, "offset": 12},
            "axis": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal", "titleColor": _MUTED,
                     "labelColor": _INK, "gridColor": _GRID, "domainColor": "#8c959f", "tickColor": "#8c959f",
                     "labelOverlap": True},
            "legend": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal", "orient": "bottom",
                       "direction": "horizontal", "labelLimit": 260, "symbolSize": 90},
            "range": {"category": ["#4c78a8", "#e45756", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#72b7b2"]},
            "bar": {"color": _TOTAL}, "line": {"strokeWidth": 2}, "point": {"size": 30},
            "text": {"fontSize": 12, "color": _INK},
        }
    }


def _loss_scale(labels: list[str]) -> alt.Scale:
    return alt.Scale(domain=labels, range=[_LOSS_COLORS[x] for x in labels])


def funnel(rec: Reconciliation, title: str = "Where the events went") -> alt.Chart:
    """Received → valid → unique (published) → in the warehouse, with what each step lost."""
    t = rec.totals
    events = [t["received"], t["received"] - t["invalid"], t["published"], t["warehouse_rows"]]
    lost = [0, t["invalid"], t["duplicate"], t["published"] - t["warehouse_rows"]]
    why = ["", "rejected as invalid", "removed as duplicates", "not in the warehouse"]
    steps = pl.DataFrame({
        "step": ["received", "valid", "unique, published", "in the warehouse"], "events": events, "lost": lost,
        "label": [f"{e:,}" + (f"  (−{n:,} {w})" if n > 0 else "") for e, n, w in zip(events, lost, why)],
    })
    base = alt.Chart(steps).encode(y=alt.Y("step:N", title=None, sort=None, axis=alt.Axis(labelFontSize=13)))
    bars = base.mark_bar(color=_TOTAL).encode(
        x=alt.X("events:Q", title="events", axis=alt.Axis(format=",d"), scale=alt.Scale(domainMax=max(events) * 1.45 or 1)),
        tooltip=["step", alt.Tooltip("events:Q", format=","), alt.Tooltip("lost:Q", format=",")])
    text = base.mark_text(align="left", dx=5).encode(x="events:Q", text="label:N")
    return (bars + text).properties(title=title, width=560, height=150)


def _hourly_losses(rec: Reconciliation) -> pl.DataFrame:
    b = rec.batches.filter(pl.col("received_at").is_not_null())
    cols = ["invalid", "duplicate", *CLASSES]
    hourly = b.group_by(pl.col("received_at").dt.truncate("1h").alias("hour")).agg(
        pl.col("received").sum(), *[pl.col(c).sum() for c in cols]
    )
    long = hourly.unpivot(index=["hour", "received"], on=cols, variable_name="stage", value_name="events").with_columns(
        rate=pl.when(pl.col("received") > 0).then(pl.col("events") / pl.col("received")).otherwise(0.0),
        what=pl.col("stage").replace_strict(LABELS),
    )
    seen = long.group_by("stage").agg(pl.col("events").sum()).filter(pl.col("events") > 0)["stage"].to_list() or ["invalid"]
    return long.filter(pl.col("stage").is_in(seen)).sort("hour", "stage")


def drop_rate_by_stage(rec: Reconciliation, title: str = "Share of received events lost, by hour and cause") -> alt.Chart:
    """Lines of each loss class's share of the hour's received events (classes that occurred)."""
    data = _hourly_losses(rec)
    shown = [LABELS[c] for c in ["invalid", "duplicate", *CLASSES] if LABELS[c] in set(data["what"].to_list())]
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("hour:T", title="hour received (UTC)", scale=alt.Scale(type="utc"), axis=alt.Axis(format="%H:%M", labelAngle=0)),
        y=alt.Y("rate:Q", title="share of the hour's events", axis=alt.Axis(format=".0%")),
        color=alt.Color("what:N", scale=_loss_scale(shown), title=None, sort=shown),
        tooltip=[alt.Tooltip("hour:T", format="%d %b %H:%M"), alt.Tooltip("what:N", title="cause"),
                 alt.Tooltip("events:Q", format=","), alt.Tooltip("rate:Q", format=".2%")],
    ).properties(title=title, width=560, height=220)


_LAG_TICKS = [(0.25, "15 s"), (1, "1 min"), (2, "2 min"), (5, "5 min"), (15, "15 min"), (60, "1 h"), (240, "4 h"),
              (720, "12 h"), (1440, "1 day"), (10080, "1 week")]


def lag_percentiles(lag: pl.DataFrame, title: str = "How long events took to reach the warehouse") -> alt.Chart:
    """Median, 95th and 99th percentile lag over time (from :func:`dqkit.investigate.lag.event_lag`).

    Lags run from seconds to many hours on one day (offline clients), so the axis is
    logarithmic, ticked in seconds, minutes, hours and days ("30 s", "5 min", "4 h")."""
    when = "hour" if "hour" in lag.columns else "day"
    names = {"p50_s": "median", "p95_s": "95th percentile", "p99_s": "99th percentile"}
    long = lag.unpivot(index=[when], on=list(names), variable_name="p", value_name="seconds").with_columns(
        percentile=pl.col("p").replace_strict(names), minutes=(pl.col("seconds") / 60).clip(lower_bound=0.25))
    lo, hi = (long["minutes"].min() or 0.25), (long["minutes"].max() or 1.0)
    ticks = [(v, t) for v, t in _LAG_TICKS if lo / 2.5 <= v <= hi * 2.5] or _LAG_TICKS[2:9]
    label = " : ".join(f"datum.value == {v} ? '{t}'" for v, t in ticks) + " : ''"
    fmt = "%H:%M" if when == "hour" and lag.height and lag[when].dt.date().n_unique() == 1 else "%a %d"
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X(f"{when}:T", title=f"{when} the event happened (UTC)", scale=alt.Scale(type="utc"),
                axis=alt.Axis(format=fmt, labelAngle=0)),
        y=alt.Y("minutes:Q", title="time from event to warehouse",
                scale=alt.Scale(type="log", domain=[min(v for v, _ in ticks), max(v for v, _ in ticks)]),
                axis=alt.Axis(values=[v for v, _ in ticks], labelExpr=label)),
        color=alt.Color("percentile:N", title=None, sort=list(names.values()),
                        scale=alt.Scale(domain=list(names.values()), range=["#4c78a8", "#f58518", "#e45756"])),
        tooltip=[alt.Tooltip(f"{when}:T", format="%d %b %H:%M"), "percentile:N", alt.Tooltip("minutes:Q", format=",.1f")],
    ).properties(title=title, width=560, height=250)


def segment_stage_heatmap(rec: Reconciliation, segment: str = "platform", title: str | None = None) -> alt.Chart:
    """Loss rate per segment (rows) and cause (columns); cells with no loss stay white."""
    cols = ["invalid", "duplicate", *CLASSES]
    seg = rec.batches.group_by(segment).agg(pl.col("received").sum(), *[pl.col(c).sum() for c in cols])
    long = seg.unpivot(index=[segment, "received"], on=cols, variable_name="stage", value_name="events").with_columns(
        rate=pl.when(pl.col("received") > 0).then(pl.col("events") / pl.col("received")).otherwise(0.0),
        what=pl.col("stage").replace_strict(LABELS),
    ).with_columns(label=pl.when(pl.col("events") > 0).then(
        pl.when(pl.col("rate") >= 0.001).then((pl.col("rate") * 100).round(1).cast(pl.String) + "%").otherwise(pl.lit("<0.1%"))))
    order = [LABELS[c] for c in cols]
    base = alt.Chart(long).encode(x=alt.X("what:N", title=None, sort=order,
                                          axis=alt.Axis(labelAngle=-30, labelLimit=160, labelOverlap=False)),
                                  y=alt.Y(f"{segment}:N", title=segment.replace("_", " ")))
    cells = base.mark_rect(stroke=_GRID).encode(
        color=alt.condition(alt.datum.events > 0,
                            alt.Color("rate:Q", title="share lost", scale=alt.Scale(scheme="reds", domainMin=0),
                                      legend=alt.Legend(format=".0%", orient="right", direction="vertical")),
                            alt.value("white")),
        tooltip=[f"{segment}:N", alt.Tooltip("what:N", title="cause"), alt.Tooltip("events:Q", format=","),
                 alt.Tooltip("rate:Q", format=".2%")])
    text = base.mark_text(fontSize=11).encode(text="label:N").transform_filter(alt.datum.events > 0)
    return (cells + text).properties(title=title or f"Share of events lost, by {segment.replace('_', ' ')} and cause",
                                     width=460, height=alt.Step(26))


def warehouse_vs_spans(rec: Reconciliation, title: str = "Rows in the warehouse vs rows the insert spans loaded") -> alt.Chart:
    """Per hour: rows the spans say were inserted (solid) and rows the warehouse holds (dashed)."""
    names = ["insert spans say loaded", "rows in the warehouse"]
    hourly = rec.tables.group_by("hour").agg(pl.col("span_loaded").sum().alias(names[0]),
                                              pl.col("warehouse_rows").sum().alias(names[1]))
    long = hourly.unpivot(index="hour", variable_name="source", value_name="rows").sort("hour")
    return alt.Chart(long).mark_line().encode(
        x=alt.X("hour:T", title="hour loaded (UTC)", scale=alt.Scale(type="utc"), axis=alt.Axis(format="%a %d %H:%M", labelAngle=0)),
        y=alt.Y("rows:Q", title="rows", axis=alt.Axis(format=",d")),
        color=alt.Color("source:N", title=None, sort=names, scale=alt.Scale(domain=names, range=["#4c78a8", "#e45756"])),
        strokeDash=alt.StrokeDash("source:N", title=None, sort=names, scale=alt.Scale(domain=names, range=[[1, 0], [6, 3]])),
        tooltip=[alt.Tooltip("hour:T", format="%d %b %H:%M"), "source:N", alt.Tooltip("rows:Q", format=",")],
    ).properties(title=title, width=560, height=220)


def dau_decomposition(diagnosis: dict, title: str | None = None) -> alt.Chart:
    """A waterfall from the baseline's DAU to the day's: each part of the change
    (``diagnose(...).to_dict()``) as a step, losses red, gains green."""
    dau, parts = diagnosis["dau"], diagnosis["decomposition"]["parts"]
    rows = [{"step": f"DAU on {_short(diagnosis['baseline_day'])} (baseline)", "start": 0, "end": dau["baseline"],
             "value": dau["baseline"], "kind": "total"}]
    level = dau["baseline"]
    for part, users in parts.items():
        if users == 0:
            continue
        rows.append({"step": PART_LABELS.get(part, part), "start": level, "end": level + users, "value": users,
                     "kind": "loss" if users < 0 else "gain"})
        level += users
    rows.append({"step": f"DAU on {_short(diagnosis['day'])}", "start": 0, "end": dau["warehouse"], "value": dau["warehouse"],
                 "kind": "total"})
    data = pl.DataFrame(rows).with_columns(
        label=pl.Series([f"{r['value']:,}" if r["kind"] == "total" else f"{r['value']:+,}".replace("-", "−") for r in rows]),
        tip=pl.max_horizontal("start", "end"))
    base = alt.Chart(data).encode(y=alt.Y("step:N", title=None, sort=None, axis=alt.Axis(labelFontSize=13, labelLimit=280)))
    bars = base.mark_bar(height=22).encode(
        x=alt.X("start:Q", title="daily active users", axis=alt.Axis(format=",d"),
                scale=alt.Scale(domainMax=max(r["end"] for r in rows) * 1.12)),
        x2="end:Q",
        color=alt.Color("kind:N", legend=None, scale=alt.Scale(domain=["total", "loss", "gain"], range=[_TOTAL, _LOSS, _GAIN])),
        tooltip=["step:N", alt.Tooltip("value:Q", title="users", format="+,")])
    text = base.mark_text(align="left", dx=5, fontWeight="bold").encode(x="tip:Q", text="label:N")
    change = diagnosis["dau"]["change_pct"]
    return (bars + text).properties(
        title=title or f"DAU {change:+.1f}%: where the change comes from".replace("-", "−"), width=520,
        height=alt.Step(34))


def _short(day: str) -> str:
    return date.fromisoformat(day).strftime("%a %-d %b")


def dau_by_day(days: pl.DataFrame, diagnosis: dict | None = None, title: str = "Daily active users") -> alt.Chart:
    """DAU per day (:func:`dqkit.investigate.dau.dau_days`) as the warehouse counts it and as the pipeline received it,
    plus, on the diagnosed day, the warehouse count with the users expected to arrive late."""
    names = ["in the warehouse", "received by the pipeline", "warehouse + expected late"]
    long = days.rename({"warehouse": names[0], "received": names[1]}).unpivot(index="day", variable_name="series",
                                                                            value_name="users")
    if diagnosis is not None:
        late = pl.DataFrame({"day": [date.fromisoformat(diagnosis["day"])], "series": [names[2]],
                             "users": [diagnosis["dau"]["warehouse"] + diagnosis["dau"]["expected_late"]]})
        long = pl.concat([long, late.cast(long.schema)])
    lo = long["users"].min() or 0
    return alt.Chart(long).mark_line(point=alt.OverlayMarkDef(size=50)).encode(
        x=alt.X("day:T", title=None, scale=alt.Scale(type="utc"), axis=alt.Axis(format="%a %d", labelAngle=0, tickCount="day")),
        y=alt.Y("users:Q", title="daily active users", axis=alt.Axis(format=",d"), scale=alt.Scale(domainMin=lo * 0.8, zero=False)),
        color=alt.Color("series:N", title=None, sort=names, scale=alt.Scale(domain=names, range=["#4c78a8", "#9d755d", "#72b7b2"])),
        tooltip=[alt.Tooltip("day:T", format="%a %d %b"), "series:N", alt.Tooltip("users:Q", format=",")],
    ).properties(title=title, width=560, height=220)


def losses_by_hour(rec: Reconciliation, segment: str = "platform", day: date | str | None = None,
                   title: str | None = None) -> alt.Chart:
    """Events lost per hour received (rejected as invalid, dead-lettered, silently lost or never
    loaded; duplicates are resends and left out), stacked by ``segment``; only ``day`` if given."""
    lost = ["invalid", "dead_lettered", "silent_loss", "never_loaded"]
    b = rec.batches.filter(pl.col("received_at").is_not_null())
    if day is not None:
        b = b.filter(pl.col("received_at").dt.date() == (day if isinstance(day, date) else date.fromisoformat(str(day))))
    hourly = b.group_by(pl.col("received_at").dt.truncate("1h").alias("hour"), pl.col(segment).alias("segment")).agg(
        pl.sum_horizontal(*lost).sum().alias("events")).filter(pl.col("events") > 0).sort("hour", "segment")
    return alt.Chart(hourly).mark_bar().encode(
        x=alt.X("hour:T", timeUnit="utcyearmonthdatehours", title="hour received (UTC)", scale=alt.Scale(type="utc"),
                axis=alt.Axis(format="%H:%M", labelAngle=0)),
        y=alt.Y("events:Q", title="events lost", axis=alt.Axis(format=",d")),
        color=alt.Color("segment:N", title=segment.replace("_", " ")),
        tooltip=[alt.Tooltip("hour:T", timeUnit="utcyearmonthdatehours", format="%d %b %H:%M"), alt.Tooltip("segment:N", title=segment),
                 alt.Tooltip("events:Q", format=",")],
    ).properties(title=title or f"Events lost, by hour and {segment.replace('_', ' ')}", width=560, height=220)


def save(chart: alt.TopLevelMixin, path: str | Path, scale: float = 2.0) -> Path:
    """Render ``chart`` to ``.png``, ``.svg`` or ``.html`` without a browser or network."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".png":
        chart.save(str(p), scale_factor=scale)
    else:
        chart.save(str(p))
    return p


def is_empty(chart: alt.TopLevelMixin) -> bool:
    """True when every data set of the chart has no rows (an empty day): there is nothing to draw."""
    spec = chart.to_dict()
    sets = spec.get("datasets") or {}
    return bool(sets) and all(len(rows) == 0 for rows in sets.values())


def png(chart: alt.TopLevelMixin, scale: float = 1.5):
    """The chart as an embedded PNG for notebooks and HTML reports (no JavaScript, no network);
    a chart with no data becomes a line saying so instead of an error."""
    import vl_convert
    from IPython.display import Image, Markdown

    if is_empty(chart):
        title = chart.to_dict().get("title")
        title = title.get("text") if isinstance(title, dict) else title
        return Markdown(f"*Nothing to chart{f' for “{title}”' if title else ''}: no data for this day.*")

    return Image(data=vl_convert.vegalite_to_png(chart.to_json(), scale=scale))
