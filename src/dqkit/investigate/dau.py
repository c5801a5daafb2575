"""Daily active users three ways, and where the users the pipeline lost went.

* **warehouse** DAU: distinct users with a loaded event stamped that day (UTC);
* **received** DAU: distinct users of everything the pipeline received for that day — loaded,
  rejected as invalid, removed as duplicate, dead-lettered (rejected events without a usable
  timestamp, and every event rejected as invalid, count on the day they arrived);
* **expected late**: users still to arrive, estimated from how late the baseline day's users
  arrived relative to the same cut-off (unknown, and 0, where rows carry no load time).

The views read the evidence layer, so any source works; without a quarantine table the
received DAU is the warehouse DAU, and losses known only from spans are added by
:mod:`dqkit.investigate.diagnose`.

A user is *lost at a stage* when everything they sent that day was rejected and at least one
rejection happened at that stage (the first stage in pipeline order wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from dqkit.investigate.evidence import Evidence, open_evidence
from dqkit.names import event_day_sql

STAGE_ORDER = ("validate", "dedup", "warehouse.insert")

_ACTIVITY = f"""
CREATE OR REPLACE TEMP VIEW activity AS
SELECT user_id, event_id, event_ts, received_at, loaded_at, 'loaded' AS outcome, NULL AS stage, platform, app_version,
       sdk_version, event_type, coalesce(country, 'unknown') AS country, geo_country, user_country, batch_id, trace_id,
       NULL AS duplicate_of_trace, table_name
FROM ev_events
UNION ALL BY NAME
SELECT user_id, event_id, event_ts, received_at, NULL AS loaded_at, 'rejected' AS outcome, stage, platform,
       app_version, sdk_version, event_type, 'unknown' AS country, NULL AS geo_country, NULL AS user_country, batch_id, trace_id,
       duplicate_of_trace, NULL AS table_name
FROM ev_rejected WHERE user_id IS NOT NULL;
CREATE OR REPLACE TEMP VIEW activity_day AS
SELECT *, {event_day_sql()} AS day FROM activity;
"""


@dataclass
class DayCounts:
    day: date
    warehouse: int
    received: int
    lost_by_stage: dict[str, int]


def open_activity(warehouse: str | Path | Evidence, spans=None, source=None) -> Evidence:
    """The evidence layer with the ``activity`` and ``activity_day`` views over loaded and
    quarantined events (quarantined ones only where the source keeps a quarantine table)."""
    ev = warehouse if isinstance(warehouse, Evidence) else open_evidence(warehouse, spans, source)
    ev.con.execute(_ACTIVITY)
    return ev


def day_counts(con: duckdb.DuckDBPyConnection, day: date) -> DayCounts:
    con = getattr(con, "con", con)  # an Evidence from open_activity, or its connection
    wh, rec = con.execute(
        "SELECT count(DISTINCT user_id) FILTER (WHERE outcome = 'loaded'), count(DISTINCT user_id) FROM activity_day WHERE day = ?",
        [day]).fetchall()[0]
    lost = lost_users(con, day)
    counts = {s: 0 for s in STAGE_ORDER}
    for s, n in lost.group_by("stage").len().iter_rows():
        counts[s] = n
    return DayCounts(day, wh, rec, counts)


def lost_users(con: duckdb.DuckDBPyConnection, day: date) -> pl.DataFrame:
    """Users of ``day`` with nothing loaded, with the first stage that rejected them."""
    con = getattr(con, "con", con)
    order = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(STAGE_ORDER))
    return con.sql(f"""
        SELECT user_id, arg_min(stage, CASE stage {order} ELSE 99 END) AS stage
        FROM activity_day WHERE day = ?
        GROUP BY user_id HAVING count(*) FILTER (WHERE outcome = 'loaded') = 0
    """, params=[day]).pl()


def expected_late(con: duckdb.DuckDBPyConnection, day: date, baseline: date) -> int:
    """Users of ``day`` likely still to arrive: the share of the baseline day's users who had
    nothing loaded by the same distance past the day's end, applied to ``day``."""
    as_of = con.execute("SELECT max(loaded_at) FROM ev_events").fetchall()[0][0]
    if as_of is None:
        return 0
    cut = as_of - (datetime.combine(day, datetime.min.time(), tzinfo=as_of.tzinfo) + timedelta(days=1))
    b_end = datetime.combine(baseline, datetime.min.time(), tzinfo=as_of.tzinfo) + timedelta(days=1)
    total, late = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE first_load > ?) FROM (
            SELECT user_id, min(loaded_at) AS first_load FROM activity_day WHERE day = ? AND outcome = 'loaded' GROUP BY user_id)
    """, [b_end + cut, baseline]).fetchall()[0]
    wh_day = con.execute("SELECT count(DISTINCT user_id) FROM activity_day WHERE day = ? AND outcome = 'loaded'", [day]).fetchall()[0][0]
    return round(late / total * wh_day) if total else 0


def pick_baseline(con: duckdb.DuckDBPyConnection, day: date) -> tuple[date, str]:
    """Same weekday a week before if that day has data, else the previous day."""
    week = day - timedelta(days=7)
    has = con.execute("SELECT count(*) FROM activity_day WHERE day = ?", [week]).fetchall()[0][0]
    if has:
        return week, "the same weekday a week before"
    return day - timedelta(days=1), "the previous day (no data a week before)"


def dau_days(warehouse: str | Path | Evidence, first: date | str, last: date | str, spans=None, source=None) -> pl.DataFrame:
    """DAU per day from ``first`` to ``last``: in the warehouse and as received by the pipeline."""
    d0, d1 = (d if isinstance(d, date) else date.fromisoformat(str(d)) for d in (first, last))
    ev = open_activity(warehouse, spans, source)
    try:
        counts = [day_counts(ev, d0 + timedelta(days=i)) for i in range((d1 - d0).days + 1)]
    finally:
        if not isinstance(warehouse, Evidence):
            ev.close()
    return pl.DataFrame({"day": [c.day for c in counts], "warehouse": [c.warehouse for c in counts],
                         "received": [c.received for c in counts]})
