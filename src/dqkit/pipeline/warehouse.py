"""The DuckDB warehouse: event tables by type, quarantine, audit, and the pipeline's state.

Writes go through one transaction per chunk (events, rejects, deliveries, audit and state
together), so a crash leaves either all of a chunk or none of it, and ``deliveries`` tells a
re-run which input it has already loaded. Table names come from validated event types and are
quoted anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl

from dqkit.db import connect
from dqkit.errors import WarehouseError
from dqkit.events.schema import is_valid_event_type

EVENT_COLUMNS: dict[str, str] = {
    "event_id": "VARCHAR", "event_type": "VARCHAR", "user_id": "VARCHAR",
    "event_ts": "TIMESTAMPTZ", "received_at": "TIMESTAMPTZ", "loaded_at": "TIMESTAMPTZ",
    "batch_id": "VARCHAR", "trace_id": "VARCHAR", "platform": "VARCHAR", "app_version": "VARCHAR",
    "sdk_version": "VARCHAR", "geo_country": "VARCHAR", "geo_region": "VARCHAR", "geo_city": "VARCHAR",
    "user_country": "VARCHAR", "user_segment": "VARCHAR", "account_age_days": "INTEGER",
    "session_id": "VARCHAR", "session_event_number": "BIGINT", "properties": "VARCHAR",
}

REJECTED_COLUMNS: dict[str, str] = {
    "event_id": "VARCHAR", "batch_id": "VARCHAR", "trace_id": "VARCHAR", "delivery_key": "VARCHAR",
    "user_id": "VARCHAR", "stage": "VARCHAR", "reason": "VARCHAR", "detail": "VARCHAR", "event_type": "VARCHAR",
    "platform": "VARCHAR", "app_version": "VARCHAR", "sdk_version": "VARCHAR",
    "received_at": "TIMESTAMPTZ", "event_ts": "TIMESTAMPTZ", "duplicate_of_batch": "VARCHAR",
    "duplicate_of_trace": "VARCHAR", "raw": "VARCHAR", "run_id": "VARCHAR",
}

DELIVERY_COLUMNS: dict[str, str] = {
    "delivery_key": "VARCHAR", "batch_id": "VARCHAR", "trace_id": "VARCHAR", "line_no": "BIGINT",
    "format": "VARCHAR", "received_at": "TIMESTAMPTZ", "platform": "VARCHAR", "app_version": "VARCHAR",
    "sdk_version": "VARCHAR", "received": "BIGINT", "invalid": "BIGINT", "duplicate": "BIGINT",
    "published": "BIGINT", "loaded": "BIGINT", "dead_lettered": "BIGINT", "in_flight": "BIGINT",
    "run_id": "VARCHAR",
}

LOAD_AUDIT_COLUMNS: dict[str, str] = {
    "load_id": "VARCHAR", "table_name": "VARCHAR", "row_count": "BIGINT", "success": "BOOLEAN",
    "attempts": "INTEGER", "duration_ms": "DOUBLE", "started_at": "TIMESTAMPTZ", "loaded_at": "TIMESTAMPTZ",
    "batch_ids": "VARCHAR[]", "trace_ids": "VARCHAR[]", "load_trace_id": "VARCHAR", "span_id": "VARCHAR",
    "error": "VARCHAR", "run_id": "VARCHAR",
}

_STATE_TABLES = {
    "session_state": {"user_id": "VARCHAR", "last_ts": "TIMESTAMPTZ", "session_id": "VARCHAR", "session_events": "BIGINT"},
    "telemetry_chunks": {"chunk_id": "VARCHAR", "run_id": "VARCHAR"},
    "runs": {"run_id": "VARCHAR", "sample": "VARCHAR", "started_at": "TIMESTAMPTZ", "finished_at": "TIMESTAMPTZ",
             "received": "BIGINT", "loaded": "BIGINT", "invalid": "BIGINT", "duplicate": "BIGINT",
             "dead_lettered": "BIGINT", "in_flight": "BIGINT", "skipped_deliveries": "BIGINT", "faults": "VARCHAR"},
}


# The ids deduplication remembers are those of every event that got past it: loaded, or
# dead-lettered by a failed insert. They are read from those rows rather than kept a second time
# (which cost a write of four columns per event: ~7% of a 1M-event replay).
# (The empty typed row keeps the view's columns when an events table lacks one.)
_DEDUP_STATE = """
SELECT event_id, batch_id, trace_id, received_at FROM (
    SELECT NULL::VARCHAR AS event_id, NULL::VARCHAR AS batch_id, NULL::VARCHAR AS trace_id,
           NULL::TIMESTAMPTZ AS received_at WHERE false
    UNION ALL BY NAME SELECT * FROM events)
UNION ALL
SELECT event_id, batch_id, trace_id, received_at FROM rejected_events WHERE stage = 'warehouse.insert'
"""


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def table_for(event_type: str) -> str:
    """The table an event type loads into; refuses names that did not pass validation."""
    if not is_valid_event_type(event_type):
        raise WarehouseError(f"event type {event_type!r} cannot name a table")
    return f"events_{event_type}"


def _ddl(name: str, cols: dict[str, str]) -> str:
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(name)} (" + ", ".join(f"{quote_ident(c)} {t}" for c, t in cols.items()) + ")"


@dataclass
class InsertOutcome:
    """How one table insert went: rows, success, attempts, time and the last error."""

    table: str
    rows: int
    success: bool
    attempts: int
    duration_ms: float
    error: str | None


class Warehouse:
    """A DuckDB warehouse file opened for writing."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the warehouse file at ``path`` and its tables."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.path)
        self._tables: set[str] | None = None  # event tables known to exist (None: ask DuckDB)
        # Each checkpoint compresses the rows written since the last one and rewrites every
        # table's partly filled last row group, so frequent ones redo work: on a 1M-event
        # replay, 512 MB of WAL between checkpoints took commits from 6.7 to 3.1 s (medians
        # of 3 pairs) against 128 MB, and a 10M-event replay's peak RSS rose by only 9 MB
        # (DuckDB's own memory stays capped below).
        self.con.execute("SET checkpoint_threshold = '512MB'")
        # DuckDB would cache up to 80% of RAM; a replay needs its memory for the chunks in flight.
        self.con.execute("SET memory_limit = '256MB'")
        self._create()

    def _create(self) -> None:
        for name, cols in {"rejected_events": REJECTED_COLUMNS, "deliveries": DELIVERY_COLUMNS,
                           "load_audit": LOAD_AUDIT_COLUMNS, **_STATE_TABLES}.items():
            self.con.execute(_ddl(name, cols))
            # A warehouse written by an older dqkit gains the newer columns (empty for old rows).
            for col, typ in cols.items():
                self.con.execute(f"ALTER TABLE {quote_ident(name)} ADD COLUMN IF NOT EXISTS {quote_ident(col)} {typ}")
        # Older warehouses kept a copy of every remembered id; it is a view of the rows now.
        if self.con.execute("SELECT 1 FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'dedup_state' "
                            "AND database_name = current_database()").fetchall():
            self.con.execute("DROP TABLE dedup_state")
        self.refresh_events_view()
        self.con.execute(f"CREATE OR REPLACE VIEW dedup_state AS {_DEDUP_STATE}")

    def event_tables(self) -> list[str]:
        """The ``events_<type>`` tables, by name."""
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE' AND table_name LIKE 'events\\_%' ESCAPE '\\' ORDER BY table_name"
        ).fetchall()
        return [r[0] for r in rows]

    def refresh_events_view(self) -> None:
        """Point the ``events`` view at every event table (typed and empty when there is none)."""
        tables = self.event_tables()
        if tables:
            body = " UNION ALL BY NAME ".join(f"SELECT * FROM {quote_ident(t)}" for t in tables)
        else:
            body = "SELECT " + ", ".join(f"NULL::{t} AS {quote_ident(c)}" for c, t in EVENT_COLUMNS.items()) + " WHERE false"
        self.con.execute(f"CREATE OR REPLACE VIEW events AS {body}")

    # -- state ---------------------------------------------------------------------------
    def read(self, sql: str) -> pl.DataFrame:
        """``sql``'s result as a frame."""
        return self.con.sql(sql).pl()

    def read_batches(self, sql: str, rows: int = 1_000_000, params: list | None = None) -> Iterator[pl.DataFrame]:
        """``sql``'s result in frames of at most ``rows`` rows (large state, bounded memory)."""
        reader = self.con.sql(sql, params=params).to_arrow_reader(rows)
        for batch in reader:
            yield pl.from_arrow(batch)

    def remembered_ids(self, window: timedelta) -> Iterator[pl.DataFrame]:
        """The ids deduplication must remember: those that got past it within ``window`` of the
        latest arrival on record (ids without an arrival time are always remembered)."""
        return self.read_batches(
            "SELECT event_id, batch_id, trace_id, received_at FROM dedup_state WHERE received_at IS NULL "
            "OR received_at >= (SELECT max(received_at) FROM deliveries) - ?::INTERVAL", params=[window])

    def known_deliveries(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` in the ``deliveries`` table."""
        if not keys:
            return set()
        df = pl.DataFrame({"delivery_key": keys})
        self.con.register("_keys", df.to_arrow())
        try:
            rows = self.con.execute("SELECT d.delivery_key FROM deliveries d JOIN _keys USING (delivery_key)").fetchall()
        finally:
            self.con.unregister("_keys")
        return {r[0] for r in rows}

    # -- writes --------------------------------------------------------------------------
    def begin(self) -> None:
        """Open the chunk's transaction."""
        self.con.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        """Commit the chunk's transaction."""
        self.con.execute("COMMIT")

    def rollback(self) -> None:
        """Roll the chunk's transaction back (and forget tables it created)."""
        self.con.execute("ROLLBACK")
        self._tables = None  # tables created in the rolled-back transaction are gone

    def append(self, table: str, frame: pl.DataFrame, columns: dict[str, str]) -> None:
        """Append ``frame`` (columns by name) to ``table``, through Arrow."""
        if frame.is_empty():
            return
        self.con.register("_append", frame.select(list(columns)).to_arrow())
        try:
            self.con.execute(f"INSERT INTO {quote_ident(table)} BY NAME SELECT * FROM _append")
        finally:
            try:
                self.con.unregister("_append")
            except duckdb.Error:
                # A failed insert aborted the transaction, which refuses even this; raising here
                # would hide the insert's own error (the next append registers the name again).
                pass

    def upsert_sessions(self, changed: pl.DataFrame) -> None:
        """Replace the session state of the users in ``changed``."""
        if changed.is_empty():
            return
        self.con.register("_sess", changed.to_arrow())
        try:
            self.con.execute("DELETE FROM session_state WHERE user_id IN (SELECT user_id FROM _sess)")
            self.con.execute("INSERT INTO session_state BY NAME SELECT * FROM _sess")
        finally:
            self.con.unregister("_sess")

    def insert_events(
        self,
        table: str,
        frame: pl.DataFrame,
        attempts: int = 3,
        fail: Callable[[str, int], str | None] | None = None,
    ) -> InsertOutcome:
        """Insert one table's rows, in the open transaction.

        ``fail(table, attempt)`` lets a replay inject failures: it returns an error text to fail
        that attempt, and the insert is tried again (at once: the replay clock does not wait),
        up to ``attempts`` times; an outcome with ``success=False`` tells the caller to
        dead-letter the rows. A real DuckDB error is not retried here: DuckDB has aborted the
        transaction, so it raises :class:`InsertAborted` on the first one and the caller redoes
        the chunk (see :func:`dqkit.pipeline.load.insert_all`).

        Raises:
            InsertAborted: DuckDB failed the insert (the transaction must be rolled back).
        """
        if self._tables is None:
            self._tables = set(self.event_tables())
        if table not in self._tables:
            self.con.execute(_ddl(table, EVENT_COLUMNS))
            self.refresh_events_view()
            self._tables.add(table)
        error = None
        t0 = time.perf_counter()
        for attempt in range(1, attempts + 1):
            error = fail(table, attempt) if fail else None
            if error is None:
                try:
                    self.append(table, frame, EVENT_COLUMNS)
                    return InsertOutcome(table, frame.height, True, attempt, (time.perf_counter() - t0) * 1000, None)
                except duckdb.Error as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    raise InsertAborted(table, error) from exc
        return InsertOutcome(table, frame.height, False, attempts, (time.perf_counter() - t0) * 1000, error)

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        self.con.close()


class InsertAborted(WarehouseError):
    """A real insert error: DuckDB aborts the transaction, so the chunk must be redone."""

    def __init__(self, table: str, error: str) -> None:
        super().__init__(f"insert into {table} failed: {error}")
        self.table = table
        self.error = error
