"""A mistaken clean-up job: loaded rows deleted from the warehouse after the pipeline is done.

The pipeline's own records stay as they were (``deliveries``, ``load_audit``, the spans), so the
warehouse now holds fewer rows than every record of the load says it holds: the incident a
reconciliation of spans against the warehouse exists to find. :func:`delete_rows` does the
damage and returns its ground truth, in the shape of a generator scenario's truth entry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dqkit.db import connect
from dqkit.errors import InputError
from dqkit.pipeline.warehouse import quote_ident

CAUSE = "deleted after load"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc(t: datetime, what: str) -> datetime:
    if not isinstance(t, datetime):
        raise InputError(f"delete_rows: {what}={t!r} must be a datetime")
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def delete_rows(warehouse: str | Path, start: datetime, end: datetime, *, table: str | None = None,
                platform: str | None = None) -> dict:
    """Delete the loaded rows whose event time is in ``[start, end)`` with a plain ``DELETE``.

    Args:
        warehouse: a dqkit warehouse file (written by a replay).
        start: the first event time deleted (naive times are UTC).
        end: the event time the window stops before, exclusive (naive times are UTC).
        table: one ``events_<type>`` table; default every one.
        platform: only rows of this platform.

    Returns:
        The truth entry: ``name``, ``stage`` (``warehouse``), ``kind`` (``drop``), ``cause``,
        ``segment`` (``event_type`` and ``platform`` as given), ``window``, ``events`` (rows
        deleted), ``users`` (distinct users of those rows), ``users_lost`` (user-days left with
        no loaded event, by the UTC day of the event) and ``users_lost_by_day``.

    Raises:
        InputError: the file does not exist, has no such table, or the window is empty.
        WarehouseBusyError: another process holds the warehouse (a replay is writing it).
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        raise InputError(f"delete_rows: end {_iso(end)} must be after start {_iso(start)}")
    path = Path(warehouse)
    if not path.is_file():
        raise InputError(f"warehouse {str(path)!r} does not exist; pass the DuckDB file a replay wrote")
    con = connect(path)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
            "AND table_name LIKE 'events\\_%' ESCAPE '\\' ORDER BY table_name").fetchall()]
        if table is not None:
            if table not in tables:
                raise InputError(f"warehouse {str(path)!r} has no table {table!r}; its event tables are "
                                 f"{', '.join(tables) or 'none'}")
            tables = [table]
        if not tables:
            raise InputError(f"warehouse {str(path)!r} has no events_* tables; replay a sample into it first")
        cond = "event_ts >= ? AND event_ts < ?" + (" AND platform = ?" if platform is not None else "")
        params = [start, end] + ([platform] if platform is not None else [])
        con.execute("BEGIN")
        con.execute("CREATE TEMP TABLE _deleted (user_id VARCHAR, day DATE)")
        for t in tables:
            con.execute(f"INSERT INTO _deleted SELECT user_id, (event_ts AT TIME ZONE 'UTC')::DATE FROM {quote_ident(t)} "
                        f"WHERE {cond}", params)
            con.execute(f"DELETE FROM {quote_ident(t)} WHERE {cond}", params)
        events, users = con.execute("SELECT count(*), count(DISTINCT user_id) FROM _deleted").fetchone()
        # A user-day is lost when no loaded row of that user and day is left in any event table.
        all_tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
            "AND table_name LIKE 'events\\_%' ESCAPE '\\'").fetchall()]
        everything = " UNION ALL ".join(f"SELECT user_id, (event_ts AT TIME ZONE 'UTC')::DATE AS day FROM {quote_ident(t)}"
                                        for t in all_tables)
        lost = con.execute(f"SELECT day, count(*) FROM (SELECT DISTINCT user_id, day FROM _deleted "
                           f"EXCEPT SELECT user_id, day FROM ({everything})) GROUP BY day ORDER BY day").fetchall()
        con.execute("DROP TABLE _deleted")
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")  # undo a half-done clean-up (no-op error if none began)
        except duckdb.Error:
            pass
        raise
    finally:
        con.close()
    segment = {**({"event_type": tables[0].removeprefix("events_")} if table is not None else {}),
               **({"platform": platform} if platform is not None else {})}
    spec = ",".join([f"start={_iso(start)}", f"end={_iso(end)}"] + ([f"table={table}"] if table else [])
                    + ([f"platform={platform}"] if platform else []))
    return {
        "name": "delete_rows", "spec": f"delete_rows:{spec}", "stage": "warehouse", "kind": "drop", "cause": CAUSE,
        "segment": segment, "window": {"start": _iso(start), "end": _iso(end)},
        "events": int(events), "users": int(users), "users_lost": int(sum(n for _, n in lost)),
        "users_lost_by_day": {str(d): int(n) for d, n in lost},
    }
