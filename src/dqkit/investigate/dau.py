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
       sdk_version, event_type, coalesce(country, 'unknown') AS country, geo_country, user_country, user_segment,
       account_age_days, batch_id, trace_id, NULL AS duplicate_of_trace, table_name
FROM ev_events WHERE {{loaded_by}}
UNION ALL BY NAME
SELECT user_id, event_id, event_ts, received_at, NULL AS loaded_at, 'rejected' AS outcome, stage, platform,
       app_version, sdk_version, event_type, 'unknown' AS country, NULL AS geo_country, NULL AS user_country,
       NULL AS user_segment, NULL AS account_age_days, batch_id, trace_id, duplicate_of_trace, NULL AS table_name
FROM ev_rejected WHERE user_id IS NOT NULL AND {{received_by}};
CREATE OR REPLACE TEMP VIEW activity_day AS
SELECT *, {event_day_sql()} AS day FROM activity;
"""


@dataclass
class DayCounts:
    """One day's DAU counted in the warehouse and as received, and the users each stage lost wholly."""
    day: date
    warehouse: int
    received: int
    lost_by_stage: dict[str, int]


def open_activity(warehouse: str | Path | Evidence, spans=None, source=None, as_of: datetime | None = None) -> Evidence:
    """The evidence layer with the ``activity`` and ``activity_day`` views over loaded and
    quarantined events (quarantined ones only where the source keeps a quarantine table).

    With ``as_of``, the views show the warehouse as it stood then: rows loaded later (where
    load times are kept) and rejects received later are left out."""
    ev = warehouse if isinstance(warehouse, Evidence) else open_evidence(warehouse, spans, source)
    loaded_by = received_by = "true"
    if as_of is not None:
        t = f"TIMESTAMPTZ '{as_of.isoformat()}'"
        if ev.source.has("loaded_at"):
            loaded_by = f"(loaded_at IS NULL OR loaded_at <= {t})"
        received_by = f"(received_at IS NULL OR received_at <= {t})"
    ev.con.execute(_ACTIVITY.replace("{loaded_by}", loaded_by).replace("{received_by}", received_by))
    return ev


def day_counts(con: duckdb.DuckDBPyConnection, day: date) -> DayCounts:
    """Warehouse DAU, received DAU and users lost per stage on ``day`` (from ``activity_day``)."""
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


@dataclass
class LateEstimate:
    """Users of a day still to arrive, as of a moment, from how late recent days' users arrived."""

    users: int
    low: int
    high: int
    days: list[date]
    """The recent days the estimate was taken from."""
    final: bool
    """No recent day had users arriving this long after its end: the day's count is final."""


def expected_late(con: duckdb.DuckDBPyConnection, day: date, baseline: date | None = None,
                  as_of: datetime | None = None, recent: int = 7) -> int:
    """Users of ``day`` likely still to arrive as of ``as_of`` (the latest load by default)."""
    return late_estimate(con, day, as_of, recent).users


def late_estimate(con: duckdb.DuckDBPyConnection, day: date, as_of: datetime | None = None, recent: int = 7) -> LateEstimate:
    """For each of up to ``recent`` days before ``day`` with data, the share of its users whose
    first load came later after that day's end than ``as_of`` is after ``day``'s end; applied to
    ``day``'s users: the median is the estimate, the smallest and largest share the band."""
    con = getattr(con, "con", con)
    if as_of is None:
        as_of = con.execute("SELECT max(loaded_at) FROM activity").fetchall()[0][0]
    if as_of is None:
        return LateEstimate(0, 0, 0, [], True)  # no load times: nothing to say about lateness
    day_end = datetime.combine(day, datetime.min.time(), tzinfo=as_of.tzinfo) + timedelta(days=1)
    cut = as_of - day_end
    shares = con.execute("""
        WITH first AS (SELECT day, user_id, min(loaded_at) AS first_load FROM activity_day
                       WHERE outcome = 'loaded' AND day BETWEEN ? AND ? GROUP BY ALL)
        SELECT day, count(*) AS users,
               count(*) FILTER (WHERE first_load > CAST(day AS TIMESTAMPTZ) + INTERVAL 1 DAY + to_microseconds(?)) AS late
        FROM first GROUP BY day ORDER BY day DESC
    """, [day - timedelta(days=recent), day - timedelta(days=1), int(cut.total_seconds() * 1e6)]).fetchall()
    shares = [(d, late / users) for d, users, late in shares if users]
    wh_day = con.execute("SELECT count(DISTINCT user_id) FROM activity_day WHERE day = ? AND outcome = 'loaded'", [day]).fetchall()[0][0]
    if not shares:
        return LateEstimate(0, 0, 0, [], cut.total_seconds() > 0)
    vals = sorted(x for _, x in shares)
    mid = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    # The share is of users finally counted; the day's count so far lacks them: n = w * s / (1 - s).
    est = lambda x: round(wh_day * x / (1 - x)) if x < 1 else wh_day  # noqa: E731
    return LateEstimate(est(mid), est(vals[0]), est(vals[-1]), [d for d, _ in shares], vals[-1] == 0)


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
