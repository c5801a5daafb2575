"""Reconcile what the spans say the pipeline did with what the warehouse holds.

Per batch (joined on the ingest trace id every warehouse row carries):

* ``silent_loss`` — insert spans say rows landed, the warehouse lacks them;
* ``over_count`` — the warehouse has more rows than the spans loaded (double loads, or rows
  from batches no span describes);
* ``dead_lettered`` — failed inserts, as the spans report them;
* ``in_flight`` / ``never_loaded`` — published, but no insert accounts for them: still in
  flight if the batch arrived within ``flight_window`` of ``as_of``, never loaded otherwise.

So for every batch ``received = invalid + duplicate + warehouse_rows + dead_lettered +
in_flight + never_loaded + silent_loss - over_count``; what does not fit is ``unexplained``
and reported, never dropped.

A source whose rows carry no trace id (the reference article's tables, most vendors') is
compared per table and hour instead: rows the insert spans say landed against rows in the
table, placed by load time, or by event time where the rows have none. There, and in dqkit's
form too, ``overstated_load`` catches what the article's code hides: rows of inserts that
failed (``insert.success = false``) which the load's ``warehouse.total_loaded`` still counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from dqkit import names as N
from dqkit.errors import InputError
from dqkit.investigate.evidence import Evidence, open_evidence
from dqkit.investigate.ledger import batch_ledger, table_ledger
from dqkit.investigate.spans import SpanData
from dqkit.timefmt import iso_z

CLASSES = ("silent_loss", "never_loaded", "over_count", "dead_lettered", "in_flight")
"""Classes of difference per batch (columns of :attr:`Reconciliation.batches`)."""
LOAD_CLASSES = ("overstated_load",)
"""Classes of difference per load (from :attr:`Reconciliation.loads`)."""
TOTAL_KEYS = ("received", "invalid", "duplicate", "published", "warehouse_rows", "span_loaded", "dead_lettered",
              "in_flight", "never_loaded", "silent_loss", "over_count", "unexplained")
# Not part of the identity: what the pipeline's own load totals claim beyond what the inserts did.
EXTRA_KEYS = ("overstated_load",)


def _warehouse_frames(ev: Evidence) -> tuple[pl.DataFrame | None, pl.DataFrame]:
    """Rows per ingest trace (None when rows carry no trace id) and per table and hour of load
    (of event time when rows carry no load time)."""
    when = "loaded_at" if ev.source.has("loaded_at") else "event_ts"
    per_table = ev.sql(f"SELECT table_name, date_trunc('hour', {when}) AS hour, count(*)::BIGINT AS warehouse_rows "
                       "FROM ev_events GROUP BY ALL")
    if not ev.has_row_traces:
        return None, per_table
    per_batch = ev.sql("SELECT trace_id, any_value(batch_id) AS wh_batch_id, count(*)::BIGINT AS warehouse_rows "
                       "FROM ev_events GROUP BY trace_id")
    return per_batch, per_table


def heaviest_run(frame: pl.DataFrame, value: str, time: str = "hour", floor: float = 0.1) -> tuple | None:
    """The contiguous run of rows (in time order) holding the most of ``value`` above a floor
    (``floor`` of the peak): a stray hour far from the rest cannot widen the window."""
    f = frame.filter(pl.col(value) > 0).sort(time)
    if f.is_empty():
        return None
    peak = float(f[value].max())
    best, best_sum, cur_start, cur_sum = None, 0.0, None, 0.0
    full = frame.sort(time)
    times, vals = full[time].to_list(), [float(v or 0) for v in full[value].to_list()]
    for t, v in zip(times, vals):
        gain = v - floor * peak
        if cur_start is None or cur_sum <= 0:
            cur_start, cur_sum = t, 0.0
        cur_sum += gain
        if cur_sum > best_sum:
            best, best_sum = (cur_start, t), cur_sum
    return best


@dataclass
class Reconciliation:
    """What the spans say happened against what the warehouse holds, with every difference classified."""
    batches: pl.DataFrame
    """One row per batch: ledger counts, warehouse rows and the classified differences (the
    warehouse columns are NULL when rows carry no trace id: then see :attr:`tables`)."""
    tables: pl.DataFrame
    """Per table and hour: rows the insert spans loaded (and failed) vs rows in the warehouse."""
    totals: dict[str, int]
    as_of: datetime
    flight_window: timedelta
    per_batch: bool = True
    """Differences are classified per batch (rows carry the ingest trace id); else per table and hour."""
    source: str = "dqkit"
    missing: list[str] = field(default_factory=list)
    """What this source cannot tell, one sentence each."""
    loads: pl.DataFrame | None = None
    """Per load trace: rows the load's ``warehouse.total_loaded`` claims vs rows its inserts landed."""
    origins: dict[str, str] = field(default_factory=dict)
    """Where each figure comes from (``invalid``: ``quarantine`` or ``spans``, ``lag``: ...)."""

    def findings(self) -> list[dict]:
        """One entry per kind of difference: events, batches, window, the segments and tables hit most."""
        out = []
        for cls in CLASSES + LOAD_CLASSES:
            if cls == "overstated_load":
                f = self._overstated()
                if f:
                    out.append(f)
                continue
            table_col = _TABLE_CLASS.get(cls)
            if self.per_batch or table_col is None:
                hit = self.batches.filter(pl.col(cls) > 0)
                if hit.is_empty():
                    continue
                seg = (hit.group_by("platform", "app_version").agg(pl.col(cls).sum())
                       .sort(cls, "platform", "app_version", descending=[True, False, False]).head(3))
                out.append({
                    "class": cls, "events": int(hit[cls].sum()), "batches": hit.height,
                    "window": {"start": _iso(hit["received_at"].min()), "end": _iso(hit["received_at"].max())},
                    "segments": [{"platform": p, "app_version": v, "events": int(n)} for p, v, n in seg.iter_rows()],
                    "tables": self._tables_for(cls),
                })
                continue
            hit = self.tables.filter(pl.col(table_col) > 0)
            if hit.is_empty():
                continue
            per_hour = hit.group_by("hour").agg(pl.col(table_col).sum())
            run = heaviest_run(per_hour, table_col)
            out.append({
                "class": cls, "events": int(hit[table_col].sum()), "batches": None,
                "window": {"start": _iso(run[0]), "end": _iso(run[1] + timedelta(hours=1))} if run else {"start": None, "end": None},
                "segments": [], "tables": sorted(hit["table_name"].unique().to_list()),
                "note": "per table and hour (rows carry no trace id): the client segment is not known",
            })
        return out

    def _overstated(self) -> dict | None:
        if self.loads is None:
            return None
        hit = self.loads.filter(pl.col("overstated") > 0)
        if hit.is_empty():
            return None
        run = heaviest_run(hit.with_columns(hour=pl.col("start_at").dt.truncate("1h")).group_by("hour").agg(
            pl.col("overstated").sum()), "overstated")
        tables = sorted(self.tables.filter(pl.col("span_dead_lettered") > 0)["table_name"].unique().to_list())
        return {
            "class": "overstated_load", "events": int(hit["overstated"].sum()), "batches": None,
            "window": {"start": _iso(run[0]), "end": _iso(run[1] + timedelta(hours=1))} if run else {"start": None, "end": None},
            "segments": [], "tables": tables, "loads": hit.height,
            "note": f"{N.TOTAL_LOADED} counts rows of inserts that failed ({N.INSERT_SUCCESS} = false): "
                    "the pipeline's own totals say they landed",
        }

    def _tables_for(self, cls: str) -> list[str]:
        col = _TABLE_CLASS.get(cls)
        if col is None or cls == "dead_lettered" and self.per_batch:
            return []
        return sorted(self.tables.filter(pl.col(col) > 0)["table_name"].unique().to_list())

    def window(self, start: datetime, end: datetime) -> Reconciliation:
        """The same reconciliation narrowed to batches received (and table-hours) in [start, end)."""
        b = self.batches.filter(pl.col("received_at").is_between(start, end, closed="left"))
        t = self.tables.filter(pl.col("hour").is_between(start, end, closed="left"))
        loads = None if self.loads is None else self.loads.filter(pl.col("start_at").is_between(start, end, closed="left"))
        totals = _totals(b, t, loads, self.per_batch, self.as_of, self.flight_window)
        return Reconciliation(b, t, totals, self.as_of, self.flight_window, self.per_batch, self.source, self.missing, loads,
                              self.origins)

    def to_dict(self) -> dict:
        """Totals, findings and what the source cannot tell, as JSON (``dqkit reconcile --json``)."""
        return {
            "as_of": _iso(self.as_of),
            "flight_window_s": int(self.flight_window.total_seconds()),
            "source": self.source,
            "per_batch": self.per_batch,
            "totals": self.totals,
            "balanced": self.totals["unexplained"] == 0,
            "findings": self.findings(),
            "unknown": self.missing,
            "origins": self.origins,
        }


_TABLE_CLASS = {"silent_loss": "table_silent_loss", "over_count": "table_over_count", "dead_lettered": "span_dead_lettered"}


def _iso(t) -> str | None:
    return None if t is None else iso_z(t)


def reconcile(
    warehouse: str | Path,
    spans: SpanData | str | Path | list,
    as_of: datetime | None = None,
    flight_window: timedelta = timedelta(hours=1),
    source=None,
) -> Reconciliation:
    """Join the span ledger with warehouse counts and classify every difference.

    Args:
        warehouse: DuckDB file of the pipeline's warehouse.
        spans: loaded spans, or OTLP/JSON files / telemetry folders to load.
        as_of: the moment the comparison describes; by default the end of the last span.
        flight_window: batches received this close to ``as_of`` whose events are not loaded yet
            count as in flight; older ones as never loaded.
        source: what the warehouse's tables mean: ``"dqkit"``, ``"reference"``, a mapping file,
            a :class:`~dqkit.investigate.source.Source`, or None to detect it.
    """
    ev = open_evidence(warehouse, spans, source)
    try:
        return _reconcile(ev, as_of, flight_window)
    finally:
        ev.close()


def _check_export(ev: Evidence, ledger: pl.DataFrame, wh_batch: pl.DataFrame | None) -> None:
    """An export with no pipeline spans, or one whose batches are not this warehouse's, is refused:
    comparing it would report every row as a difference."""
    n_spans = ev.scalar("SELECT count(*) FROM spans")
    if not n_spans:
        raise InputError("the span export is empty (no spans); pass the export of the pipeline that wrote this warehouse")
    kinds = ev.scalar(f"SELECT count(*) FROM spans WHERE name IN ('{N.INGEST}', '{N.INSERT}')")
    if not kinds:
        raise InputError(f"the span export holds {n_spans:,} spans but none named {N.INGEST} or {N.INSERT}: "
                         "it is not a pipeline's export, or names its spans otherwise")
    if wh_batch is not None and ledger.height and wh_batch.height:
        shared = ledger.join(wh_batch, on="trace_id", how="inner").height
        if shared == 0:
            raise InputError(f"the span export does not match this warehouse: none of its {ledger.height:,} batches' trace ids "
                             f"is on any of the warehouse's rows (it has rows of {wh_batch.height:,} other traces); "
                             "pass the export written with this warehouse")


def _reconcile(ev: Evidence, as_of: datetime | None, flight_window: timedelta) -> Reconciliation:
    sd = ev.spans
    assert sd is not None
    ledger = batch_ledger(sd)
    wh_batch, wh_table = _warehouse_frames(ev)
    _check_export(ev, ledger, wh_batch)
    if as_of is None:
        end = ev.scalar("SELECT max(end_ns) FROM spans")
        as_of = datetime.fromtimestamp(end / 1e9, UTC) if end is not None else datetime.now(UTC)

    spans_t = table_ledger(sd).rename({"loaded": "span_loaded", "dead_lettered": "span_dead_lettered"})
    if wh_batch is None and spans_t.height:
        # Rows placed by their own time: keep the hours the insert spans cover (a day's slack
        # either side for late events), not the warehouse's whole history.
        lo, hi = spans_t["hour"].min() - timedelta(days=1), spans_t["hour"].max() + timedelta(days=1)
        wh_table = wh_table.filter(pl.col("hour").is_between(lo, hi))
    t = spans_t.join(wh_table, on=["table_name", "hour"], how="full", coalesce=True).with_columns(
        pl.col("span_loaded", "span_dead_lettered", "warehouse_rows").fill_null(0), pl.col("inserts").fill_null(0)
    ).sort("hour", "table_name")
    if ev.source.has("loaded_at"):
        t = t.with_columns(
            table_silent_loss=(pl.col("span_loaded") - pl.col("warehouse_rows")).clip(lower_bound=0),
            table_over_count=(pl.col("warehouse_rows") - pl.col("span_loaded")).clip(lower_bound=0),
        )
    else:
        t = _by_event_time(t)
    loads = ev.sql("""
        SELECT load_trace_id, min(start_at) AS start_at, any_value(total_loaded) AS total_loaded,
               sum(CASE WHEN success THEN row_count ELSE 0 END)::BIGINT AS landed,
               (any_value(total_loaded) - sum(CASE WHEN success THEN row_count ELSE 0 END))::BIGINT AS overstated
        FROM ev_inserts GROUP BY load_trace_id ORDER BY 2""").with_columns(pl.col("overstated").fill_null(0).clip(lower_bound=0))

    if wh_batch is not None:
        b = _per_batch(ledger, wh_batch, as_of, flight_window)
        per_batch = True
    else:
        b = _batches_only(ledger, as_of, flight_window)
        per_batch = False
    totals = _totals(b, t, loads, per_batch, as_of, flight_window)
    return Reconciliation(b, t, totals, as_of, flight_window, per_batch, ev.source.name, ev.missing(), loads, dict(ev.origins))


def _by_event_time(t: pl.DataFrame) -> pl.DataFrame:
    """Differences per table and hour when rows are placed by event time, not load time.

    A row's event hour precedes the hour its insert ran, so hour by hour the table runs ahead
    of the spans (late events by hours), and the raw difference would show a loss in one hour
    and an over-count in another for every late event. The running deficit (rows the spans
    loaded so far minus rows so far) does not: a loss raises it for good, a late event only
    dips it for a while. Losses are the rises of its running maximum; an over-count is only
    known for the table as a whole, and is placed at its last hour.
    """
    t = t.sort("table_name", "hour").with_columns(
        deficit=(pl.col("span_loaded").cum_sum() - pl.col("warehouse_rows").cum_sum()).over("table_name"))
    t = t.with_columns(peak=pl.col("deficit").cum_max().clip(lower_bound=0).over("table_name"))
    t = t.with_columns(table_silent_loss=(pl.col("peak") - pl.col("peak").shift(1, fill_value=0).over("table_name")).clip(lower_bound=0))
    # The rises cannot add up to more than the table's final deficit: trim from the latest hours.
    final = pl.col("deficit").last().over("table_name").clip(lower_bound=0)
    t = t.with_columns(table_silent_loss=pl.min_horizontal(
        pl.col("table_silent_loss"),
        (final - (pl.col("table_silent_loss").cum_sum() - pl.col("table_silent_loss")).over("table_name")).clip(lower_bound=0)))
    last = pl.col("hour") == pl.col("hour").max().over("table_name")
    t = t.with_columns(table_over_count=pl.when(last).then((-pl.col("deficit")).clip(lower_bound=0)).otherwise(0))
    return t.drop("deficit", "peak").sort("hour", "table_name")


def _per_batch(ledger: pl.DataFrame, wh_batch: pl.DataFrame, as_of: datetime, flight_window: timedelta) -> pl.DataFrame:
    linked = ledger["loaded"].null_count() == 0 if ledger.height else True
    b = ledger.join(wh_batch, on="trace_id", how="full", coalesce=True).with_columns(
        pl.col("batch_id").fill_null(pl.col("wh_batch_id")),
        pl.col("received", "invalid", "duplicate", "published", "enriched").fill_null(0),
        pl.col("warehouse_rows").fill_null(0),
        pl.col("platform", "app_version", "sdk_version").fill_null("untraced"),
    ).drop("wh_batch_id")
    span_loaded = pl.col("loaded").fill_null(0) if linked else pl.col("published") - pl.col("dead_lettered").fill_null(0)
    b = b.with_columns(span_loaded=span_loaded, dead_lettered=pl.col("dead_lettered").fill_null(0))
    if linked:
        gap = pl.col("published") - pl.col("span_loaded") - pl.col("dead_lettered")  # published, no insert says where
        b = b.with_columns(
            silent_loss=(pl.col("span_loaded") - pl.col("warehouse_rows")).clip(lower_bound=0),
            over_count=(pl.col("warehouse_rows") - pl.col("span_loaded")).clip(lower_bound=0),
            _gap=gap.clip(lower_bound=0),
        )
    else:
        # No per-batch links: losses and over-counts per batch are relative to what was published.
        gap = pl.col("published") - pl.col("dead_lettered") - pl.col("warehouse_rows")
        b = b.with_columns(silent_loss=pl.lit(0, pl.Int64), over_count=(-gap).clip(lower_bound=0), _gap=gap.clip(lower_bound=0))
    recent = pl.col("received_at").is_not_null() & (pl.col("received_at") >= as_of - flight_window)
    b = b.with_columns(
        in_flight=pl.when(recent).then(pl.col("_gap")).otherwise(0),
        never_loaded=pl.when(recent).then(0).otherwise(pl.col("_gap")),
    ).drop("_gap", "loaded")
    b = b.with_columns(unexplained=(
        pl.col("received") - pl.col("invalid") - pl.col("duplicate") - pl.col("warehouse_rows") - pl.col("dead_lettered")
        - pl.col("in_flight") - pl.col("never_loaded") - pl.col("silent_loss") + pl.col("over_count")
    ))
    return b.with_columns(pl.col(c).cast(pl.Int64) for c in TOTAL_KEYS if c != "published").sort(
        "received_at", "trace_id", nulls_last=True)


def _batches_only(ledger: pl.DataFrame, as_of: datetime, flight_window: timedelta) -> pl.DataFrame:
    """Batches known from their ingest spans only: where their events went after the queue is
    known per table and hour, so the per-batch classes are unknown (NULL)."""
    unknown = [pl.lit(None, pl.Int64).alias(c) for c in
               ("warehouse_rows", "span_loaded", "in_flight", "never_loaded", "silent_loss", "over_count", "unexplained")]
    return ledger.drop("loaded").with_columns(*unknown, pl.col("dead_lettered").cast(pl.Int64)).with_columns(
        recent=pl.col("received_at") >= as_of - flight_window).sort("received_at", "trace_id", nulls_last=True)


def _totals(b: pl.DataFrame, t: pl.DataFrame, loads: pl.DataFrame | None, per_batch: bool, as_of: datetime,
            flight_window: timedelta) -> dict[str, int]:
    if per_batch:
        totals = {k: int(b[k].sum()) for k in TOTAL_KEYS}
    else:
        # From the tables: what the insert spans loaded and failed, against the rows there.
        totals = {k: int(b[k].sum()) for k in ("received", "invalid", "duplicate", "published")}
        span_loaded, failed = int(t["span_loaded"].sum()), int(t["span_dead_lettered"].sum())
        rows = int(t["warehouse_rows"].sum())
        gap = max(totals["published"] - span_loaded - failed, 0)
        recent = int(b.filter(pl.col("recent"))["published"].sum()) if "recent" in b.columns else 0
        per_table = t.group_by("table_name").agg(pl.col("span_loaded", "warehouse_rows").sum())
        silent = int((per_table["span_loaded"] - per_table["warehouse_rows"]).clip(lower_bound=0).sum())
        over = int((per_table["warehouse_rows"] - per_table["span_loaded"]).clip(lower_bound=0).sum())
        totals |= {"warehouse_rows": rows, "span_loaded": span_loaded, "dead_lettered": failed,
                   "in_flight": min(gap, recent), "never_loaded": gap - min(gap, recent),
                   "silent_loss": silent, "over_count": over}
        totals["unexplained"] = (totals["received"] - totals["invalid"] - totals["duplicate"] - rows - failed
                                 - totals["in_flight"] - totals["never_loaded"] - silent + over)
    totals["overstated_load"] = int(loads["overstated"].sum()) if loads is not None and loads.height else 0
    return totals
