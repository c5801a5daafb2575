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
and reported, never dropped. The same comparison per table and hour covers pipelines whose
insert spans do not link to batches (the reference design's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from dqkit.db import connect_read_only
from dqkit.investigate.ledger import batch_ledger, table_ledger
from dqkit.investigate.spans import SpanData, load_spans

CLASSES = ("silent_loss", "never_loaded", "over_count", "dead_lettered", "in_flight")
TOTAL_KEYS = ("received", "invalid", "duplicate", "published", "warehouse_rows", "span_loaded", "dead_lettered",
              "in_flight", "never_loaded", "silent_loss", "over_count", "unexplained")


def _warehouse_frames(warehouse: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    con = connect_read_only(warehouse)
    try:
        con.execute("SET TimeZone = 'UTC'")
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
            "AND table_name LIKE 'events\\_%' ESCAPE '\\' ORDER BY 1").fetchall()]
        if not tables:
            empty_b = pl.DataFrame(schema={"trace_id": pl.String, "wh_batch_id": pl.String, "warehouse_rows": pl.Int64})
            empty_t = pl.DataFrame(schema={"table_name": pl.String, "hour": pl.Datetime("us", "UTC"), "warehouse_rows": pl.Int64})
            return empty_b, empty_t
        union = " UNION ALL ".join(
            f"SELECT '{t}' AS table_name, trace_id, batch_id, loaded_at FROM \"{t.replace(chr(34), chr(34) * 2)}\"" for t in tables
        )
        per_batch = con.sql(
            f"SELECT trace_id, any_value(batch_id) AS wh_batch_id, count(*)::BIGINT AS warehouse_rows FROM ({union}) GROUP BY trace_id"
        ).pl()
        per_table = con.sql(
            f"SELECT table_name, date_trunc('hour', loaded_at) AS hour, count(*)::BIGINT AS warehouse_rows FROM ({union}) GROUP BY ALL"
        ).pl()
        return per_batch, per_table
    finally:
        con.close()


@dataclass
class Reconciliation:
    batches: pl.DataFrame
    """One row per batch: ledger counts, warehouse rows and the classified differences."""
    tables: pl.DataFrame
    """Per table and hour: rows the insert spans loaded vs rows in the warehouse."""
    totals: dict[str, int]
    as_of: datetime
    flight_window: timedelta

    def findings(self) -> list[dict]:
        """One entry per kind of difference: events, batches, window and the segments hit most."""
        out = []
        for cls in CLASSES:
            hit = self.batches.filter(pl.col(cls) > 0)
            if hit.is_empty():
                continue
            seg = (hit.group_by("platform", "app_version").agg(pl.col(cls).sum()).sort(cls, "platform", "app_version",
                                                                                      descending=[True, False, False]).head(3))
            out.append({
                "class": cls,
                "events": int(hit[cls].sum()),
                "batches": hit.height,
                "window": {"start": _iso(hit["received_at"].min()), "end": _iso(hit["received_at"].max())},
                "segments": [{"platform": p, "app_version": v, "events": int(n)} for p, v, n in seg.iter_rows()],
                "tables": self._tables_for(cls),
            })
        return out

    def _tables_for(self, cls: str) -> list[str]:
        if cls not in ("silent_loss", "over_count"):
            return []
        col = "table_silent_loss" if cls == "silent_loss" else "table_over_count"
        return sorted(self.tables.filter(pl.col(col) > 0)["table_name"].unique().to_list())

    def window(self, start: datetime, end: datetime) -> Reconciliation:
        """The same reconciliation narrowed to batches received (and table-hours) in [start, end)."""
        b = self.batches.filter(pl.col("received_at").is_between(start, end, closed="left"))
        t = self.tables.filter(pl.col("hour").is_between(start, end, closed="left"))
        return Reconciliation(b, t, {k: int(b[k].sum()) for k in TOTAL_KEYS}, self.as_of, self.flight_window)

    def to_dict(self) -> dict:
        return {
            "as_of": _iso(self.as_of),
            "flight_window_s": int(self.flight_window.total_seconds()),
            "totals": self.totals,
            "balanced": self.totals["unexplained"] == 0,
            "findings": self.findings(),
        }


def _iso(t) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def reconcile(
    warehouse: str | Path,
    spans: SpanData | str | Path | list,
    as_of: datetime | None = None,
    flight_window: timedelta = timedelta(hours=1),
) -> Reconciliation:
    """Join the span ledger with warehouse counts and classify every difference.

    Args:
        warehouse: DuckDB file whose ``events_*`` tables carry ``trace_id``, ``batch_id`` and ``loaded_at``.
        spans: loaded spans, or OTLP/JSON files / telemetry folders to load.
        as_of: the moment the comparison describes; by default the end of the last span.
        flight_window: batches received this close to ``as_of`` whose events are not loaded yet
            count as in flight; older ones as never loaded.
    """
    sd = spans if isinstance(spans, SpanData) else load_spans(spans)
    ledger = batch_ledger(sd)
    wh_batch, wh_table = _warehouse_frames(warehouse)
    if as_of is None:
        end = sd.con.sql("SELECT max(end_ns) FROM spans").fetchall()[0][0]
        as_of = datetime.fromtimestamp(end / 1e9, UTC) if end is not None else datetime.now(UTC)
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
    )).with_columns(pl.col(c).cast(pl.Int64) for c in TOTAL_KEYS if c != "published").sort("received_at", "trace_id", nulls_last=True)

    spans_t = table_ledger(sd).rename({"loaded": "span_loaded", "dead_lettered": "span_dead_lettered"})
    t = spans_t.join(wh_table, on=["table_name", "hour"], how="full", coalesce=True).with_columns(
        pl.col("span_loaded", "span_dead_lettered", "warehouse_rows").fill_null(0)
    ).with_columns(
        table_silent_loss=(pl.col("span_loaded") - pl.col("warehouse_rows")).clip(lower_bound=0),
        table_over_count=(pl.col("warehouse_rows") - pl.col("span_loaded")).clip(lower_bound=0),
    ).sort("hour", "table_name")

    totals = {k: int(b[k].sum()) for k in TOTAL_KEYS}
    return Reconciliation(b, t, totals, as_of, flight_window)
