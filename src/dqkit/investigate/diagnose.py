"""DAU-drop diagnosis: decompose a day's DAU change, find where losses concentrate, give a verdict.

The change in warehouse DAU between ``day`` and a baseline splits exactly into users lost at
each pipeline stage (beyond the baseline's ordinary losses), users expected to arrive late, and
the remainder: a real change in users. Findings add what does not move DAU but matters:
delays and degraded enrichment. Each finding's segment is searched, not given: the narrowest
combination of platform, app_version, sdk_version, event_type and country that holds most of
the affected events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from dqkit import names as N
from dqkit.errors import InputError
from dqkit.investigate.dau import STAGE_ORDER, day_counts, late_estimate, lost_users, open_activity, pick_baseline
from dqkit.investigate.evidence import Evidence, open_evidence
from dqkit.investigate.reconcile import heaviest_run
from dqkit.timefmt import iso_z, parse_iso

DIMENSIONS = ("platform", "app_version", "sdk_version", "event_type", "country")
MATERIAL_PCT = 1.0  # a DAU change smaller than this (percent) is noise
SEGMENT_SHARE = 0.8  # a segment value must hold this share of the affected events
DELAY = timedelta(hours=1)


VERDICTS = ("pipeline", "real", "mixed", "inflated", "no_data", "none")


@dataclass
class Finding:
    """One incident: where (stage, segment, window), what (kind), how much (events, users, DAU)."""

    stage: str
    kind: str
    segment: dict
    window: dict
    events: int
    users: int | None
    dau_impact_pct: float
    confidence: float
    evidence: str
    extra: dict = field(default_factory=dict)
    """Additions to the contract (``cause``, ``tables``, ``users_estimated``, ``direction``, ``hours``)."""

    _CORE = ("stage", "kind", "segment", "window", "events", "users", "dau_impact_pct", "confidence", "evidence")

    @classmethod
    def of(cls, d: dict) -> Finding:
        """A finding from its JSON form; keys beyond the contract's go to :attr:`extra`."""
        return cls(**{k: d[k] for k in cls._CORE}, extra={k: v for k, v in d.items() if k not in cls._CORE})

    def to_dict(self) -> dict:
        """The finding as JSON: the contract's fields, then its additions."""
        return {k: getattr(self, k) for k in self._CORE} | self.extra


@dataclass
class Diagnosis:
    """The answer for one day: verdict and why, DAU three ways, the decomposition, the incidents."""

    day: date
    baseline_day: date
    baseline_reason: str
    dau: dict
    decomposition: dict
    findings: list[Finding]
    verdict: str
    reason: str = ""
    """Why the verdict, in one sentence (``none`` included)."""
    status: str = "final"
    """``final``, or ``provisional`` while users of the day may still arrive (see ``dau.band``)."""
    as_of: datetime | None = None
    source: str = "dqkit"
    unknown: list[str] = field(default_factory=list)
    """What the source could not tell, one sentence each."""
    origins: dict[str, str] = field(default_factory=dict)
    """Where each figure comes from (e.g. ``invalid``: ``quarantine`` or ``spans``)."""

    def to_dict(self) -> dict:
        """The documented JSON contract (see docs/diagnosis.md)."""
        return {"day": self.day.isoformat(), "baseline_day": self.baseline_day.isoformat(),
                "baseline_reason": self.baseline_reason, "verdict": self.verdict, "reason": self.reason,
                "status": self.status, "as_of": _iso(self.as_of), "dau": self.dau,
                "decomposition": self.decomposition, "findings": [f.to_dict() for f in self.findings],
                "source": self.source, "unknown": self.unknown, "origins": self.origins}


def _iso(t) -> str | None:
    return None if t is None else iso_z(t)


def _segment(affected: pl.DataFrame) -> dict:
    """Greedy search for the narrowest segment holding most of ``affected``'s events."""
    seg: dict = {}
    rows = affected
    for dim in DIMENSIONS:
        if dim not in rows.columns or rows.is_empty():
            continue
        top = rows.group_by(dim).len().sort("len", dim, descending=[True, False]).row(0)
        if top[0] is not None and top[0] != "unknown" and top[1] / rows.height >= SEGMENT_SHARE:
            seg[dim] = top[0]
            rows = rows.filter(pl.col(dim) == top[0])
    return seg


def _window(affected: pl.DataFrame) -> dict:
    # An event rejected as invalid has no trustworthy timestamp: place it by arrival.
    when = pl.coalesce("event_ts", "received_at")
    if "stage" in affected.columns:
        when = pl.when(pl.col("stage") == "validate").then(pl.col("received_at")).otherwise(when)
    t = affected.select(when.alias("t"))["t"]
    lo, hi = t.min(), t.max()
    if lo is None:
        return {"start": None, "end": None}
    lo = lo.replace(minute=0, second=0, microsecond=0)
    hi = hi.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return {"start": _iso(lo), "end": _iso(hi)}


def _significant(observed: float, expected: float, volume: float = 0.0) -> bool:
    """An observed count clearly above what the baseline's rate predicts (and not a sliver of the
    day). The expectation is itself one day's count, as noisy as the observation, so the margin is
    three standard deviations of their difference, not of the observation alone."""
    return observed - expected >= max(5.0, 3 * (2 * expected) ** 0.5, 0.005 * volume) and observed >= 1.5 * expected


def material_pct(baseline_dau: int) -> float:
    """The smallest DAU change (percent) that is not day-to-day noise: 1%, or three Poisson
    standard deviations of the baseline's DAU when that is larger (small products)."""
    return max(MATERIAL_PCT, 300 / max(baseline_dau, 1) ** 0.5)


def _excess_hours(con, affected: pl.DataFrame, where: str, baseline: date, ratio: float) -> pl.DataFrame:
    """The affected events in hours that stand out against the baseline's same hour."""
    if affected.is_empty():
        return affected
    t = pl.coalesce("event_ts", "received_at") if "stage" not in where else pl.col("received_at")
    hours = affected.with_columns(hour=t.dt.hour())
    base = con.sql(f"SELECT hour({N.event_time_sql()}) AS hour, "
                   f"count(*) AS n FROM activity_day WHERE day = ? AND ({where}) GROUP BY 1", params=[baseline]).pl()
    per = hours.group_by("hour").len().join(base, on="hour", how="left").with_columns(pl.col("n").fill_null(0) * ratio)
    hot = per.filter(pl.struct("len", "n").map_batches(
        lambda st: pl.Series([_significant(r["len"], r["n"]) for r in st.to_list()]), return_dtype=pl.Boolean))["hour"]
    if hot.is_empty():
        return hours.drop("hour")
    # The window is the contiguous run of hours holding most of the excess: one chance hour far
    # from the incident cannot stretch it.
    day_hours = pl.DataFrame({"hour": list(range(24))}, schema={"hour": hours.schema["hour"]})
    excess = day_hours.join(per, on="hour", how="left").with_columns(
        excess=(pl.col("len").fill_null(0) - pl.col("n").fill_null(0)).clip(lower_bound=0))
    lo, hi = heaviest_run(excess, "excess", "hour")
    return hours.filter(pl.col("hour").is_between(lo, hi)).drop("hour")


_SQL_DIM = {"platform": "platform", "app_version": "app_version", "sdk_version": "sdk_version", "event_type": "event_type",
            "country": "country"}


def _seg_sql(seg: dict) -> str:
    """The segment as a SQL condition on ``activity_day`` (values quoted)."""
    return " AND ".join(f"{_SQL_DIM[k]} = '{str(v).replace(chr(39), chr(39) * 2)}'" for k, v in seg.items()) or "true"


def _seg_expr(seg: dict) -> pl.Expr:
    return pl.all_horizontal([pl.col(k) == v for k, v in seg.items()]) if seg else pl.lit(True)


def _clusters(con, rows: pl.DataFrame, where: str, day: date, baseline: date, ratio: float, expected: float,
              volume: float, most: int = 4) -> list[tuple[dict, pl.DataFrame]]:
    """A stage's excess as separate incidents: the largest one's segment, then its window found
    within that segment (a contiguous run of hours), its rows taken out; again on the rest while
    the rest still stands above the baseline."""
    out: list[tuple[dict, pl.DataFrame]] = []
    rest = rows.with_row_index("_row")
    for _ in range(most):
        if rest.is_empty() or not _significant(rest.height, expected, volume if not out else 0):
            break
        seg = _segment(rest.drop("_row"))
        if not seg:
            # No one value holds most of it (two incidents in two segments): take the heaviest
            # run of hours first, then the segment within it, then its window within that segment.
            seg = _segment(_excess_hours(con, rest.drop("_row"), where, baseline, ratio))
        in_seg = rest.filter(_seg_expr(seg))
        hot = _excess_hours(con, in_seg.drop("_row"), f"({where}) AND {_seg_sql(seg)}", baseline, ratio)
        win = _window(hot)
        if win["start"] is None:
            break
        t = pl.when(pl.col("stage") == "validate").then(pl.col("received_at")).otherwise(
            pl.coalesce("event_ts", "received_at")) if "stage" in in_seg.columns else pl.coalesce("event_ts", "received_at")
        lo, hi = parse_iso(win["start"]), parse_iso(win["end"])
        cluster = in_seg.filter(t.is_between(lo, hi, closed="left"))
        # The cluster itself must stand above the baseline's rate in its segment and hours.
        when = N.event_time_sql()
        # Judged on deliveries, not events: a client batch's events fail together, so ten events
        # of two batches are two chances, not ten.
        unit = "coalesce(trace_id, batch_id, user_id)"
        base_here = con.execute(f"SELECT count(DISTINCT {unit}) FROM activity_day WHERE day = ? AND ({where}) AND {_seg_sql(seg)} "
                                f"AND hour({when}) BETWEEN ? AND ?", [baseline, lo.hour, (hi - timedelta(seconds=1)).hour]).fetchall()[0][0]
        units = cluster.select(pl.coalesce("trace_id", "batch_id", "user_id").n_unique()).item()
        if cluster.height < 5 or not _significant(units, base_here * ratio):
            break
        out.append((seg, cluster.drop("_row")))
        rest = rest.join(cluster.select("_row"), on="_row", how="anti")
    return out


def _duplicate_kind(con, hot: pl.DataFrame) -> tuple[str, str]:
    """Resend or collision, by content: a duplicate whose type or time differs from the event
    that holds its id is a different event that lost its place (a drop, wherever the original
    came from); an identical one is a resend, and nothing was lost."""
    dups = hot.select("event_id", "event_type", "event_ts", "trace_id", "duplicate_of_trace").filter(pl.col("event_id").is_not_null())
    con.register("_dups", dups.to_arrow())
    try:
        same, differ = con.execute("""
            SELECT count(*) FILTER (WHERE o.event_type = d.event_type AND abs(epoch(o.event_ts) - epoch(d.event_ts)) < 1),
                   count(*) FILTER (WHERE o.event_type IS DISTINCT FROM d.event_type OR NOT abs(epoch(o.event_ts) - epoch(d.event_ts)) < 1)
            FROM _dups d JOIN (SELECT event_id, any_value(event_type) AS event_type, min(event_ts) AS event_ts
                               FROM ev_events WHERE event_id IN (SELECT event_id FROM _dups) GROUP BY 1) o USING (event_id)
        """).fetchall()[0]
    finally:
        con.unregister("_dups")
    if same + differ == 0:
        # The originals are not loaded (or not kept): judge by delivery, repeats inside one
        # delivery are distinct events sharing an id.
        inside = dups.select((pl.col("duplicate_of_trace") == pl.col("trace_id")).mean()).item() or 0.0
        return ("drop", "id collision within a delivery") if inside >= 0.5 else ("inflated", "resent by the client")
    if differ > same:
        return "drop", f"id collision: {differ:,} of {same + differ:,} duplicates differ in type or time from the event holding their id"
    return "inflated", f"resent: {same:,} of {same + differ:,} duplicates are identical to the event holding their id"


def _confidence(excess: float, base: float) -> float:
    """How clearly an excess stands above the baseline's level (0..1)."""
    if excess <= 0:
        return 0.0
    return round(min(1.0, excess / (excess + base + 3)), 2)


def _activity(con, day: date, where: str = "true") -> pl.DataFrame:
    return con.sql(f"SELECT * FROM activity_day WHERE day = ? AND ({where})", params=[day]).pl()


def diagnose(warehouse: str | Path, spans=None, day: date | str | None = None, baseline_day: date | str | None = None,
             source=None, as_of: datetime | str | None = None) -> Diagnosis:
    """Explain the DAU change on ``day`` against ``baseline_day`` (picked when not given).

    ``spans`` (optional: loaded spans or export paths) attribute delays to a pipeline stage, and
    for a source without a quarantine table they are the only witness of validation rejects
    and failed inserts. ``source`` says what the warehouse's tables mean (see
    :mod:`dqkit.investigate.source`); detected when not given. ``as_of`` is the moment the
    answer describes (default: the latest load in the data): rows loaded later are not seen, and
    a day whose users may still arrive is ``provisional``.
    """
    ev = open_evidence(warehouse, spans, source)
    try:
        if isinstance(as_of, str):
            as_of = parse_iso(as_of)
        if as_of is None:
            as_of = _latest_load(ev)
        elif as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        open_activity(ev, as_of=as_of)
        con = ev.con
        found = _diagnose(ev, _as_date(day) if day else _latest(con), _as_date(baseline_day) if baseline_day else None, as_of)
        found.unknown = ev.missing()
        found.origins = dict(ev.origins)
        found.source = ev.source.name
        return found
    finally:
        ev.close()


def _latest_load(ev: Evidence) -> datetime | None:
    col = "loaded_at" if ev.source.has("loaded_at") else ("received_at" if ev.source.has("received_at") else "event_ts")
    t = ev.scalar(f"SELECT max({col}) FROM ev_events")
    return t


def _as_date(d) -> date:
    return d if isinstance(d, date) else date.fromisoformat(str(d))


def _latest(con) -> date:
    return con.execute("SELECT max(day) FROM activity_day WHERE outcome = 'loaded'").fetchall()[0][0]


def _diagnose(ev: Evidence, day: date, baseline: date | None, as_of: datetime | None) -> Diagnosis:
    con, spans = ev.con, ev.spans
    first, last = con.execute("SELECT min(day), max(day) FROM activity_day").fetchall()[0]
    covered = f"the data covers {first} to {last}" if first else "the warehouse holds no events"
    reason = "given"
    if baseline is not None:
        if baseline >= day:
            raise InputError(f"baseline day {baseline} is not before {day}; pass an earlier --baseline-day ({covered})")
        if first is None or not first <= baseline <= last:
            raise InputError(f"baseline day {baseline} is outside the data ({covered}); pass a day within it")
    else:
        baseline, reason = pick_baseline(con, day)
    d, b = day_counts(con, day), day_counts(con, baseline)
    parts0 = {s: 0 for s in STAGE_ORDER} | {"late_arrival": 0, "real_change": 0}
    if d.received == 0:
        dau = {"warehouse": 0, "received": 0, "baseline": b.warehouse, "change_pct": -100.0 if b.warehouse else 0.0,
               "expected_late": 0}
        f = Finding("pipeline", "no_data", {}, _hour_window(day, 0, 23), 0, None, 0.0, 1.0,
                    f"no events at all for {day} ({covered}); the baseline had {b.received:,} users.", {"hours": list(range(24))})
        return Diagnosis(day, baseline, reason, dau, {"total_change": -b.warehouse, "parts": parts0 | {"real_change": -b.warehouse},
                                                      "adds_up": True, "degraded_users": {}}, [f], "no_data",
                         f"no events were delivered for {day}: not a change in users, an absence of data ({covered})",
                         as_of=as_of)
    if b.received == 0:
        # Nothing to compare with: say so rather than call every user a change.
        dau = {"warehouse": d.warehouse, "received": d.received, "baseline": 0, "change_pct": 0.0, "expected_late": 0}
        return Diagnosis(day, baseline, reason + "; it has no data, so nothing was compared", dau,
                         {"total_change": 0, "parts": parts0, "adds_up": True, "degraded_users": {}}, [], "none",
                         f"nothing to compare with: the baseline day {baseline} has no events ({covered})", as_of=as_of)
    empty = _empty_hours(con, day, baseline, as_of)
    est = late_estimate(con, day, as_of)
    late = est.users
    flight = _in_flight(ev, day, baseline, as_of)
    if flight is not None and flight["users"] > late:
        # A backlog beyond the recent days' usual lateness: the in-flight users are delay, not loss.
        late = flight["users"]
        est.high = max(est.high, late)
    base_dau = max(b.warehouse, 1)
    change = d.warehouse - b.warehouse
    parts = {s: -(d.lost_by_stage[s] - b.lost_by_stage[s]) for s in STAGE_ORDER}
    parts["late_arrival"] = -late
    parts["real_change"] = (d.received + late) - b.received
    # Losses only the spans saw (no quarantine table): their users are estimated, and moved out
    # of the real change into the stage that lost them.
    span_found = _span_findings(ev, day, baseline) if ev.has_spans and not ev.has_quarantine else []
    for sf in span_found:
        if sf.get("users"):
            parts[sf["stage"]] = parts.get(sf["stage"], 0) - sf["users"]
            parts["real_change"] += sf["users"]
            sf["dau_impact_pct"] = round(-sf["users"] / base_dau * 100, 2)
    decomposition = {"total_change": change, "parts": parts, "adds_up": sum(parts.values()) == change,
                     # Counted in DAU but with degraded data: users with loaded events lacking geo or profile.
                     "degraded_users": {
                         stage: {str(k): v for k, v in zip(("day", "baseline"), con.execute(
                             f"SELECT count(DISTINCT user_id) FILTER (WHERE day = ?), count(DISTINCT user_id) FILTER (WHERE day = ?) "
                             f"FROM activity_day WHERE outcome = 'loaded' AND {col} IS NULL", [day, baseline]).fetchall()[0])}
                         for stage, col in (("enrich.geo_ip", "geo_country"), ("enrich.user_profile", "user_country"))}}

    findings: list[dict] = list(span_found) + ([flight] if flight is not None else [])
    lost_d = lost_users(con, day)
    # Drops at a stage: excess rejected events (and users wholly lost) over the baseline.
    vol_d = max(con.execute("SELECT count(*) FROM activity_day WHERE day = ?", [day]).fetchall()[0][0], 1)
    vol_b = max(con.execute("SELECT count(*) FROM activity_day WHERE day = ?", [baseline]).fetchall()[0][0], 1)
    for stage in STAGE_ORDER:
        where = f"outcome = 'rejected' AND stage = '{stage}'"
        ev_d = _activity(con, day, where)
        ev_b = con.execute(f"SELECT count(*) FROM activity_day WHERE day = ? AND {where}", [baseline]).fetchall()[0][0]
        expected = ev_b * vol_d / vol_b
        if not _significant(ev_d.height, expected, vol_d):
            continue
        lost_here = set(lost_d.filter(pl.col("stage") == stage)["user_id"].to_list())
        part = -(d.lost_by_stage[stage] - b.lost_by_stage[stage])
        # Each cluster of the stage's excess (segment, then window within it) is its own incident.
        for seg, hot in _clusters(con, ev_d, where, day, baseline, vol_d / vol_b, expected, vol_d):
            users_lost = len(lost_here & set(hot["user_id"].to_list()))
            impact = round(part * users_lost / max(len(lost_here), 1) / base_dau * 100, 2)
            kind, cause = "drop", None
            if stage == "dedup":
                kind, cause = _duplicate_kind(con, hot)
            exp_here = expected * hot.height / max(ev_d.height, 1)
            f = {
                "stage": stage, "kind": kind, "segment": seg, "window": _window(hot),
                "events": hot.height, "users": users_lost, "dau_impact_pct": impact,
                "confidence": _confidence(hot.height - exp_here, exp_here),
                "evidence": f"{hot.height:,} events rejected at {stage} in this segment and window on {day} "
                            f"({ev_d.height:,} in all, against about {expected:,.0f} at the baseline's rate); "
                            f"{users_lost:,} users had nothing loaded.",
            }
            if cause:
                f["cause"] = cause
            findings.append(f)

    # Degraded enrichment: loaded events missing geo or profile fields, above the baseline's share.
    for stage, col in (("enrich.geo_ip", "geo_country"), ("enrich.user_profile", "user_country")):
        # Judged on users, not events: a user without a profile takes all their events along.
        q = (f"SELECT count(DISTINCT user_id) FILTER (WHERE {col} IS NULL), count(DISTINCT user_id) "
             "FROM activity_day WHERE day = ? AND outcome = 'loaded'")
        hit_b, users_b = con.execute(q, [baseline]).fetchall()[0]
        hit_u, users_d = con.execute(q, [day]).fetchall()[0]
        expected = hit_b / max(users_b, 1) * users_d
        if not _significant(hit_u, expected, users_d):
            continue
        hit = _activity(con, day, f"outcome = 'loaded' AND {col} IS NULL")
        hot = _excess_hours(con, hit, f"outcome = 'loaded' AND {col} IS NULL", baseline, vol_d / vol_b)
        findings.append({
            "stage": stage, "kind": "degraded", "segment": _segment(hot), "window": _window(hot),
            "events": hit.height, "users": hit_u, "dau_impact_pct": 0.0,
            "confidence": _confidence(hit_u - expected, expected),
            "evidence": f"{hit_u:,} users ({hit.height:,} loaded events) lack {col}, against about {expected:,.0f} users "
                        f"at the baseline day's share.",
        })

    # Delays: events loaded more than an hour after they happened, above the baseline's share.
    slow = f"outcome = 'loaded' AND loaded_at - coalesce(event_ts, received_at) > INTERVAL {int(DELAY.total_seconds())} SECOND"
    hit = _activity(con, day, slow)
    base_slow = con.execute(f"SELECT count(*) FROM activity_day WHERE day = ? AND {slow}", [baseline]).fetchall()[0][0]
    expected = base_slow * vol_d / vol_b
    if _significant(hit.height, expected, vol_d):
        hit = _excess_hours(con, hit, slow, baseline, vol_d / vol_b)
        client = hit.select(((pl.col("received_at") - pl.col("event_ts")) > (pl.col("loaded_at") - pl.col("received_at"))).mean()).item()
        stage = "client" if client and client > 0.5 else _delay_stage(spans, hit)
        findings.append({
            "stage": stage, "kind": "delay", "segment": _segment(hit), "window": _window(hit),
            "events": hit.height, "users": hit["user_id"].n_unique(), "dau_impact_pct": 0.0,
            "confidence": _confidence(hit.height - expected, expected),
            "evidence": f"{hit.height:,} events reached the warehouse over an hour after they happened, against about "
                        f"{expected:,.0f} at the baseline's rate; most of the wait was in {stage}.",
        })

    # Rows that loads said landed and the warehouse lacks (deleted after load, or never written).
    gone = _silent_loss(ev, day, baseline)
    if gone:
        if gone.get("users"):
            parts["warehouse"] = parts.get("warehouse", 0) - gone["users"]
            parts["real_change"] += gone["users"]
            gone["dau_impact_pct"] = round(-gone["users"] / base_dau * 100, 2)
        findings.append(gone)

    # Hours that usually have traffic and have none: no data, not a change in users.
    if empty:
        lo, hi = empty[0], empty[-1]
        findings.append({"stage": "pipeline", "kind": "no_data", "segment": {}, "window": _hour_window(day, lo, hi),
                         "events": 0, "users": None, "dau_impact_pct": 0.0, "confidence": 1.0, "hours": empty,
                         "evidence": f"no events for {len(empty)} hour(s) of {day} that had traffic on {baseline} "
                                     f"({', '.join(f'{h:02d}:00' for h in empty[:6])}{', ...' if len(empty) > 6 else ''})."})

    # Bots are identified, not estimated: their ids leave the real change into a part of their own
    # whether or not the day's total moved beyond noise (organic users may have fallen meanwhile).
    burst = _bot_burst(con, day, baseline, base_dau)
    bots, bot_ids = burst if burst else (None, [])
    if bots is not None:
        bots["dau_impact_pct"] = round(bots["users"] / base_dau * 100, 2)
        parts["inflated"] = bots["users"]
        parts["real_change"] -= bots["users"]
        findings.append(bots)
        # The bots carry no profiles: that is theirs, not the profile store's.
        findings = [f for f in findings if not (f["stage"] == "enrich.user_profile" and f["kind"] == "degraded"
                                                and f["users"] <= bots["users"] * 1.2 + 5)]

    # A real change: received users moved, net of what each stage lost and of the bots.
    real = parts["real_change"]
    material = material_pct(b.warehouse)
    if abs(real) / base_dau * 100 >= material:
        seg, moved = _real_segment(con, day, baseline, bot_ids)
        growth = _new_signups(con, day, baseline) if real > 0 else 0
        findings.append({
            "stage": "none", "kind": "real_change", "segment": seg, "window": _hour_window(day, 0, 23),
            "events": 0, "users": abs(real), "dau_impact_pct": round(real / base_dau * 100, 2),
            "confidence": round(min(1.0, abs(moved) / max(abs(real), 1)), 2) if seg else 0.5,
            "direction": "up" if real > 0 else "down",
            "evidence": f"{d.received:,} users sent events on {day} against {b.received:,} on {baseline}, net of what "
                        "the pipeline lost" + (" and of the bots" if bots else "")
                        + (f"; {abs(moved):,} of the change is in {_seg_text(seg)}" if seg else "")
                        + (f"; {growth:,} more users than on the baseline signed up that day" if growth > 0 else "") + ".",
        })

    findings.sort(key=lambda f: (-abs(f["dau_impact_pct"]), -f["confidence"], -f["events"]))
    change_pct = round(change / base_dau * 100, 2)
    pipeline = sum(v for k, v in parts.items() if k not in ("real_change", "inflated"))
    verdict = _verdict(pipeline, real, base_dau, findings, material)
    if empty:
        verdict = "no_data"  # whatever else the day shows, part of it is missing
    day_end = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    provisional = as_of is not None and (as_of < day_end or (late > 0 and not est.final))
    dau = {"warehouse": d.warehouse, "received": d.received, "baseline": b.warehouse, "change_pct": change_pct,
           "expected_late": late, "band": {"low": d.warehouse + est.low, "high": d.warehouse + est.high},
           "late_from_days": [x.isoformat() for x in est.days]}
    future = [h for h in empty if as_of is not None and day_end - timedelta(hours=24 - h) >= as_of]
    why = _reason(verdict, change, pipeline, real, b.warehouse, material, findings, empty, provisional, late, parts, future)
    return Diagnosis(day, baseline, reason, dau, decomposition, [Finding.of(f) for f in findings], verdict, why,
                     "provisional" if provisional else "final", as_of)


def _verdict(pipeline: int, real: int, base: int, findings: list[dict], material: float) -> str:
    pipe_pct, real_pct = abs(pipeline) / base * 100, abs(real) / base * 100
    # Resends that dedup caught are the pipeline doing its job: they explain no change.
    pipe_found = any(f["stage"] not in ("none", "client") and f["kind"] not in ("no_data", "inflated") and f["confidence"] >= 0.5
                     for f in findings)
    if any(f["stage"] == "client" and f["kind"] == "inflated" and f.get("cause") == "bot-like burst" for f in findings):
        return "mixed" if (pipe_found and pipe_pct >= material) or real_pct >= material else "inflated"
    if real_pct >= material and (pipe_pct >= material or (pipe_found and pipe_pct >= MATERIAL_PCT)):
        return "mixed"
    if real_pct >= material:
        return "real"
    return "pipeline" if pipe_found or pipe_pct >= material else "none"


def _seg_text(seg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in seg.items()) or "all traffic"


def _reason(verdict: str, change: int, pipeline: int, real: int, base: int, material: float, findings: list[dict],
            empty: list[int], provisional: bool, late: int, parts: dict | None = None, future: list[int] | None = None) -> str:
    """Why the verdict, in one sentence."""
    noise = round(base * material / 100)
    tail = f" The day is provisional: about {late:,} {'user is' if late == 1 else 'users are'} still expected to arrive." if provisional and late else (
        " The day is provisional: its events may still be arriving." if provisional else "")
    top = next((f for f in findings if f["kind"] != "no_data" and f.get("cause") != "bot-like burst"), None)
    if verdict == "no_data" and future and len(future) == len(empty):
        return (f"the day is not over at the as-of time: its last {len(future)} hour(s) ({future[0]:02d}:00 on) have not "
                f"happened yet, so the change of {change:+,} users is not yet a day's DAU." + tail)
    if verdict == "no_data":
        return (f"no events for {len(empty)} hour(s) that had traffic on the baseline ({', '.join(f'{h:02d}:00' for h in empty[:6])}"
                f"{', ...' if len(empty) > 6 else ''}): the data is missing, so the change of {change:+,} users says nothing "
                "about users." + tail)
    if verdict == "none":
        seen = [f for f in findings if f["confidence"] >= 0.5 and f["kind"] != "no_data"]
        also = (f"; what the findings show ({seen[0]['stage']} {seen[0]['kind']} in {_seg_text(seen[0]['segment'])}"
                f"{' and more' if len(seen) > 1 else ''}) does not move DAU beyond it" if seen else "")
        return f"within noise: {change:+,} users against ±{noise:,} users (3σ of the baseline's {base:,}, or 1%){also}." + tail
    bots = next((f for f in findings if f.get("cause") == "bot-like burst"), None)
    if verdict == "inflated" and bots:
        return (f"{bots['users']:,} users of a bot-like burst ({_seg_text(bots['segment'])}) inflate DAU; "
                f"the rest of the change is within noise." + tail)
    if verdict == "real":
        return f"the pipeline is healthy: {real:+,} users really moved" + (
            f", most in {_seg_text(top['segment'])}" if top and top["segment"] else "") + "." + tail
    biggest = min(((k, v) for k, v in (parts or {}).items() if k != "real_change"), key=lambda kv: kv[1], default=None)
    what = (f"{top['stage']} {top['kind']} in {_seg_text(top['segment'])}" if top
            else f"{biggest[0].replace('_', ' ')} ({biggest[1]:+,} users)" if biggest else "the pipeline")
    if verdict == "mixed" and bots:
        said = [f"{bots['users']:,} users of a bot-like burst ({_seg_text(bots['segment'])}) inflate DAU"]
        if top and top["stage"] not in ("none", "client"):
            said.append(f"the pipeline accounts for {pipeline:+,} users (mostly {what})")
        if abs(real) >= noise:
            said.append(f"{real:+,} users really moved")
        return "more than one thing: " + "; ".join(said) + "." + tail
    if verdict == "mixed":
        return f"both: the pipeline accounts for {pipeline:+,} users (mostly {what}) and {real:+,} users really moved." + tail
    return f"the pipeline accounts for {pipeline:+,} of the {change:+,} users, mostly {what}." + tail


def _empty_hours(con, day: date, baseline: date, as_of: datetime | None) -> list[int]:
    """Hours of ``day`` in which nothing arrived although the baseline's same hour, scaled to
    the day's volume, expects at least 10 deliveries (so an empty hour by chance has odds of
    about e^-10, 1 in 1,000 over a day's 24 tests): a gap in the data, not in the users. Hours
    after ``as_of`` are empty because they have not happened yet, and count too: the day is partial."""
    rows = con.execute("""
        WITH a AS (SELECT day, hour(received_at) AS h, coalesce(trace_id, batch_id, user_id) AS k FROM activity_day
                   WHERE day IN (?, ?) AND received_at IS NOT NULL),
        d AS (SELECT h, count(DISTINCT k) AS nd FROM a WHERE day = ? GROUP BY 1),
        b AS (SELECT h, count(DISTINCT k) AS nb FROM a WHERE day = ? GROUP BY 1)
        SELECT h, coalesce(nd, 0), coalesce(nb, 0), sum(coalesce(nd, 0)) OVER (), sum(coalesce(nb, 0)) OVER ()
        FROM range(24) t(h) LEFT JOIN d USING (h) LEFT JOIN b USING (h) ORDER BY h""", [day, baseline, day, baseline]).fetchall()
    if not rows:
        return []
    td, tb = rows[0][3] or 0, rows[0][4] or 0
    day_start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    # The day's own volume sets the scale, over the hours it had (a partial day is not quieter).
    seen = [h for h, nd, *_ in rows if as_of is None or day_start + timedelta(hours=h + 1) <= as_of]
    base_seen = sum(nb for h, nd, nb, *_ in rows if h in seen) or tb
    ratio = (sum(nd for h, nd, *_ in rows if h in seen) / base_seen) if base_seen else 1.0
    if not seen:
        ratio = 1.0
    return [h for h, nd, nb, *_ in rows if nd == 0 and nb * max(ratio, 0.5 if td else 1.0) >= 10]


def _new_signups(con, day: date, baseline: date) -> int:
    """More users signed up on the day (``account_age_days = 0``) than on the baseline."""
    nd, nb = con.execute("""SELECT count(DISTINCT user_id) FILTER (WHERE day = ?), count(DISTINCT user_id) FILTER (WHERE day = ?)
                            FROM activity_day WHERE outcome = 'loaded' AND account_age_days = 0""", [day, baseline]).fetchall()[0]
    return int(nd - nb)


def _bot_burst(con, day: date, baseline: date, base_dau: int) -> tuple[dict, list[str]] | None:
    """Ids never seen before and without a profile, dense in a few hours and one client: bots, not
    users. Real growth (new users with profiles, spread through the day) returns None; so does a
    burst no larger than the baseline's own profile-less users, or under 1% of its DAU.
    Returns the finding and the bots' ids."""
    new = con.sql("""
        WITH seen AS (SELECT DISTINCT user_id FROM activity_day WHERE day < ?)
        SELECT a.* FROM activity_day a WHERE a.day = ? AND a.user_id NOT IN (SELECT user_id FROM seen)
          AND a.user_id NOT IN (SELECT user_id FROM activity_day WHERE day = ? AND outcome = 'loaded' AND user_country IS NOT NULL)
    """, params=[day, day, day]).pl()
    if new.is_empty():
        return None
    users = new["user_id"].n_unique()
    usual = con.execute("""SELECT count(DISTINCT user_id) FROM activity_day WHERE day = ? AND user_id NOT IN
                             (SELECT user_id FROM activity_day WHERE day = ? AND outcome = 'loaded' AND user_country IS NOT NULL)""",
                        [baseline, baseline]).fetchall()[0][0]
    per_hour = new.group_by(pl.col("received_at").dt.hour().alias("hour")).agg(pl.col("user_id").n_unique().alias("n"))
    hours = pl.DataFrame({"hour": list(range(24))}, schema={"hour": per_hour.schema["hour"]}).join(per_hour, on="hour", how="left").with_columns(
        pl.col("n").fill_null(0))
    run = heaviest_run(hours, "n", "hour", floor=0.2)
    if run is None:
        return None
    lo, hi = run
    inside = new.filter(pl.col("received_at").dt.hour().is_between(lo, hi))
    # A burst: most of the new ids within a few hours.
    n = inside["user_id"].n_unique()
    if hi - lo + 1 > 8 or n < 0.7 * users or not _significant(n, usual) or n / base_dau * 100 < MATERIAL_PCT:
        return None
    seg = _segment(inside)
    finding = {"stage": "client", "kind": "inflated", "segment": seg, "window": _hour_window(day, lo, hi), "events": inside.height,
            "users": n, "dau_impact_pct": 0.0,
            "confidence": round(min(1.0, n / max(users, 1)), 2), "cause": "bot-like burst",
            "evidence": f"{n:,} ids never seen before and without a profile sent {inside.height:,} events "
                        f"between {lo:02d}:00 and {hi + 1:02d}:00 from {_seg_text(seg)}: not users."}
    return finding, inside["user_id"].unique().to_list()


def _in_flight(ev: Evidence, day: date, baseline: date, as_of: datetime | None) -> dict | None:
    """Events of batches received on ``day`` that were published but not yet loaded at ``as_of``,
    from the spans (ingest, and insert links started by then) or the delivery ledger."""
    if as_of is None or not ev.has_spans or not ev.has_links:
        return None
    t_ns = int(as_of.timestamp() * 1e9)
    per = ev.sql(f"""
        WITH b AS (SELECT trace_id, received_at, platform, app_version, sdk_version, published FROM ev_batches
                   WHERE CAST(received_at AS DATE) = ? AND received_at <= ?),
        l AS (SELECT k.link_trace_id AS trace_id, sum(try_cast(k.attrs['{N.INSERT_ROW_COUNT}'] AS BIGINT)) AS done
              FROM span_links k JOIN spans s USING (trace_id, span_id) WHERE k.name = '{N.INSERT}' AND s.start_ns <= ? GROUP BY 1)
        SELECT b.*, hour(b.received_at) AS hour, greatest(b.published - coalesce(l.done, 0), 0) AS waiting
        FROM b LEFT JOIN l USING (trace_id)""", [day, as_of, t_ns])
    waiting = int(per["waiting"].sum() or 0)
    if waiting < 5 or waiting < 0.002 * max(int(per["published"].sum() or 0), 1):
        return None
    hit = per.filter(pl.col("waiting") > 0)
    seg = _weighted_segment(hit, hit.head(0), "waiting", 1.0)
    hours = _hourly_excess(hit, hit.head(0), "waiting", 1.0)
    lo, hi = heaviest_run(hours, "excess", "hour") or (0, 23)
    users = _users_gone(ev, day, baseline, seg, lo, hi, waiting)
    return {"stage": "queue", "kind": "delay", "segment": seg, "window": _hour_window(day, lo, hi), "events": waiting,
            "users": users, "users_estimated": True, "dau_impact_pct": 0.0, "confidence": 0.9, "cause": "in flight",
            "evidence": f"as of {_iso(as_of)}, {waiting:,} events of {hit.height:,} batches received on {day} were published "
                        f"and not yet loaded: delayed, not lost; about {users:,} users are still to arrive with them."}


def _silent_loss(ev: Evidence, day: date, baseline: date) -> dict | None:
    """Rows the delivery ledger (or the insert spans' links) says landed and the warehouse lacks,
    among batches received on ``day``: a warehouse-stage drop (deleted after load, or never written)."""
    if not ev.has_row_traces:
        return None
    if ev.has_deliveries:
        said = "SELECT trace_id, received_at, platform, app_version, sdk_version, loaded FROM ev_deliveries"
    elif ev.has_links:
        said = "SELECT trace_id, received_at, platform, app_version, sdk_version, loaded FROM ev_batches"
    else:
        return None
    per = ev.sql(f"""
        WITH said AS ({said}), rows AS (SELECT trace_id, count(*) AS n FROM ev_events GROUP BY 1)
        SELECT s.*, hour(s.received_at) AS hour, greatest(s.loaded - coalesce(r.n, 0), 0) AS missing
        FROM said s LEFT JOIN rows r USING (trace_id) WHERE CAST(s.received_at AS DATE) IN (?, ?)""", [day, baseline])
    pd, pb = per.filter(pl.col("received_at").dt.date() == day), per.filter(pl.col("received_at").dt.date() == baseline)
    got, exp = int(pd["missing"].sum() or 0), int(pb["missing"].sum() or 0)
    if not _significant(got, exp):
        return None
    hit = pd.filter(pl.col("missing") > 0)
    seg = _weighted_segment(hit, pb.filter(pl.col("missing") > 0), "missing", 1.0)
    hourly = _hourly_excess(pd.filter(_seg_expr(seg)), pb.filter(_seg_expr(seg)), "missing", 1.0)
    lo, hi = heaviest_run(hourly, "excess", "hour") or (0, 23)
    n = int(pd.filter(_seg_expr(seg) & pl.col("hour").is_between(lo, hi))["missing"].sum())
    users = _users_gone(ev, day, baseline, seg, lo, hi, n)
    return {"stage": "warehouse", "kind": "drop", "segment": seg, "window": _hour_window(day, lo, hi), "events": n,
            "users": users, "users_estimated": True, "dau_impact_pct": 0.0, "confidence": _confidence(got - exp, exp),
            "cause": "rows missing after load",
            "evidence": f"the loads recorded {got:,} rows of batches received on {day} that the warehouse no longer holds "
                        f"(deleted after load, or never written); about {users:,} users vanished with them."}


def _real_segment(con, day: date, baseline: date, bots: list[str] | None = None) -> tuple[dict, int]:
    """The segment value whose users moved most, when it holds most of the move and its
    dimension is not merely churning (one app version replacing another). Counted on received
    activity, so users the pipeline lost in one segment do not read as users leaving it, and
    without the ``bots`` ids, which are not users."""
    people = "user_id NOT IN (SELECT unnest(?::VARCHAR[]))"
    total = con.execute("SELECT count(DISTINCT user_id) FILTER (WHERE day = ?) - count(DISTINCT user_id) FILTER (WHERE day = ?) "
                        f"FROM activity_day WHERE {people}", [day, baseline, bots or []]).fetchall()[0][0]
    best: tuple[dict, int] = ({}, 0)
    if not total:
        return best
    for dim in ("country", "platform", "app_version"):
        col = "coalesce(user_country, country)" if dim == "country" else dim
        moves = con.execute(f"""
            SELECT v, count(DISTINCT user_id) FILTER (WHERE day = ?) - count(DISTINCT user_id) FILTER (WHERE day = ?) AS moved
            FROM (SELECT {col} AS v, user_id, day FROM activity_day WHERE day IN (?, ?) AND {people})
            WHERE v IS NOT NULL AND v <> 'unknown' GROUP BY v ORDER BY abs(moved) DESC, v
        """, [day, baseline, day, baseline, bots or []]).fetchall()
        if not moves:
            continue
        value, moved = moves[0]
        against = sum(m for _, m in moves if (m > 0) != (moved > 0))
        if moved / total >= 0.6 and abs(against) < 0.5 * abs(moved) and abs(moved) > abs(best[1]):
            best = ({dim: value}, moved)
    return best


_SEGMENT_COLS = ("platform", "app_version", "sdk_version", "country")


def _span_findings(ev: Evidence, day: date, baseline: date) -> list[dict]:
    """Losses known only from spans: validation rejects per client segment and hour (validate
    spans), failed inserts per table and window (insert spans)."""
    out: list[dict] = []
    b = ev.sql("SELECT *, CAST(received_at AS DATE) AS day, hour(received_at) AS hour FROM ev_batches "
               "WHERE CAST(received_at AS DATE) IN (?, ?)", [day, baseline])
    bd, bb = b.filter(pl.col("day") == day), b.filter(pl.col("day") == baseline)
    rec_d, rec_b = max(int(bd["received"].sum() or 0), 1), max(int(bb["received"].sum() or 0), 1)
    inv_d, inv_b = int(bd["invalid"].sum() or 0), int(bb["invalid"].sum() or 0)
    expected = inv_b * rec_d / rec_b
    if _significant(inv_d, expected, rec_d):
        seg = _weighted_segment(bd, bb, "invalid", rec_d / rec_b)
        cond = pl.all_horizontal([pl.col(k) == v for k, v in seg.items()]) if seg else pl.lit(True)
        per_hour = _hourly_excess(bd.filter(cond), bb.filter(cond), "invalid", rec_d / rec_b)
        lo, hi = heaviest_run(per_hour, "excess", "hour") or (0, 23)
        window = _hour_window(day, lo, hi)
        n = int(bd.filter(cond & pl.col("hour").is_between(lo, hi))["invalid"].sum())
        users = _users_gone(ev, day, baseline, seg, lo, hi, n)
        out.append({
            "stage": "validate", "kind": "drop", "segment": seg, "window": window, "events": n, "users": users,
            "users_estimated": True, "dau_impact_pct": 0.0, "confidence": _confidence(inv_d - expected, expected),
            "evidence": f"validate spans: {inv_d:,} events rejected on {day} against about {expected:,.0f} at the baseline's "
                        f"rate; no quarantine table says whose they were, so about {users:,} users lost is estimated from "
                        f"the segment's users in that window on {baseline}.",
        })
    fails = ev.sql("""SELECT table_name, CAST(start_at AS DATE) AS day, hour(start_at) AS hour, sum(row_count)::BIGINT AS rows
                      FROM ev_inserts WHERE NOT success AND CAST(start_at AS DATE) IN (?, ?) GROUP BY ALL""", [day, baseline])
    loaded = ev.sql("SELECT CAST(start_at AS DATE) AS day, sum(row_count)::BIGINT AS n FROM ev_inserts "
                    "WHERE CAST(start_at AS DATE) IN (?, ?) GROUP BY ALL", [day, baseline])
    vol = {r["day"]: r["n"] for r in loaded.iter_rows(named=True)}
    ratio = (vol.get(day) or 1) / max(vol.get(baseline) or 1, 1)
    for table in sorted(fails.filter(pl.col("day") == day)["table_name"].unique().to_list()):
        fd = fails.filter((pl.col("day") == day) & (pl.col("table_name") == table))
        fb = fails.filter((pl.col("day") == baseline) & (pl.col("table_name") == table))
        got, exp = int(fd["rows"].sum()), int(fb["rows"].sum()) * ratio
        if not _significant(got, exp):
            continue
        per_hour = _hourly_excess(fd, fb, "rows", ratio)
        lo, hi = heaviest_run(per_hour, "excess", "hour") or (0, 23)
        etype = table.removeprefix("events_")
        out.append({
            "stage": "warehouse.insert", "kind": "drop", "segment": {"event_type": etype}, "window": _hour_window(day, lo, hi),
            "events": int(fd.filter(pl.col("hour").is_between(lo, hi))["rows"].sum()), "users": 0, "users_estimated": True,
            "dau_impact_pct": 0.0, "confidence": _confidence(got - exp, exp), "tables": [table],
            "evidence": f"insert spans: {got:,} rows of {table} failed to insert on {day} ({N.INSERT_SUCCESS} = false) and "
                        "no dead-letter table holds them; users with other events still count in DAU.",
        })
    return out


def _weighted_segment(day: pl.DataFrame, base: pl.DataFrame, col: str, ratio: float) -> dict:
    """Greedy narrowest segment holding most of the excess of ``col`` over the baseline."""
    seg: dict = {}
    d, b = day, base
    for dim in (c for c in _SEGMENT_COLS if c in day.columns):
        if d.is_empty():
            break
        g = d.group_by(dim).agg(pl.col(col).sum().alias("n")).join(
            b.group_by(dim).agg(pl.col(col).sum().alias("m")), on=dim, how="left").with_columns(
            excess=(pl.col("n") - pl.col("m").fill_null(0) * ratio).clip(lower_bound=0)).sort("excess", dim, descending=[True, False])
        total = float(g["excess"].sum())
        if total <= 0:
            break
        value, share = g[dim][0], float(g["excess"][0]) / total
        if value is not None and value != "unknown" and share >= SEGMENT_SHARE:
            seg[dim] = value
            d, b = d.filter(pl.col(dim) == value), b.filter(pl.col(dim) == value)
    return seg


def _hourly_excess(day: pl.DataFrame, base: pl.DataFrame, col: str, ratio: float) -> pl.DataFrame:
    hours = pl.DataFrame({"hour": list(range(24))}, schema={"hour": pl.Int64})
    d = day.group_by("hour").agg(pl.col(col).sum().alias("n")).cast({"hour": pl.Int64})
    b = base.group_by("hour").agg(pl.col(col).sum().alias("m")).cast({"hour": pl.Int64})
    return hours.join(d, on="hour", how="left").join(b, on="hour", how="left").with_columns(
        excess=(pl.col("n").fill_null(0) - pl.col("m").fill_null(0) * ratio).clip(lower_bound=0))


def _hour_window(day: date, lo: int, hi: int) -> dict:
    start = datetime.combine(day, datetime.min.time()) + timedelta(hours=lo)
    end = datetime.combine(day, datetime.min.time()) + timedelta(hours=hi + 1)
    return {"start": start.isoformat() + "Z", "end": end.isoformat() + "Z"}


def _users_gone(ev: Evidence, day: date, baseline: date, seg: dict, lo: int, hi: int, rejected: int = 0) -> int:
    """An estimate of the users wholly lost with ``rejected`` events of ``seg`` in hours lo..hi:
    the baseline day's users of the segment who were active only in those hours, times the share
    of the segment's events in the window that were rejected on ``day``. A segment new since the
    baseline (an app version just released) is widened until the baseline has its users."""
    dims = list(seg)
    while True:
        part = {k: seg[k] for k in dims}
        where = " AND ".join(f"{k} = ?" for k in part) or "true"
        params = list(part.values())
        only_b = ev.con.execute(f"""
            SELECT count(*) FROM (SELECT user_id, bool_and(hour(event_ts) BETWEEN ? AND ?) AS inside
                                  FROM activity_day WHERE outcome = 'loaded' AND day = ? AND {where} GROUP BY user_id)
            WHERE inside""", [lo, hi, baseline] + params).fetchall()[0][0]
        if only_b or not dims:
            break
        dims.pop()
    loaded_d = ev.con.execute(f"SELECT count(*) FROM activity_day WHERE outcome = 'loaded' AND day = ? "
                              f"AND hour(event_ts) BETWEEN ? AND ? AND {where}", [day, lo, hi] + params).fetchall()[0][0]
    share = rejected / max(rejected + loaded_d, 1)
    return int(round(only_b * share))


def _delay_stage(sd, hit: pl.DataFrame) -> str:
    """Which pipeline stage held the delayed batches longest, from their spans."""
    if sd is None or hit["trace_id"].null_count() == hit.height:
        return "queue"
    traces = hit.select("trace_id").unique()
    sd.con.register("_slow", traces.to_arrow())
    try:
        row = sd.con.sql(f"""
            WITH p AS (SELECT trace_id, max(end_ns) AS end_ns FROM spans WHERE name = '{N.PUBLISH}' GROUP BY 1),
                 e AS (SELECT trace_id, start_ns, end_ns FROM spans WHERE name = '{N.ENRICH}'),
                 u AS (SELECT trace_id, end_ns - start_ns AS d FROM spans WHERE name = '{N.ENRICH_PROFILE}')
            SELECT median(e.start_ns - p.end_ns), median(u.d)
            FROM _slow s JOIN p USING (trace_id) JOIN e USING (trace_id) JOIN u USING (trace_id)
        """).fetchall()[0]
    finally:
        sd.con.unregister("_slow")
    queue, profile = (row or (0, 0))
    return "queue" if (queue or 0) >= (profile or 0) else "enrich.user_profile"
