"""Pipeline faults injected at replay time, and the ground truth of what they did.

Grammar (repeat ``--fault`` for several)::

    NAME[:key=value,key=value,...]

    NAME      geoip_outage | profile_outage | profile_slow | insert_failure | queue_backlog
    start     ISO-8601 UTC on the sample's timeline, e.g. 2026-10-08T08:00:00Z
    end       ISO-8601 UTC; or duration=90m | 4h | 2d (from start)
    rate      0..1, share of affected events (geo, profile) / batches (slow, backlog) / inserts
    table     events_<type> (insert_failure only; default: every table)
    delay     e.g. 30s, 15m, 5h (profile_slow, queue_backlog; required there)
    platform  only batches from this client platform

Example: ``insert_failure:table=events_like,rate=1.0,start=2026-10-08T08:00:00Z,end=2026-10-08T20:00:00Z``.
Without start/end a fault covers the whole replay. Selection by ``rate`` is deterministic
(a hash of the event id, batch trace id or insert), so the same replay fails the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from dqkit.errors import ConfigError
from dqkit.spec import parse_duration, rate, split_spec, window
from dqkit.timefmt import iso_z

NAMES = {
    # name: (stage, kind, what rate selects)
    "geoip_outage": ("enrich.geo_ip", "degraded", "event"),
    "profile_outage": ("enrich.user_profile", "degraded", "event"),
    "profile_slow": ("enrich.user_profile", "delay", "batch"),
    "insert_failure": ("warehouse.insert", "drop", "insert"),
    "queue_backlog": ("queue", "delay", "batch"),
}
_KEYS = {"start", "end", "duration", "rate", "table", "delay", "platform"}


@dataclass(frozen=True)
class Fault:
    """One pipeline fault as parsed from its spec (see the module's grammar)."""

    name: str
    start: datetime | None = None
    end: datetime | None = None
    rate: float = 1.0
    table: str | None = None
    delay: timedelta | None = None
    platform: str | None = None
    spec: str = ""

    @property
    def stage(self) -> str:
        """The pipeline stage the fault hits."""
        return NAMES[self.name][0]

    @property
    def kind(self) -> str:
        """``degraded``, ``delay`` or ``drop``."""
        return NAMES[self.name][1]

    def active(self, t_ns: pl.Expr, platform: pl.Expr) -> pl.Expr:
        """Rows (by replay-clock time ``t_ns`` and client platform) inside this fault's reach."""
        cond = pl.lit(True)
        if self.start is not None:
            cond = cond & (t_ns >= int(self.start.timestamp() * 1e9))
        if self.end is not None:
            cond = cond & (t_ns < int(self.end.timestamp() * 1e9))
        if self.platform is not None:
            cond = cond & (platform == self.platform)
        return cond

    def chosen(self, key: pl.Expr) -> pl.Expr:
        """Deterministic selection of a ``rate`` share by a text key."""
        if self.rate >= 1.0:
            return pl.lit(True)
        salt = sum(map(ord, self.spec or self.name))
        return (key.hash(seed=salt) % 1_000_000) < int(self.rate * 1_000_000)


def parse_fault(spec: str) -> Fault:
    """Parse ``NAME[:key=value,...]``; a malformed spec raises :class:`ConfigError` naming the bad part."""
    name, kv = split_spec(spec, "--fault", list(NAMES), _KEYS)
    where = f"--fault {spec!r}: "
    start, end = window(kv, where)
    delay = parse_duration(kv["delay"], where + "delay") if "delay" in kv else None
    if NAMES[name][1] == "delay" and delay is None:
        raise ConfigError(where + f"{name} needs delay=, e.g. delay=5h")
    table = kv.get("table")
    if table is not None and (name != "insert_failure" or not re.fullmatch(r"events_[a-z][a-z0-9_]{0,47}", table)):
        raise ConfigError(where + "table= applies to insert_failure and must look like events_<type>")
    return Fault(name, start, end, rate(kv, where), table, delay, kv.get("platform"), spec.strip())


@dataclass
class FaultTruth:
    """What one fault did, accumulated over the chunks of a replay."""

    fault: Fault
    events: int = 0
    users: pl.DataFrame | None = None
    first_ns: int | None = None
    last_ns: int | None = None

    def add(self, affected: pl.DataFrame, t_col: str) -> None:
        """Count ``affected`` events (with ``user_id`` and the replay-clock column ``t_col``)."""
        if affected.is_empty():
            return
        self.events += affected.height
        u = affected.select(pl.col("user_id").unique())
        self.users = u if self.users is None else pl.concat([self.users, u]).unique()
        lo, hi = affected[t_col].min(), affected[t_col].max()
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)

    def to_dict(self) -> dict:
        """The ground truth as JSON-ready data: stage, kind, segment, window, events, users."""
        f = self.fault

        def iso(t):
            return iso_z(t) if t is not None else None

        def from_ns(ns):
            return datetime.fromtimestamp(ns / 1e9, UTC) if ns is not None else None

        segment = {k: v for k, v in (("platform", f.platform), ("table", f.table)) if v}
        return {
            "name": f.name, "spec": f.spec, "stage": f.stage, "kind": f.kind, "segment": segment,
            "window": {"start": iso(f.start or from_ns(self.first_ns)), "end": iso(f.end or from_ns(self.last_ns))},
            "events": self.events, "users": 0 if self.users is None else self.users.height,
        }


class FaultPlan:
    """The faults of one replay: which rows each one hits, and what it did (its truth).

    Every method marks the rows a fault reaches (by replay-clock time, platform and its
    deterministic ``rate`` selection) and adds them to that fault's :class:`FaultTruth`.
    """

    def __init__(self, faults: tuple[Fault, ...] | list[Fault] = ()) -> None:
        """Plan ``faults``; with none, every method leaves its frame as it is."""
        self.truths = [FaultTruth(f) for f in faults]

    def _of(self, name: str) -> list[FaultTruth]:
        return [ft for ft in self.truths if ft.fault.name == name]

    def batch_delay(self, batches: pl.DataFrame, name: str, t_col: str, published: pl.DataFrame) -> pl.Expr:
        """Extra replay-clock nanoseconds for the batches a delay fault ``name`` hits (0 elsewhere).

        Args:
            batches: per-delivery frame with ``delivery_key, trace_id, platform, published`` and ``t_col``.
            name: ``queue_backlog`` or ``profile_slow``.
            t_col: the replay-clock column the fault's window is judged on.
            published: ``delivery_key, user_id`` of the events published (what the delay touches).
        """
        delay = pl.lit(0, pl.Int64)
        for ft in self._of(name):
            f = ft.fault
            hit = f.active(pl.col(t_col), pl.col("platform")) & f.chosen(pl.col("trace_id")) & (pl.col("published") > 0)
            mask = batches.select(hit.alias("hit"))["hit"]
            ft.add(published.join(batches.filter(mask).select("delivery_key", t_col), on="delivery_key"), t_col)
            assert f.delay is not None  # parse_fault requires one for delay faults
            delay = delay + pl.when(hit).then(int(f.delay.total_seconds() * 1e9)).otherwise(0)
        return delay

    def degrade(self, events: pl.DataFrame, name: str, cols: list[str], flag: str | None = None) -> pl.DataFrame:
        """Blank ``cols`` of the events an outage ``name`` hits: they load degraded, not dropped.

        ``events`` needs ``event_id, user_id, platform, t_consumed``; ``flag`` names a boolean
        column set for the events hit.
        """
        hit_all = pl.lit(False)
        for ft in self._of(name):
            f = ft.fault
            hit = f.active(pl.col("t_consumed"), pl.col("platform")) & f.chosen(pl.col("event_id"))
            ft.add(events.filter(hit), "t_consumed")
            hit_all = hit_all | hit
        if not self._of(name) and flag is None:
            return events
        out = events.with_columns(_hit=hit_all)
        out = out.with_columns([pl.when(pl.col("_hit")).then(None).otherwise(pl.col(c)).alias(c) for c in cols])
        if flag:
            out = out.with_columns(pl.col("_hit").alias(flag))
        return out.drop("_hit")

    def mark_inserts(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` with ``injected``: true where an ``insert_failure`` fails the row's insert
        (chosen per table and load; needs ``table, t_load, batch_platform, user_id``)."""
        injected = pl.lit(False)
        for ft in self._of("insert_failure"):
            f = ft.fault
            hit = f.active(pl.col("t_load"), pl.col("batch_platform")) & f.chosen(
                pl.concat_str(pl.col("table"), pl.col("t_load").cast(pl.String)))
            if f.table:
                hit = hit & (pl.col("table") == f.table)
            ft.add(rows.filter(hit & ~injected), "t_load")
            injected = injected | hit
        return rows.with_columns(injected=injected)

    def to_dicts(self) -> list[dict]:
        """The ground truth of each fault (:meth:`FaultTruth.to_dict`)."""
        return [ft.to_dict() for ft in self.truths]

    def write_truth(self, path: Path) -> None:
        """Write the ground truth as JSON (``{"faults": [...]}``) to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"faults": self.to_dicts()}, indent=2) + "\n")
