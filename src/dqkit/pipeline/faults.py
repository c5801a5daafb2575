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

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from dqkit.errors import ConfigError
from dqkit.spec import parse_duration, rate, split_spec, window

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
        return NAMES[self.name][0]

    @property
    def kind(self) -> str:
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
        if affected.is_empty():
            return
        self.events += affected.height
        u = affected.select(pl.col("user_id").unique())
        self.users = u if self.users is None else pl.concat([self.users, u]).unique()
        lo, hi = affected[t_col].min(), affected[t_col].max()
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)

    def to_dict(self) -> dict:
        f = self.fault

        def iso(t):
            return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t is not None else None

        def from_ns(ns):
            return datetime.fromtimestamp(ns / 1e9, UTC) if ns is not None else None

        segment = {k: v for k, v in (("platform", f.platform), ("table", f.table)) if v}
        return {
            "name": f.name, "spec": f.spec, "stage": f.stage, "kind": f.kind, "segment": segment,
            "window": {"start": iso(f.start or from_ns(self.first_ns)), "end": iso(f.end or from_ns(self.last_ns))},
            "events": self.events, "users": 0 if self.users is None else self.users.height,
        }
