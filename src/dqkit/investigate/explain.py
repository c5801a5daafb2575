"""Explain an id: every decision the pipeline made about an event, or about a user's day.

Reads the evidence layer: loaded rows and, where the source keeps them, quarantined rows and
the delivery ledger. An event or user the warehouse never saw is explained from whatever spans
carry it (the reference article's per-event enrich spans carry the user id and event type;
a validate span's failure samples carry rejected events).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dqkit import names as N
from dqkit.investigate.evidence import Evidence, open_evidence
from dqkit.names import event_day_sql

_TRAIL = """
WITH hits AS (
    SELECT 'loaded' AS outcome, NULL AS stage, NULL AS reason, NULL AS detail, event_id, user_id, event_type, event_ts,
           batch_id, trace_id, received_at, loaded_at, geo_country, user_country, user_segment, session_id,
           session_event_number, NULL AS duplicate_of_batch, NULL AS duplicate_of_trace, table_name,
           platform, app_version, sdk_version
    FROM ev_events WHERE {where_loaded}
    UNION ALL BY NAME
    SELECT 'rejected' AS outcome, stage, reason, detail, event_id, user_id, event_type, event_ts, batch_id, trace_id,
           received_at, NULL AS loaded_at, NULL AS geo_country, NULL AS user_country, NULL AS user_segment, NULL AS session_id,
           NULL AS session_event_number, duplicate_of_batch, duplicate_of_trace, NULL AS table_name,
           platform, app_version, sdk_version
    FROM ev_rejected WHERE {where_rejected}
)
SELECT h.* REPLACE (coalesce(h.platform, d.platform) AS platform, coalesce(h.app_version, d.app_version) AS app_version,
                    coalesce(h.sdk_version, d.sdk_version) AS sdk_version),
       d.line_no, d.format
FROM hits h LEFT JOIN ev_deliveries d USING (trace_id)
ORDER BY h.received_at, h.event_ts NULLS LAST, h.outcome
"""


def _u(v) -> str:
    return "unknown" if v is None else str(v)


def _steps(row: dict) -> list[str]:
    if row["batch_id"] is None and row["received_at"] is None:
        arrived = (f"arrived from client {_u(row['platform'])} {_u(row['app_version'])} / SDK {_u(row['sdk_version'])} "
                   "(this warehouse keeps no batch id or arrival time)")
    else:
        arrived = (f"arrived in batch {_u(row['batch_id'])} (line {_u(row['line_no'])}, {_u(row['format'])}) at "
                   f"{_u(row['received_at'])}, client {_u(row['platform'])} {_u(row['app_version'])} / SDK "
                   f"{_u(row['sdk_version'])}; trace {_u(row['trace_id'])}")
    out = [arrived]
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
    out.append(f"loaded into {row['table_name']}" + (f" at {row['loaded_at']}" if row["loaded_at"] else " (no load time kept)"))
    return out


_ENRICHED = f"""
SELECT e.trace_id, make_timestamptz(e.start_ns // 1000) AS enriched_at, e.attrs['{N.EVENT_TYPE}'] AS event_type,
       any_value(c.attrs['{N.GEO_RESOLVED}']) FILTER (WHERE c.name = '{N.ENRICH_GEO}') AS geo_resolved,
       any_value(c.attrs['{N.PROFILE_CACHE_HIT}']) FILTER (WHERE c.name = '{N.ENRICH_PROFILE}') AS profile_cache_hit
FROM spans e LEFT JOIN spans c ON c.trace_id = e.trace_id AND c.parent_span_id = e.span_id
WHERE e.name = '{N.ENRICH}' AND e.attrs['{N.EVENT_USER_ID}'] = ? AND CAST(make_timestamptz(e.start_ns // 1000) AS DATE) = ?
GROUP BY ALL ORDER BY enriched_at
"""

# The first insert into the event's table at or after it was enriched: where it should have landed.
_NEXT_INSERT = """
SELECT start_at, success, row_count FROM ev_inserts WHERE table_name = ? AND start_at >= ? ORDER BY start_at LIMIT 1
"""


def _from_spans(ev: Evidence, user_id: str, day: date, loaded: dict[str, int]) -> list[dict]:
    """A user's events that the enrich spans saw and the warehouse lacks (per event type, the
    spans beyond the rows), with where each should have landed."""
    if not ev.has_spans or not ev.scalar(f"SELECT count(*) FROM spans WHERE name = '{N.ENRICH}' "
                                         f"AND attrs['{N.EVENT_USER_ID}'] IS NOT NULL"):
        return []
    seen = ev.sql(_ENRICHED, [user_id, day])
    out = []
    for etype in sorted(set(seen["event_type"].drop_nulls().to_list())):
        mine = seen.filter(seen["event_type"] == etype)
        extra = mine.height - loaded.get(etype, 0)
        if extra <= 0:
            continue  # every enriched event of this type is accounted for by a row
        table = f"events_{etype}"
        found = []
        for r in mine.iter_rows(named=True):
            ins = ev.con.execute(_NEXT_INSERT, [table, r["enriched_at"]]).fetchall()
            found.append((bool(ins) and ins[0][1], r, ins))
        # The ones whose insert failed (or never came) are the likeliest to be the missing ones.
        found.sort(key=lambda x: (x[0] is True, x[1]["enriched_at"]))
        out += [_span_row(user_id, r, ins, table) for _, r, ins in found[:extra]]
    return out


def _span_row(user_id: str, r: dict, ins: list, table: str) -> dict:
    """One event known only from its enrich span, and what became of the insert it waited for."""
    steps = [f"enriched at {r['enriched_at']} (span in trace {r['trace_id']}): geo resolved {_u(r['geo_resolved'])}, "
             f"profile cache hit {_u(r['profile_cache_hit'])}"]
    if ins:
        at, ok, n = ins[0]
        steps.append(f"the next insert into {table} ({_u(n)} rows at {at}) " + ("succeeded" if ok else
                     f"FAILED ({N.INSERT_SUCCESS} = false): rows of that insert never landed"))
    else:
        steps.append(f"no insert into {table} after it: not loaded (in flight, or lost before the load)")
    return {"outcome": "enriched (from spans)", "event_id": None, "event_type": r["event_type"], "user_id": user_id,
            "event_ts": None, "trace_id": r["trace_id"], "decisions": steps}


def explain(warehouse: str | Path, event_id: str | None = None, user_id: str | None = None, day: date | str | None = None,
            spans=None, source=None) -> list[dict]:
    """Every occurrence of ``event_id`` (or every event of ``user_id`` on ``day``) with the decisions made.

    With ``spans``, a user's events that the warehouse lacks are listed from the spans that
    carry them (outcome ``enriched (from spans)``)."""
    if (event_id is None) == (user_id is None):
        raise ValueError("pass either event_id or user_id (with day)")
    own = not isinstance(warehouse, Evidence)
    ev = open_evidence(warehouse, spans, source) if own else warehouse
    con = ev.con
    try:
        if event_id is not None:
            params = [event_id, event_id]
            where_l = where_r = "event_id = ?"
        else:
            if day is None:
                raise ValueError("user_id needs day, e.g. 2026-11-20")
            d = day if isinstance(day, date) else date.fromisoformat(str(day))
            params = [user_id, d, user_id, d]
            where_l = f"user_id = ? AND {event_day_sql(stage=None)} = ?"
            where_r = f"user_id = ? AND {event_day_sql()} = ?"
        rows = con.sql(_TRAIL.format(where_loaded=where_l, where_rejected=where_r), params=params).pl().to_dicts()
        out = [{**{k: (str(v) if v is not None and not isinstance(v, (int, float, str)) else v) for k, v in r.items()},
                "decisions": _steps(r)} for r in rows]
        if user_id is not None:
            loaded: dict[str, int] = {}
            for r in rows:
                if r["outcome"] == "loaded":
                    loaded[r["event_type"]] = loaded.get(r["event_type"], 0) + 1
            out += [{k: (str(v) if v is not None and not isinstance(v, (int, float, str, list)) else v) for k, v in r.items()}
                    for r in _from_spans(ev, user_id, d, loaded)]
        return out
    finally:
        if own:
            ev.close()


def lost_user_story(warehouse: str | Path, day: date | str, spans=None, source=None, limit: int = 2) -> list[str]:
    """The first events of one user the day lost (everything they sent was rejected), with the
    decisions made: a line per event for a notebook or report to print. Says so when the source
    cannot name such a user (no quarantine table)."""
    from dqkit.investigate.dau import lost_users, open_activity

    d = day if isinstance(day, date) else date.fromisoformat(str(day))
    ev = open_activity(warehouse, spans, source)
    try:
        user = lost_users(ev, d)["user_id"].min()
        if user is None:
            why = "" if ev.has_quarantine else " (the source keeps no quarantine table, so whose events were rejected is unknown)"
            return [f"No user is known to have lost everything on {d}{why}."]
        rows = explain(ev, user_id=user, day=d)[:limit]
    finally:
        ev.close()
    return ["\n  - ".join([str(r["event_id"]), *r["decisions"]]) for r in rows]
