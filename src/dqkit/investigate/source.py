"""Sources: where a pipeline's events, quarantine and load audit are, and what their columns mean.

The investigation never assumes dqkit's own warehouse. A :class:`Source` names the event tables
(a list, a ``events_*`` pattern or a view), maps dqkit's canonical columns (``event_id``,
``user_id``, ``event_ts``, ``received_at``, ``loaded_at``, ``platform``, ...) to the source's
columns or SQL expressions, and says whether a quarantine table, a load audit and per-delivery
ledgers exist. Three ways to get one:

* the presets ``dqkit`` (a warehouse dqkit's pipeline wrote) and ``reference`` (tables as the
  reference article's code writes them: ``events_<type>`` with ``event_id, user_id, event_type,
  timestamp, user_country, user_segment, account_age_days, geo_*, session_id,
  session_event_number, platform, app_version`` and nothing else);
* a mapping file (TOML) for any other warehouse, e.g. Segment's or Snowplow's tables;
* :func:`detect`, which picks a preset when the warehouse's tables leave no doubt.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from dqkit.errors import InputError

# Canonical event columns and their types; a source maps each to a column or SQL expression,
# or leaves it out (then it is NULL, and whatever needs it says it is unknown).
EVENT_COLUMNS: dict[str, str] = {
    "event_id": "VARCHAR", "user_id": "VARCHAR", "event_type": "VARCHAR", "event_ts": "TIMESTAMPTZ",
    "received_at": "TIMESTAMPTZ", "loaded_at": "TIMESTAMPTZ", "platform": "VARCHAR", "app_version": "VARCHAR",
    "sdk_version": "VARCHAR", "country": "VARCHAR", "geo_country": "VARCHAR", "user_country": "VARCHAR",
    "user_segment": "VARCHAR", "account_age_days": "INTEGER", "session_id": "VARCHAR", "session_event_number": "BIGINT",
    "batch_id": "VARCHAR", "trace_id": "VARCHAR",
}
REQUIRED = ("event_id", "user_id", "event_ts")

# What each missing column costs, said once, in the words the analyst reads.
MISSING_SAYS: dict[str, str] = {
    "received_at": "no arrival times: lag is measured from the event's own time, and late arrivals cannot be told from late events",
    "loaded_at": "no load times: rows are placed by event time when compared with insert spans, and lag comes from the lag metric if it was exported",
    "trace_id": "no trace ids on rows: spans and rows are compared per table and hour, not per batch",
    "batch_id": "no batch ids on rows: a row cannot be traced to the client batch that carried it",
    "sdk_version": "no SDK version: segments are searched over platform, app version, event type and country only",
    "platform": "no platform: segments cannot name a platform",
    "app_version": "no app version: segments cannot name an app version",
}
QUARANTINE_SAYS = "no quarantine table: invalid and duplicate events are counted from spans; which users they belonged to is unknown"
AUDIT_SAYS = "no load audit: inserts are known only from insert spans"
DELIVERIES_SAYS = "no delivery ledger: events still in flight are known only from spans"


@dataclass(frozen=True)
class Quarantine:
    """A table of events that did not load, with the stage and reason they were rejected for."""

    table: str
    columns: dict[str, str] = field(default_factory=dict)
    """Canonical name (``stage``, ``reason``, ``detail``, ``raw``, ``event_id``, ...) to column or expression."""


@dataclass(frozen=True)
class Source:
    """Where a pipeline's warehouse keeps its events, and what the columns mean."""

    name: str
    columns: dict[str, str]
    """Canonical column (see :data:`EVENT_COLUMNS`) to the source's column or SQL expression."""
    tables: tuple[str, ...] = ()
    """Event tables by name; empty means :attr:`table_pattern`."""
    table_pattern: str | None = "events_*"
    """Glob over the warehouse's base tables, e.g. ``events_*``."""
    event_type: str | None = None
    """Column or expression of the event type; None: the table name without its ``events_`` prefix."""
    quarantine: Quarantine | None = None
    audit: str | None = None
    """A dqkit-shaped ``load_audit`` table, if the pipeline keeps one."""
    deliveries: str | None = None
    """A dqkit-shaped ``deliveries`` table (per-batch ledger), if the pipeline keeps one."""
    origin: str = "preset"

    def has(self, column: str) -> bool:
        """The source maps canonical ``column`` to something of its own."""
        return column in self.columns

    def missing(self) -> list[str]:
        """One sentence for each thing this source cannot tell."""
        out = [MISSING_SAYS[c] for c in MISSING_SAYS if not self.has(c)]
        if self.quarantine is None:
            out.append(QUARANTINE_SAYS)
        if self.audit is None:
            out.append(AUDIT_SAYS)
        if self.deliveries is None:
            out.append(DELIVERIES_SAYS)
        return out


DQKIT = Source(
    name="dqkit",
    columns={c: c for c in EVENT_COLUMNS if c != "country"} | {"country": "geo_country"},
    quarantine=Quarantine("rejected_events", {c: c for c in (
        "event_id", "user_id", "event_type", "event_ts", "received_at", "platform", "app_version", "sdk_version",
        "batch_id", "trace_id", "stage", "reason", "detail", "raw", "duplicate_of_batch", "duplicate_of_trace")}),
    audit="load_audit",
    deliveries="deliveries",
)

REFERENCE = Source(
    name="reference",
    columns={"event_id": "event_id", "user_id": "user_id", "event_type": "event_type", "event_ts": '"timestamp"',
             "platform": "platform", "app_version": "app_version", "country": "geo_country",
             "geo_country": "geo_country", "user_country": "user_country", "user_segment": "user_segment",
             "account_age_days": "account_age_days", "session_id": "session_id", "session_event_number": "session_event_number"},
)

PRESETS = {"dqkit": DQKIT, "reference": REFERENCE}
SOURCE_HELP = ("--source dqkit (a warehouse dqkit wrote), --source reference (the reference article's "
               "events_<type> tables) or --source FILE.toml (a mapping file; see the README)")


def from_toml(path: str | Path) -> Source:
    """A source from a mapping file (TOML).

    For example::

    name = "segment-warehouse"
    [events]
    tables = ["tracks"]          # or: table_pattern = "events_*"
    event_type = "event"         # column or SQL expression; omitted: suffix of the table name
    [columns]
    event_id = "id"
    user_id = "coalesce(user_id, anonymous_id)"
    event_ts = "timestamp"
    [quarantine]                 # optional
    table = "rejected"
    [quarantine.columns]
    stage = "'validate'"
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"source mapping {str(p)!r} not found; {SOURCE_HELP}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"source mapping {str(p)!r} is not valid TOML: {exc}") from None
    ev = doc.get("events", {})
    cols = doc.get("columns", {})
    if not isinstance(ev, dict) or not isinstance(cols, dict):
        raise InputError(f"source mapping {str(p)!r}: [events] and [columns] must be tables")
    unknown = sorted(set(cols) - set(EVENT_COLUMNS))
    if unknown:
        raise InputError(f"source mapping {str(p)!r}: unknown column name(s) {', '.join(unknown)}; "
                         f"known: {', '.join(EVENT_COLUMNS)}")
    lacking = [c for c in REQUIRED if c not in cols]
    if lacking:
        raise InputError(f"source mapping {str(p)!r}: [columns] must map {', '.join(lacking)}")
    tables = ev.get("tables", [])
    if isinstance(tables, str):
        tables = [tables]
    pattern = ev.get("table_pattern")
    if not tables and not pattern:
        raise InputError(f"source mapping {str(p)!r}: [events] needs tables = [...] or table_pattern = \"events_*\"")
    q = doc.get("quarantine")
    quarantine = None
    if q:
        if "table" not in q:
            raise InputError(f"source mapping {str(p)!r}: [quarantine] needs table = \"...\"")
        quarantine = Quarantine(q["table"], dict(q.get("columns", {})))
    columns = {str(k): str(v) for k, v in cols.items()}
    if "country" not in columns and "geo_country" in columns:
        columns["country"] = columns["geo_country"]
    return Source(
        name=str(doc.get("name", p.stem)), columns=columns, tables=tuple(tables), table_pattern=pattern if not tables else None,
        event_type=ev.get("event_type"), quarantine=quarantine, audit=doc.get("audit", {}).get("table"),
        deliveries=doc.get("deliveries", {}).get("table"), origin=str(p),
    )


def resolve(source: Source | str | Path | None, con: duckdb.DuckDBPyConnection, schema: str = "wh") -> Source:
    """The source to use for the warehouse attached as ``schema`` on ``con``: a given one (a
    preset name or a mapping file), or detected from its tables."""
    if isinstance(source, Source):
        return source
    if source is None or str(source) == "":
        return detect(con, schema)
    s = str(source)
    if s in PRESETS:
        return PRESETS[s]
    if s.endswith(".toml") or Path(s).is_file():
        return from_toml(s)
    raise InputError(f"unknown source {s!r}; use {SOURCE_HELP}")


def base_tables(con: duckdb.DuckDBPyConnection, schema: str = "wh") -> dict[str, set[str]]:
    """Every table and view of the attached warehouse, with its column names."""
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_catalog = ? AND table_schema = 'main'",
        [schema]).fetchall()
    out: dict[str, set[str]] = {}
    for t, c in rows:
        out.setdefault(t, set()).add(c)
    return out


def detect(con: duckdb.DuckDBPyConnection, schema: str = "wh") -> Source:
    """``dqkit`` or ``reference`` when the warehouse's tables leave no doubt; else a clear error."""
    tables = base_tables(con, schema)
    events = {t: c for t, c in tables.items() if t.startswith("events_")}
    if {"deliveries", "rejected_events"} <= set(tables) and all("trace_id" in c for c in events.values()):
        return DQKIT
    if events and all({"event_id", "user_id", "timestamp"} <= c for c in events.values()):
        return REFERENCE
    listed = ", ".join(sorted(tables)[:12]) or "no tables at all"
    raise InputError(f"cannot tell what this warehouse's tables mean (it has {listed}); pass {SOURCE_HELP}")


def event_tables(source: Source, con: duckdb.DuckDBPyConnection, schema: str = "wh") -> list[str]:
    """The source's event tables present in the warehouse (an error naming what is missing)."""
    present = base_tables(con, schema)
    if source.tables:
        missing = [t for t in source.tables if t not in present]
        if missing:
            raise InputError(f"source {source.name!r}: table(s) {', '.join(missing)} not in the warehouse "
                             f"(it has {', '.join(sorted(present)[:12]) or 'no tables'}); pass {SOURCE_HELP}")
        return list(source.tables)
    found = sorted(t for t in present if fnmatch.fnmatchcase(t, source.table_pattern or "events_*") and t != "events")
    return found


def with_columns_present(source: Source, con: duckdb.DuckDBPyConnection, tables: list[str], schema: str = "wh") -> Source:
    """The source with plain-column mappings dropped where a table lacks that column, and a
    clear error when a required one is missing everywhere."""
    present = base_tables(con, schema)
    cols = dict(source.columns)
    for canon, expr in source.columns.items():
        name = expr.strip('"')
        if not name.isidentifier():
            continue  # an expression: DuckDB will say if it does not bind
        lacking = [t for t in tables if name not in present.get(t, set())]
        if lacking and len(lacking) == len(tables):
            if canon in REQUIRED:
                raise InputError(f"source {source.name!r}: column {name!r} ({canon}) is in none of the event tables "
                                 f"({', '.join(tables[:5])}); fix the mapping or pass {SOURCE_HELP}")
            del cols[canon]
    q = source.quarantine
    if q is not None and q.table not in present:
        q = None
    audit = source.audit if source.audit in present else None
    deliveries = source.deliveries if source.deliveries in present else None
    return replace(source, columns=cols, quarantine=q, audit=audit, deliveries=deliveries)
