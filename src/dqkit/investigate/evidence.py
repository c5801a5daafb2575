"""The evidence layer: any source's warehouse and telemetry as one set of relations.

:func:`open_evidence` attaches a warehouse (read-only) and, when given, a span export (and the
metrics beside it) to one DuckDB connection, and defines the relations every investigation
reads — ledger, reconcile, lag, DAU, diagnose and explain know nothing else about sources:

============== ===========================================================================
relation       one row per
============== ===========================================================================
ev_events      loaded warehouse row, canonical columns (NULL where the source lacks one)
ev_rejected    quarantined event (empty when the source has no quarantine table)
ev_deliveries  delivered batch with its ledger counts (empty without a delivery ledger)
ev_batches     batch from its ingest span: received, invalid, duplicate, published, enriched,
               loaded, dead-lettered (NULL where the spans cannot say), with client segment
ev_inserts     table insert from insert spans (with or without links) or the load audit
ev_enrich      hour and event type: events enriched, geo resolved or not, profile hits/misses
metric_points  exported metric data point (see :mod:`dqkit.investigate.metrics`)
============== ===========================================================================

Every figure knows its origin (:attr:`Evidence.origins`), and what cannot be known is said in
one sentence each (:meth:`Evidence.missing`), never shown as 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from dqkit import names as N
from dqkit.db import attach_read_only
from dqkit.errors import InputError
from dqkit.investigate import metrics as M
from dqkit.investigate.source import EVENT_COLUMNS, SOURCE_HELP, Source, base_tables, event_tables, resolve, with_columns_present
from dqkit.investigate.spans import SpanData, load_spans

REJECTED_COLUMNS: dict[str, str] = {
    "event_id": "VARCHAR", "user_id": "VARCHAR", "event_type": "VARCHAR", "event_ts": "TIMESTAMPTZ",
    "received_at": "TIMESTAMPTZ", "platform": "VARCHAR", "app_version": "VARCHAR", "sdk_version": "VARCHAR",
    "batch_id": "VARCHAR", "trace_id": "VARCHAR", "stage": "VARCHAR", "reason": "VARCHAR", "detail": "VARCHAR",
    "raw": "VARCHAR", "duplicate_of_batch": "VARCHAR", "duplicate_of_trace": "VARCHAR",
}
DELIVERY_COLUMNS: dict[str, str] = {
    "trace_id": "VARCHAR", "batch_id": "VARCHAR", "line_no": "BIGINT", "format": "VARCHAR", "received_at": "TIMESTAMPTZ",
    "platform": "VARCHAR", "app_version": "VARCHAR", "sdk_version": "VARCHAR", "received": "BIGINT", "invalid": "BIGINT",
    "duplicate": "BIGINT", "published": "BIGINT", "loaded": "BIGINT", "dead_lettered": "BIGINT", "in_flight": "BIGINT",
}
SPAN_TABLES = ("spans", "span_links", "span_events")

_INT = "try_cast(attrs['{}'] AS BIGINT)"


def _empty(columns: dict[str, str]) -> str:
    return "SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in columns.items()) + " WHERE false"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@dataclass
class Evidence:
    """One connection holding the warehouse (as ``wh``) and the telemetry, with the ``ev_*`` relations."""

    con: duckdb.DuckDBPyConnection
    source: Source
    tables: list[str]
    spans: SpanData | None = None
    metric_points: int = 0
    origins: dict[str, str] = field(default_factory=dict)
    """Figure (``invalid``, ``loaded``, ``lag``, ...) to where it comes from."""

    # ------------------------------------------------------------------ facts about the source
    @property
    def has_spans(self) -> bool:
        """A span export was given."""
        return self.spans is not None

    @property
    def has_quarantine(self) -> bool:
        """The source keeps a quarantine table of rejected events."""
        return self.source.quarantine is not None

    @property
    def has_deliveries(self) -> bool:
        """The source keeps a per-delivery ledger (dqkit's ``deliveries``)."""
        return self.source.deliveries is not None

    @property
    def has_row_traces(self) -> bool:
        """The source's rows carry the ingest trace id (rows join to their batch's spans)."""
        return self.source.has("trace_id")

    @property
    def has_links(self) -> bool:
        """Insert spans that link to the batches they carried, with per-batch row counts."""
        return self.has_spans and has_links(self.con)

    def missing(self) -> list[str]:
        """One sentence per thing this source and telemetry cannot tell."""
        out = self.source.missing()
        if not self.has_spans:
            out.append("no span export: what happened before the warehouse (validation, dedup, inserts) is unknown")
        elif self.has_spans and not self.has_links and self.scalar(f"SELECT count(*) FROM spans WHERE name = '{N.INSERT}'"):
            out.append("insert spans do not link to batches: loads are known per table and hour, not per batch")
        if self.has_spans and self.batch_enrich_unknown():
            out.append("enrich spans are not part of the batches' traces: enrichment is known per hour and event type, not per batch")
        if self.has_spans and not self.metric_points:
            out.append("no metrics export beside the spans: the lag histogram and rejection counters are not used")
        return out

    def scalar(self, sql: str, params: list | None = None):
        """The first value of a query's first row."""
        return self.con.execute(sql, params or []).fetchall()[0][0]

    def sql(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """A query's result as a Polars frame."""
        return self.con.sql(sql, params=params).pl() if params else self.con.sql(sql).pl()

    def batch_enrich_unknown(self) -> bool:
        """Enrich spans exist but none shares a trace with an ingest span (the article's per-event form)."""
        return not self.has_spans or enrich_unknown(self.con)

    def close(self) -> None:
        """Detach the warehouse; close the connection unless it is the spans' own."""
        try:
            self.con.execute("DETACH wh")
        except duckdb.Error:
            pass
        if self.spans is None:
            self.con.close()


def open_evidence(warehouse: str | Path, spans: SpanData | str | Path | list | None = None,
                  source: Source | str | Path | None = None) -> Evidence:
    """Attach ``warehouse`` (and load ``spans`` with the metrics beside them) and define the relations."""
    sd: SpanData | None
    if spans is None or (isinstance(spans, (list, tuple)) and not spans):
        sd = None
    elif isinstance(spans, SpanData):
        sd = spans
    else:
        sd = load_spans(spans)
    con = sd.con if sd is not None else duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute("DETACH DATABASE IF EXISTS wh")
        attach_read_only(con, warehouse, "wh")
        src = resolve(source, con)
        tables = event_tables(src, con)
        if not tables:
            have = ", ".join(sorted(base_tables(con))[:12]) or "no tables"
            raise InputError(f"warehouse {str(warehouse)!r} has no event tables for source {src.name!r} "
                             f"(it has {have}); pass {SOURCE_HELP}")
        src = with_columns_present(src, con, tables)
        ev = Evidence(con, src, tables, sd)
        _define_warehouse(ev)
        if sd is not None:
            define_span_relations(con)
            ev.metric_points = M.load_metrics(con, M.metric_files(list(sd.files)))
        else:
            for name, cols in (("ev_batches", _BATCH_COLUMNS), ("ev_inserts", _INSERT_COLUMNS), ("ev_enrich", _ENRICH_COLUMNS)):
                con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {_empty(cols)}")
            M.load_metrics(con, [])
        M.deltas(con)
        _origins(ev)
        return ev
    except BaseException:
        try:
            con.execute("DETACH DATABASE IF EXISTS wh")
        except duckdb.Error:
            pass
        if sd is None:
            con.close()
        raise


# --------------------------------------------------------------------------- warehouse side
def _event_select(ev: Evidence, table: str, present: set[str]) -> str:
    cols = []
    for canon, typ in EVENT_COLUMNS.items():
        expr = ev.source.columns.get(canon)
        if expr is not None and expr.strip('"').isidentifier() and expr.strip('"') not in present:
            expr = None
        if canon == "event_type":
            suffix = f"regexp_replace({_lit(table)}, '^events_', '')"
            expr = f"coalesce({ev.source.event_type or expr or 'NULL'}, {suffix})" if (ev.source.event_type or expr) else suffix
        cols.append(f"TRY_CAST({expr} AS {typ}) AS {canon}" if expr else f"NULL::{typ} AS {canon}")
    return f"SELECT {_lit(table)} AS table_name, {', '.join(cols)} FROM wh.main.{_q(table)}"


def _define_warehouse(ev: Evidence) -> None:
    con, src = ev.con, ev.source
    present = base_tables(con)
    body = " UNION ALL ".join(_event_select(ev, t, present.get(t, set())) for t in ev.tables)
    con.execute(f"CREATE OR REPLACE TEMP VIEW ev_events AS {body}")
    q = src.quarantine
    if q is not None:
        qcols = present.get(q.table, set())
        sel = []
        for canon, typ in REJECTED_COLUMNS.items():
            expr = q.columns.get(canon, canon if canon in qcols else None)
            if canon == "user_id" and "raw" in qcols:
                # Quarantined rows from before rejected_events.user_id: take it from the raw payload.
                raw_user = "coalesce(json_extract_string(raw, '$.user_id'), json_extract_string(raw, '$.userId'))"
                expr = f"coalesce({expr}, {raw_user})" if expr else raw_user
            sel.append(f"TRY_CAST({expr} AS {typ}) AS {canon}" if expr else f"NULL::{typ} AS {canon}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW ev_rejected AS SELECT {', '.join(sel)} FROM wh.main.{_q(q.table)}")
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW ev_rejected AS {_empty(REJECTED_COLUMNS)}")
    if src.deliveries is not None:
        dcols = present.get(src.deliveries, set())
        sel = [f"{c}::{t} AS {c}" if c in dcols else f"NULL::{t} AS {c}" for c, t in DELIVERY_COLUMNS.items()]
        con.execute(f"CREATE OR REPLACE TEMP VIEW ev_deliveries AS SELECT {', '.join(sel)} FROM wh.main.{_q(src.deliveries)}")
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW ev_deliveries AS {_empty(DELIVERY_COLUMNS)}")
    if src.audit is not None:
        con.execute(f"CREATE OR REPLACE TEMP VIEW ev_audit AS SELECT * FROM wh.main.{_q(src.audit)}")


# --------------------------------------------------------------------------- span side
_BATCH_COLUMNS = {
    "trace_id": "VARCHAR", "batch_id": "VARCHAR", "received_at": "TIMESTAMPTZ", "platform": "VARCHAR",
    "app_version": "VARCHAR", "sdk_version": "VARCHAR", "country": "VARCHAR", "received": "BIGINT", "invalid": "BIGINT",
    "duplicate": "BIGINT", "published": "BIGINT", "enriched": "BIGINT", "loaded": "BIGINT", "dead_lettered": "BIGINT",
}
_INSERT_COLUMNS = {
    "table_name": "VARCHAR", "start_at": "TIMESTAMPTZ", "end_at": "TIMESTAMPTZ", "row_count": "BIGINT",
    "success": "BOOLEAN", "load_trace_id": "VARCHAR", "span_id": "VARCHAR", "total_loaded": "BIGINT", "origin": "VARCHAR",
}
_ENRICH_COLUMNS = {
    "hour": "TIMESTAMPTZ", "event_type": "VARCHAR", "enriched": "BIGINT", "geo_resolved": "BIGINT",
    "geo_unresolved": "BIGINT", "profile_hits": "BIGINT", "profile_misses": "BIGINT", "per_event": "BOOLEAN",
}


def has_links(con: duckdb.DuckDBPyConnection) -> bool:
    """Insert spans link to the batches they carried, with per-batch row counts (dqkit's form)."""
    return bool(con.execute(f"SELECT count(*) FROM span_links WHERE name = '{N.INSERT}' "
                            f"AND attrs['{N.INSERT_ROW_COUNT}'] IS NOT NULL").fetchall()[0][0])


def enrich_unknown(con: duckdb.DuckDBPyConnection) -> bool:
    """Enrich spans exist but none shares a trace with an ingest span (the article's per-event form)."""
    return bool(con.execute(f"""
        SELECT count(*) > 0 AND count(*) FILTER (WHERE trace_id IN (SELECT trace_id FROM spans WHERE name = '{N.INGEST}')) = 0
        FROM spans WHERE name = '{N.ENRICH}'""").fetchall()[0][0])


def define_span_relations(con: duckdb.DuckDBPyConnection) -> None:
    """``ev_batches``, ``ev_inserts`` and ``ev_enrich`` from the span tables on ``con``."""
    # A success attribute that is missing is not a success: such rows are not counted as loaded.
    ok = f"coalesce(lower(s.attrs['{N.INSERT_SUCCESS}']) = 'true', false)"
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE ev_inserts AS
    SELECT s.attrs['{N.TABLE_NAME}'] AS table_name, make_timestamptz(s.start_ns // 1000) AS start_at,
           make_timestamptz(s.end_ns // 1000) AS end_at, try_cast(s.attrs['{N.INSERT_ROW_COUNT}'] AS BIGINT) AS row_count,
           {ok} AS success, s.trace_id AS load_trace_id, s.span_id,
           try_cast(p.attrs['{N.TOTAL_LOADED}'] AS BIGINT) AS total_loaded, 'spans' AS origin
    FROM spans s LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id AND p.name = '{N.LOAD}'
    WHERE s.name = '{N.INSERT}'
    """)
    # Per-batch figures. Enrichment counts per batch only when enrich spans continue the batch's
    # trace (dqkit's form); per-event enrich spans in traces of their own leave it unknown.
    enrich_known = not enrich_unknown(con)
    links = has_links(con)
    no_inserts = not con.execute(f"SELECT count(*) FROM spans WHERE name = '{N.INSERT}'").fetchall()[0][0]
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE ev_batches AS
    WITH ingest AS (
        SELECT trace_id, attrs['{N.BATCH_ID}'] AS batch_id, start_ns,
               {_INT.format(N.BATCH_EVENT_COUNT)} AS received, {_INT.format(N.INGESTION_ACCEPTED)} AS accepted,
               {_INT.format(N.INGESTION_REJECTED)} AS rejected,
               coalesce(attrs['{N.CLIENT_PLATFORM}'], 'unknown') AS platform,
               coalesce(attrs['{N.CLIENT_APP_VERSION}'], 'unknown') AS app_version,
               coalesce(attrs['{N.CLIENT_SDK_VERSION}'], 'unknown') AS sdk_version
        FROM spans WHERE name = '{N.INGEST}'
    ),
    stage AS (
        SELECT trace_id,
               sum({_INT.format(N.INVALID_COUNT)}) FILTER (WHERE name = '{N.VALIDATE}') AS invalid,
               sum({_INT.format(N.DEDUP_REMOVED)}) FILTER (WHERE name = '{N.DEDUP}') AS duplicate,
               sum({_INT.format(N.QUEUE_PUBLISHED)}) FILTER (WHERE name = '{N.PUBLISH}') AS published,
               sum(coalesce({_INT.format(N.EVENT_COUNT)}, 1)) FILTER (WHERE name = '{N.ENRICH}') AS enriched,
               any_value(attrs['{N.GEO_COUNTRY}']) FILTER (WHERE name = '{N.ENRICH_GEO}') AS country
        FROM spans WHERE name IN ('{N.VALIDATE}', '{N.DEDUP}', '{N.PUBLISH}', '{N.ENRICH}', '{N.ENRICH_GEO}')
          AND trace_id IN (SELECT trace_id FROM ingest)
        GROUP BY trace_id
    ),
    inserted AS (
        SELECT l.link_trace_id AS trace_id,
               sum(CASE WHEN {ok} THEN try_cast(l.attrs['{N.INSERT_ROW_COUNT}'] AS BIGINT) ELSE 0 END)::BIGINT AS loaded,
               sum(CASE WHEN {ok} THEN 0 ELSE try_cast(l.attrs['{N.INSERT_ROW_COUNT}'] AS BIGINT) END)::BIGINT AS dead_lettered
        FROM span_links l JOIN spans s USING (trace_id, span_id)
        WHERE l.name = '{N.INSERT}' AND s.name = '{N.INSERT}' AND l.attrs['{N.INSERT_ROW_COUNT}'] IS NOT NULL
        GROUP BY ALL
    )
    SELECT i.trace_id, i.batch_id, make_timestamptz(i.start_ns // 1000) AS received_at,
           i.platform, i.app_version, i.sdk_version, coalesce(s.country, 'unknown') AS country, i.received,
           coalesce(s.invalid, i.rejected - coalesce(s.duplicate, 0), 0)::BIGINT AS invalid,
           coalesce(s.duplicate, 0)::BIGINT AS duplicate,
           coalesce(s.published, i.accepted, i.received - coalesce(s.invalid, 0) - coalesce(s.duplicate, 0))::BIGINT AS published,
           CASE WHEN {enrich_known} THEN coalesce(s.enriched, 0) END::BIGINT AS enriched,
           CASE WHEN {links or no_inserts} THEN coalesce(n.loaded, 0) END::BIGINT AS loaded,
           CASE WHEN {links or no_inserts} THEN coalesce(n.dead_lettered, 0) END::BIGINT AS dead_lettered
    FROM ingest i LEFT JOIN stage s USING (trace_id) LEFT JOIN inserted n USING (trace_id)
    ORDER BY i.start_ns, i.trace_id
    """)
    # Enrichment per hour and event type, from either form: a per-event span says true/false,
    # a per-batch span carries counts.
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE ev_enrich AS
    WITH e AS (SELECT trace_id, span_id, start_ns, attrs FROM spans WHERE name = '{N.ENRICH}'),
    kids AS (
        SELECT c.trace_id, c.parent_span_id AS span_id,
               any_value(c.attrs['{N.GEO_RESOLVED}']) FILTER (WHERE c.name = '{N.ENRICH_GEO}') AS geo,
               any_value(c.attrs['{N.GEO_UNRESOLVED}']) FILTER (WHERE c.name = '{N.ENRICH_GEO}') AS geo_un,
               any_value(c.attrs['{N.PROFILE_CACHE_HIT}']) FILTER (WHERE c.name = '{N.ENRICH_PROFILE}') AS hit,
               any_value(c.attrs['profile.cache_miss']) FILTER (WHERE c.name = '{N.ENRICH_PROFILE}') AS miss
        FROM spans c WHERE c.name IN ('{N.ENRICH_GEO}', '{N.ENRICH_PROFILE}') GROUP BY ALL
    ),
    per AS (
        SELECT date_trunc('hour', make_timestamptz(e.start_ns // 1000)) AS hour,
               CASE WHEN e.attrs['{N.EVENT_COUNT}'] IS NULL THEN coalesce(e.attrs['{N.EVENT_TYPE}'], 'unknown') ELSE 'all' END AS event_type,
               coalesce(try_cast(e.attrs['{N.EVENT_COUNT}'] AS BIGINT), 1) AS n,
               e.attrs['{N.EVENT_COUNT}'] IS NULL AS per_event,
               CASE WHEN lower(k.geo) = 'true' THEN 1 WHEN lower(k.geo) = 'false' THEN 0 ELSE try_cast(k.geo AS BIGINT) END AS geo_ok,
               CASE WHEN lower(k.geo) = 'true' THEN 0 WHEN lower(k.geo) = 'false' THEN 1 ELSE try_cast(k.geo_un AS BIGINT) END AS geo_bad,
               CASE WHEN lower(k.hit) = 'true' THEN 1 WHEN lower(k.hit) = 'false' THEN 0 ELSE try_cast(k.hit AS BIGINT) END AS hits,
               CASE WHEN lower(k.hit) = 'true' THEN 0 WHEN lower(k.hit) = 'false' THEN 1 ELSE try_cast(k.miss AS BIGINT) END AS misses
        FROM e LEFT JOIN kids k USING (trace_id, span_id)
    )
    SELECT hour, event_type, sum(n)::BIGINT AS enriched, sum(geo_ok)::BIGINT AS geo_resolved,
           sum(geo_bad)::BIGINT AS geo_unresolved, sum(hits)::BIGINT AS profile_hits, sum(misses)::BIGINT AS profile_misses,
           bool_and(per_event) AS per_event
    FROM per GROUP BY ALL ORDER BY hour, event_type
    """)


def _origins(ev: Evidence) -> None:
    o = ev.origins
    spans = "spans" if ev.has_spans else None
    o["received"] = "deliveries" if ev.has_deliveries else (spans or "unknown")
    o["invalid"] = "quarantine" if ev.has_quarantine else (spans or "unknown")
    o["duplicate"] = "quarantine" if ev.has_quarantine else (spans or "unknown")
    o["published"] = spans or ("deliveries" if ev.has_deliveries else "unknown")
    o["enriched"] = ("spans (per batch)" if not ev.batch_enrich_unknown() else "spans (per hour)") if ev.has_spans else "unknown"
    o["loaded"] = "warehouse rows"
    o["dead_lettered"] = "quarantine" if ev.has_quarantine else ("insert spans" if ev.has_spans else "unknown")
    o["inserts"] = "insert spans" if ev.has_spans else ("load audit" if ev.source.audit else "unknown")
    o["lag"] = ("warehouse load times" if ev.source.has("loaded_at")
                else ("lag metric" if ev.metric_points else "unknown"))
    o["in_flight"] = "deliveries" if ev.has_deliveries else (spans or "unknown")
