"""Explain an id: every decision the pipeline made about an event, or about a user's day."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dqkit.db import connect_read_only

_TRAIL = """
WITH hits AS (
    SELECT 'loaded' AS outcome, NULL AS stage, NULL AS reason, NULL AS detail, event_id, user_id, event_type, event_ts,
           batch_id, trace_id, received_at, loaded_at, geo_country, user_country, user_segment, session_id,
           session_event_number, NULL AS duplicate_of_batch, NULL AS duplicate_of_trace, 'events_' || event_type AS table_name
    FROM events WHERE {where_loaded}
    UNION ALL BY NAME
    SELECT 'rejected' AS outcome, stage, reason, detail, event_id, user_id, event_type, event_ts, batch_id, trace_id,
           received_at, NULL AS loaded_at, NULL AS geo_country, NULL AS user_country, NULL AS user_segment, NULL AS session_id,
           NULL AS session_event_number, duplicate_of_batch, duplicate_of_trace, NULL AS table_name
    FROM rejected_events WHERE {where_rejected}
)
SELECT h.*, d.line_no, d.format, d.platform, d.app_version, d.sdk_version
FROM hits h LEFT JOIN deliveries d USING (trace_id)
ORDER BY h.received_at, h.event_ts NULLS LAST, h.outcome
"""


def _steps(row: dict) -> list[str]:
    out = [f"arrived in batch {row['batch_id']} (line {row['line_no']}, {row['format']}) at {row['received_at']}, "
           f"client {row['platform']} {row['app_version']} / SDK {row['sdk_version']}; trace {row['trace_id']}"]
    if row["outcome"] == "rejected" and row["stage"] == "validate":
        out.append(f"validation rejected it: {row['reason']} ({row['detail']})")
        return out
    out.append("validation passed")
    if row["outcome"] == "rejected" and row["stage"] == "dedup":
        out.append(f"deduplication removed it: the id was first seen in batch {row['duplicate_of_batch']} "
                   f"(trace {row['duplicate_of_trace']})")
        return out
    out.append("deduplication kept it; published to the queue")
    if row["outcome"] == "rejected":
        out.append(f"the insert failed after retries and it was dead-lettered: {row['detail']}")
        return out
    out.append(f"enriched: geo {row['geo_country'] or 'unresolved'}, profile "
               f"{(row['user_country'] or '-') + '/' + (row['user_segment'] or '-') if row['user_country'] or row['user_segment'] else 'missing'}, "
               f"session {row['session_id']} event #{row['session_event_number']}")
    out.append(f"loaded into {row['table_name']} at {row['loaded_at']}")
    return out


def explain(warehouse: str | Path, event_id: str | None = None, user_id: str | None = None, day: date | str | None = None) -> list[dict]:
    """Every occurrence of ``event_id`` (or every event of ``user_id`` on ``day``) with the decisions made."""
    if (event_id is None) == (user_id is None):
        raise ValueError("pass either event_id or user_id (with day)")
    con = connect_read_only(warehouse)
    try:
        if event_id is not None:
            params = [event_id, event_id]
            where_l = where_r = "event_id = ?"
        else:
            if day is None:
                raise ValueError("user_id needs day, e.g. 2026-11-20")
            d = day if isinstance(day, date) else date.fromisoformat(str(day))
            params = [user_id, d, user_id, d]
            where_l = "user_id = ? AND CAST(event_ts AS DATE) = ?"
            where_r = ("coalesce(user_id, json_extract_string(raw, '$.user_id')) = ? "
                       "AND CAST(CASE WHEN stage = 'validate' THEN received_at ELSE coalesce(event_ts, received_at) END AS DATE) = ?")
        rows = con.sql(_TRAIL.format(where_loaded=where_l, where_rejected=where_r), params=params).pl().to_dicts()
    finally:
        con.close()
    return [{**{k: (str(v) if v is not None and not isinstance(v, (int, float, str)) else v) for k, v in r.items()},
             "decisions": _steps(r)} for r in rows]
