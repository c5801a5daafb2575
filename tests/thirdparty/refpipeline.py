"""The reference article's ingestion pipeline, written the way the article writes it.

This is the kind of production pipeline dqkit's investigation layer has to work on without
having built it: per-event Python, the real OpenTelemetry SDK exporting over OTLP/gRPC, its own
DuckDB tables (``events_<type>``, the article's columns only: no batch or trace ids, no load
time, no quarantine, no load audit), and the article's flaws kept on purpose:

* dedup only within one client batch, so a client's retry in a later batch loads twice;
* ``sample_errors`` are the *last* event's errors, not a sample of the batch;
* ``warehouse.total_loaded += len(events)`` even when the insert failed;
* every ``analytics.enrich`` span is a trace of its own and loads have no span links, so no
  trace connects an ingested batch to the rows it became;
* ``event.user_id`` carries the raw user id.

It deliberately imports nothing from dqkit.

Fake clock. The article's spans only carry the real clock, which would put a week of traffic
into the few seconds this runs. Instead every span gets an explicit ``start_time``/``end_time``
(ns) on a per-service virtual clock: the gateway handles a batch at its ``received_at``; the
enricher consumes it ``ENRICH_DELAY_S`` later (or when it is free); the loader loads whatever was
enriched on a ``LOAD_INTERVAL_S`` cadence (the next whole minute). A span's duration is the real
time its code took, added to the service's clock, so durations are measured, not invented.
Metric data points are stamped by the SDK's real clock (only their values use the fake clock:
``analytics.pipeline.lag_seconds`` is load time minus event timestamp).

Faults (constructor arguments), each recorded as a ground truth in :meth:`ReferencePipeline.incidents`:

* ``bad_timestamps``: a client release (platform + app_version) sends unparsable timestamps for
  events whose true timestamp is in a window; validation rejects them (stage ``validate``).
* ``geoip_outage``: the geo-IP service is down while the enricher's clock is in a window; events
  load with ``geo_*`` NULL and ``geo.resolved=false`` (stage ``enrich.geo_ip``).
* ``failing_insert``: inserts into one table fail while the loader's clock is in a window; the
  rows never land but ``warehouse.total_loaded`` still counts them (stage ``warehouse.insert``).
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import json
import time
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ENRICH_DELAY_S = 2.0
LOAD_INTERVAL_S = 60
MAX_FUTURE = timedelta(days=1)
SESSION_GAP = timedelta(minutes=30)
PROFILE_CACHE_TTL = timedelta(hours=1)
QUEUE_TOPIC = "analytics-events"
QUEUE_PARTITIONS = 12
REQUIRED = ("event_id", "event_type", "user_id", "timestamp")
# The columns of every events_<type> table, in order, and their DuckDB types.
COLUMNS = {
    "event_id": "VARCHAR", "user_id": "VARCHAR", "event_type": "VARCHAR", "timestamp": "TIMESTAMPTZ",
    "user_country": "VARCHAR", "user_segment": "VARCHAR", "account_age_days": "INTEGER",
    "geo_country": "VARCHAR", "geo_region": "VARCHAR", "geo_city": "VARCHAR",
    "session_id": "VARCHAR", "session_event_number": "INTEGER", "platform": "VARCHAR", "app_version": "VARCHAR",
}
_ARROW = pa.schema([(c, pa.timestamp("us", tz="UTC") if t == "TIMESTAMPTZ" else pa.int32() if t == "INTEGER" else pa.string())
                    for c, t in COLUMNS.items()])
# The built-in geo-IP table: first IPv4 octet -> (country, region, city). Tiny and coarse, as
# the in-house tables of many pipelines are; pass ``geoip_ranges`` for a real one.
_FIRST_OCTET = {
    3: ("US", "Virginia", "Ashburn"), 5: ("DE", "Hesse", "Frankfurt"), 8: ("US", "California", "Mountain View"),
    13: ("US", "Washington", "Seattle"), 14: ("IN", "Maharashtra", "Mumbai"), 31: ("GB", "England", "London"),
    49: ("IN", "Karnataka", "Bengaluru"), 52: ("US", "Oregon", "Boardman"), 58: ("JP", "Tokyo", "Tokyo"),
    81: ("GB", "England", "Manchester"), 82: ("FR", "Ile-de-France", "Paris"), 101: ("AU", "New South Wales", "Sydney"),
    126: ("JP", "Osaka", "Osaka"), 142: ("CA", "Ontario", "Toronto"), 177: ("BR", "Sao Paulo", "Sao Paulo"),
    189: ("BR", "Rio de Janeiro", "Rio de Janeiro"), 213: ("NL", "North Holland", "Amsterdam"),
}


def _ns(t: datetime) -> int:
    return int(t.timestamp() * 1e9)


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def parse_time(value) -> datetime | None:
    """An ISO-8601 date-time as aware UTC, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


# --- faults ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __contains__(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def iso(self) -> dict:
        z = lambda t: t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"start": z(self.start), "end": z(self.end)}


@dataclass(frozen=True)
class BadTimestamps:
    """A client release sends ``20/11/2026 09:12:00``-style timestamps (no zone, day first)."""

    platform: str
    app_version: str
    window: Window
    """On the event's true (client) timestamp."""


@dataclass(frozen=True)
class FailingInsert:
    table: str
    window: Window
    """On the loader's clock."""


@dataclass
class _Affected:
    events: int = 0
    users: set = field(default_factory=set)


# --- small services -------------------------------------------------------------------------

class _Clock:
    """A service's virtual clock in ns: it never runs backwards and advances by real work time."""

    def __init__(self) -> None:
        self.now = 0

    def at_least(self, ns: int) -> int:
        self.now = max(self.now, ns)
        return self.now


@dataclass(frozen=True)
class Validation:
    valid: bool
    errors: list
    ts: datetime | None


def validate_event_schema(event, received_at: datetime) -> Validation:
    """Required fields present and strings; timestamp parses and is at most a day ahead."""
    if not isinstance(event, dict):
        return Validation(False, ["event: not an object"], None)
    errors = [f"{k}: missing" for k in REQUIRED if event.get(k) is None]
    errors += [f"{k}: not a string" for k in REQUIRED if event.get(k) is not None and not isinstance(event[k], str)]
    ts = parse_time(event.get("timestamp"))
    if isinstance(event.get("timestamp"), str) and ts is None:
        errors.append("timestamp: unparsable")
    elif ts is not None and ts - received_at > MAX_FUTURE:
        errors.append("timestamp: in the future")
    etype = event.get("event_type")
    if isinstance(etype, str) and not (etype[:1].isalpha() and etype.replace("_", "").isalnum() and etype.islower()):
        errors.append("event_type: not a lowercase name")
    return Validation(not errors, errors, ts)


@dataclass(frozen=True)
class Profile:
    country: str | None
    segment: str | None
    account_age_days: int | None
    from_cache: bool


@dataclass(frozen=True)
class Geo:
    country: str | None
    region: str | None
    city: str | None

    @property
    def resolved(self) -> bool:
        return self.country is not None


_UNRESOLVED = Geo(None, None, None)


class GeoIP:
    """IPv4 lookups in a range table (start, end, country[, region, city]) or by first octet."""

    def __init__(self, ranges: Path | None = None) -> None:
        self._starts = None
        if ranges is not None:
            t = pl.read_parquet(ranges).sort("start")
            self._starts = t["start"].cast(pl.Int64).to_list()
            self._ends = t["end"].cast(pl.Int64).to_list()
            self._cols = [t[c].to_list() if c in t.columns else None for c in ("country", "region", "city")]

    def lookup(self, ip) -> Geo:
        try:
            parts = [int(p) for p in ip.split(".")]
        except (AttributeError, ValueError):
            return _UNRESOLVED  # no address, or IPv6: the in-house table has none
        if len(parts) != 4 or not all(0 <= p < 256 for p in parts):
            return _UNRESOLVED
        if self._starts is None:
            return Geo(*_FIRST_OCTET[parts[0]]) if parts[0] in _FIRST_OCTET else _UNRESOLVED
        n = (parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]
        i = bisect.bisect_right(self._starts, n) - 1
        if i < 0 or n > self._ends[i]:
            return _UNRESOLVED
        return Geo(*(c[i] if c is not None else None for c in self._cols))


# --- the pipeline ---------------------------------------------------------------------------

@dataclass
class Counts:
    """What the pipeline did, counted by the code that did it (the fixture's ground truth)."""

    batches: int = 0
    received: int = 0
    invalid: int = 0
    duplicate: int = 0
    published: int = 0
    enriched: int = 0
    loaded: int = 0
    """Rows that really landed in the warehouse."""
    failed_insert_rows: int = 0
    reported_total_loaded: int = 0
    """Sum of ``warehouse.total_loaded`` over all loads (includes failed inserts: the flaw)."""
    loads: int = 0
    inserts: int = 0
    failed_inserts: int = 0
    unreadable_lines: int = 0
    spans: Counter = field(default_factory=Counter)


def otlp_providers(endpoint: str, service_name: str = "analytics-ingestion") -> tuple[TracerProvider, MeterProvider]:
    """A tracer and meter provider exporting to an OTLP/gRPC endpoint (``host:port``), not global."""
    resource = Resource.create({"service.name": service_name})
    tp = TracerProvider(resource=resource)
    # A queue big enough that no span is dropped: the fixture counts every one.
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                             max_queue_size=1 << 20, max_export_batch_size=512, schedule_delay_millis=500))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True), export_interval_millis=60_000)
    return tp, MeterProvider(resource=resource, metric_readers=[reader])


class ReferencePipeline:
    """Ingest, enrich and load client batches as the article does, into ``warehouse``."""

    def __init__(self, warehouse: Path, tracer_provider, meter_provider, profiles: Path | None = None,
                 geoip_ranges: Path | None = None, bad_timestamps: BadTimestamps | None = None,
                 geoip_outage: Window | None = None, failing_insert: FailingInsert | None = None,
                 durable: bool = True) -> None:
        self.tracer = tracer_provider.get_tracer("analytics.ingestion")
        meter = meter_provider.get_meter("analytics.ingestion")
        self.events_ingested = meter.create_counter("analytics.events.ingested", description="Total events ingested by the pipeline")
        self.events_rejected = meter.create_counter("analytics.events.rejected", description="Events rejected due to validation or dedup")
        self.enrichment_latency = meter.create_histogram("analytics.enrichment.latency_ms", description="Time to enrich a single event", unit="ms")
        self.pipeline_lag = meter.create_histogram("analytics.pipeline.lag_seconds",
                                                   description="Delay between event timestamp and warehouse availability", unit="s")
        self.ingestion_batch_size = meter.create_histogram("analytics.ingestion.batch_size", description="Number of events per ingestion batch")
        # One loader thread: these loads are many and small, and the service shares its host.
        # ``durable=False`` skips the fsync of every commit, for a throwaway warehouse in a test.
        self.con = duckdb.connect(str(warehouse), config={"threads": 1, "fsync_mode": "STANDARD" if durable else "NONE"})
        self.tables: set[str] = set()
        self.profiles = {}
        if profiles is not None:
            for row in pl.read_parquet(profiles).iter_rows(named=True):
                self.profiles[row["user_id"]] = row
        self.profile_cache: OrderedDict = OrderedDict()
        self.geoip = GeoIP(geoip_ranges)
        self.sessions: dict[str, list] = {}
        self.queue: list[dict] = []
        self.bad_timestamps, self.geoip_outage, self.failing_insert = bad_timestamps, geoip_outage, failing_insert
        self.affected = {"validate": _Affected(), "enrich.geo_ip": _Affected(), "warehouse.insert": _Affected()}
        self.counts = Counts()
        self.gateway, self.enricher, self.loader = _Clock(), _Clock(), _Clock()

    @contextmanager
    def _span(self, name: str, clock: _Clock):
        """A span on ``clock``: starts at its time, ends after the real time the body took."""
        t0 = time.perf_counter_ns()
        with self.tracer.start_as_current_span(name, start_time=clock.now, end_on_exit=False) as span:
            try:
                yield span
            finally:
                clock.now += max(1, time.perf_counter_ns() - t0)
                span.end(end_time=clock.now)
                self.counts.spans[name] += 1

    # -- input --

    def read_batches(self, path: Path) -> list[dict]:
        """Client batches from NDJSON (plain or gzip), in arrival order."""
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        out = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                b = json.loads(line)
                b["_received"] = parse_time(b["received_at"])
                if b["_received"] is None or not isinstance(b.get("events"), list):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                self.counts.unreadable_lines += 1  # the gateway answers 400; nothing is kept
                continue
            out.append(b)
        out.sort(key=lambda b: b["_received"])
        return out

    def _client_bug(self, batch: dict) -> None:
        """The broken client release's timestamps, before the gateway sees the batch."""
        f, client = self.bad_timestamps, batch.get("client") or {}
        if f is None or client.get("platform") != f.platform or client.get("app_version") != f.app_version:
            return
        for e in batch["events"]:
            ts = parse_time(e.get("timestamp")) if isinstance(e, dict) else None
            if ts is not None and ts in f.window:
                if validate_event_schema(e, batch["_received"]).valid:  # otherwise it was lost anyway
                    self.affected["validate"].events += 1
                    self.affected["validate"].users.add(e["user_id"])
                e["timestamp"] = ts.strftime("%d/%m/%Y %H:%M:%S")

    # -- the article's three functions --

    def ingest_event_batch(self, batch_id: str, events: list, client_info: dict, received_at: datetime) -> list[dict]:
        self.gateway.at_least(_ns(received_at))
        self.counts.batches += 1
        self.counts.received += len(events)
        with self._span("analytics.ingest_batch", self.gateway) as span:
            span.set_attribute("batch.id", batch_id)
            span.set_attribute("batch.event_count", len(events))
            span.set_attribute("client.platform", client_info.get("platform", "unknown"))
            span.set_attribute("client.app_version", client_info.get("app_version", "unknown"))
            span.set_attribute("client.sdk_version", client_info.get("sdk_version", "unknown"))
            self.ingestion_batch_size.record(len(events))

            with self._span("analytics.validate_batch", self.gateway) as val_span:
                valid_events = []
                invalid_count = 0
                validation = Validation(True, [], None)
                for event in events:
                    validation = validate_event_schema(event, received_at)
                    if validation.valid:
                        valid_events.append(dict(event, _ts=validation.ts))
                    else:
                        invalid_count += 1
                val_span.set_attribute("validation.valid_count", len(valid_events))
                val_span.set_attribute("validation.invalid_count", invalid_count)
                if invalid_count > 0:
                    # As the article: the errors of whichever event came last.
                    val_span.add_event("schema_validation_failures", {
                        "invalid_count": invalid_count, "sample_errors": str(validation.errors[:3]),
                    }, timestamp=self.gateway.now)

            with self._span("analytics.deduplicate", self.gateway) as dedup_span:
                seen, deduped_events = set(), []
                for e in valid_events:  # within this batch only
                    if e["event_id"] not in seen:
                        seen.add(e["event_id"])
                        deduped_events.append(e)
                dupes_removed = len(valid_events) - len(deduped_events)
                dedup_span.set_attribute("dedup.input_count", len(valid_events))
                dedup_span.set_attribute("dedup.duplicates_removed", dupes_removed)
                dedup_span.set_attribute("dedup.output_count", len(deduped_events))

            with self._span("analytics.publish_to_queue", self.gateway) as queue_span:
                partitions = set()
                for e in deduped_events:
                    p = int(hashlib.md5(e["user_id"].encode()).hexdigest(), 16) % QUEUE_PARTITIONS
                    partitions.add(p)
                    self.queue.append({"partition": p, "client": client_info, "event": e})
                queue_span.set_attribute("queue.system", "kafka")
                queue_span.set_attribute("queue.topic", QUEUE_TOPIC)
                queue_span.set_attribute("queue.partition_count", len(partitions))
                queue_span.set_attribute("queue.events_published", len(deduped_events))

            span.set_attribute("ingestion.accepted", len(deduped_events))
            span.set_attribute("ingestion.rejected", invalid_count + dupes_removed)
        self.events_ingested.add(len(deduped_events))
        if invalid_count:
            self.events_rejected.add(invalid_count, {"reason": "validation"})
        if dupes_removed:
            self.events_rejected.add(dupes_removed, {"reason": "duplicate"})
        self.counts.invalid += invalid_count
        self.counts.duplicate += dupes_removed
        self.counts.published += len(deduped_events)
        return deduped_events

    def enrich_event(self, event: dict, client_info: dict) -> dict:
        # A new trace per event: the queue message carries no trace context.
        with self._span("analytics.enrich", self.enricher) as span:
            start = self.enricher.now
            span.set_attribute("event.type", event["event_type"])
            span.set_attribute("event.user_id", event["user_id"])
            now = _utc(start)

            with self._span("analytics.enrich.user_profile", self.enricher) as profile_span:
                profile = self.fetch_user_profile(event["user_id"], now, event["_ts"].date())
                event["user_country"] = profile.country
                event["user_segment"] = profile.segment
                event["account_age_days"] = profile.account_age_days
                profile_span.set_attribute("profile.cache_hit", profile.from_cache)

            with self._span("analytics.enrich.geo_ip", self.enricher) as geo_span:
                geo = self.geoip.lookup(event.get("client_ip"))
                if self.geoip_outage is not None and now in self.geoip_outage:
                    if geo.resolved:
                        self.affected["enrich.geo_ip"].events += 1
                        self.affected["enrich.geo_ip"].users.add(event["user_id"])
                    geo = _UNRESOLVED  # the service timed out; the event goes on without geo
                event["geo_country"] = geo.country
                event["geo_region"] = geo.region
                event["geo_city"] = geo.city
                geo_span.set_attribute("geo.resolved", geo.resolved)

            with self._span("analytics.enrich.session", self.enricher) as session_span:
                session_id, number, is_new = self.stitch_session(event["user_id"], event["_ts"])
                event["session_id"] = session_id
                event["session_event_number"] = number
                session_span.set_attribute("session.id", session_id)
                session_span.set_attribute("session.is_new", is_new)

            event["platform"] = client_info.get("platform")
            event["app_version"] = client_info.get("app_version")
        self.enrichment_latency.record((self.enricher.now - start) / 1e6)
        self.counts.enriched += 1
        return event

    def load_events_to_warehouse(self, event_batch: list) -> None:
        self.counts.loads += 1
        with self._span("analytics.warehouse_load", self.loader) as span:
            span.set_attribute("batch.event_count", len(event_batch))

            with self._span("analytics.warehouse.partition", self.loader) as part_span:
                partitions: dict[str, list] = {}
                for e in event_batch:
                    partitions.setdefault(e["event_type"], []).append(e)
                part_span.set_attribute("partitions.count", len(partitions))

            total_loaded = 0
            for event_type, events in partitions.items():
                with self._span("analytics.warehouse.insert", self.loader) as insert_span:
                    insert_span.set_attribute("table.name", f"events_{event_type}")
                    insert_span.set_attribute("insert.row_count", len(events))
                    success, duration_ms = self.bulk_insert(f"events_{event_type}", events)
                    insert_span.set_attribute("insert.success", success)
                    insert_span.set_attribute("insert.duration_ms", duration_ms)
                    total_loaded += len(events)  # the article's flaw: counted even when the insert failed
            span.set_attribute("warehouse.total_loaded", total_loaded)
        self.counts.reported_total_loaded += total_loaded
        done = self.loader.now
        for e in event_batch:
            self.pipeline_lag.record((done - _ns(e["_ts"])) / 1e9)

    # -- what the article's functions call --

    def fetch_user_profile(self, user_id: str, now: datetime, on: date) -> Profile:
        hit = self.profile_cache.get(user_id)
        from_cache = hit is not None and now - hit[0] < PROFILE_CACHE_TTL
        if not from_cache:
            self.profile_cache[user_id] = (now, self.profiles.get(user_id))
        row = self.profile_cache[user_id][1]
        if row is None:
            return Profile(None, None, None, from_cache)
        signup = row.get("signup_date")
        age = (on - signup).days if isinstance(signup, date) else None
        return Profile(row.get("country"), row.get("segment"), age, from_cache)

    def stitch_session(self, user_id: str, ts: datetime) -> tuple[str, int, bool]:
        s = self.sessions.get(user_id)
        if s is None or ts - s[1] > SESSION_GAP or ts < s[1] - SESSION_GAP:
            sid = hashlib.sha1(f"{user_id}|{ts.isoformat()}".encode()).hexdigest()[:16]
            self.sessions[user_id] = [sid, ts, 1]
            return sid, 1, True
        s[1], s[2] = max(s[1], ts), s[2] + 1
        return s[0], s[2], False

    def bulk_insert(self, table: str, events: list) -> tuple[bool, float]:
        """One INSERT from an Arrow table; ``(success, duration_ms)``."""
        t0 = time.perf_counter()
        rows = pa.Table.from_pylist(  # noqa: F841 - DuckDB reads it by name in the INSERT
            [{c: (e["_ts"] if c == "timestamp" else e.get(c)) for c in COLUMNS} for e in events], schema=_ARROW)
        f = self.failing_insert
        try:
            if f is not None and f.table == table and _utc(self.loader.now) in f.window:
                raise duckdb.IOException(f'Could not write to table "{table}": disk quota exceeded')
            if table not in self.tables:
                cols = ", ".join(f'"{c}" {t}' for c, t in COLUMNS.items())
                self.con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({cols})')
                self.tables.add(table)
            self.con.execute(f'INSERT INTO "{table}" SELECT * FROM rows')  # DuckDB scans the Arrow table in place
            ok = True
            self.counts.loaded += len(events)
        except duckdb.Error:
            ok = False  # logged by the service; the rows are gone
            self.counts.failed_inserts += 1
            self.counts.failed_insert_rows += len(events)
            if f is not None and f.table == table:
                self.affected["warehouse.insert"].events += len(events)
                self.affected["warehouse.insert"].users.update(e["user_id"] for e in events)
        self.counts.inserts += 1
        return ok, round((time.perf_counter() - t0) * 1000, 3)

    # -- driving it --

    def _flush(self, pending: dict, until_ns: int | None) -> None:
        for tick in sorted(pending):
            if until_ns is not None and tick > until_ns:
                break
            self.loader.at_least(tick)
            self.load_events_to_warehouse(pending.pop(tick))

    def run(self, path: Path) -> Counts:
        """Replay a file of client batches through ingest, the queue, enrichment and loads."""
        pending: dict[int, list] = {}
        step = LOAD_INTERVAL_S * 10**9
        for b in self.read_batches(path):
            received_ns = _ns(b["_received"])
            self._flush(pending, received_ns)
            self._client_bug(b)
            client = b.get("client") or {}
            self.ingest_event_batch(b.get("batch_id"), b["events"], client, b["_received"])
            self.enricher.at_least(max(self.gateway.now, received_ns + int(ENRICH_DELAY_S * 1e9)))
            consumed, self.queue = self.queue, []
            for msg in consumed:
                e = self.enrich_event(msg["event"], msg["client"])
                tick = (self.enricher.now // step + 1) * step
                pending.setdefault(tick, []).append(e)
        self._flush(pending, None)
        return self.counts

    def close(self) -> None:
        self.con.close()

    def incidents(self) -> list[dict]:
        """The ground truth of each injected fault: stage, kind, segment, window, events, users."""
        out = []
        if self.bad_timestamps is not None:
            f, a = self.bad_timestamps, self.affected["validate"]
            out.append({"stage": "validate", "kind": "drop", "segment": {"platform": f.platform, "app_version": f.app_version},
                        "window": f.window.iso(), "window_on": "event timestamp", "events": a.events, "users": len(a.users)})
        if self.geoip_outage is not None:
            a = self.affected["enrich.geo_ip"]
            out.append({"stage": "enrich.geo_ip", "kind": "degraded", "segment": {}, "window": self.geoip_outage.iso(),
                        "window_on": "enrichment time", "events": a.events, "users": len(a.users)})
        if self.failing_insert is not None:
            f, a = self.failing_insert, self.affected["warehouse.insert"]
            out.append({"stage": "warehouse.insert", "kind": "drop", "segment": {"table": f.table}, "window": f.window.iso(),
                        "window_on": "load time", "events": a.events, "users": len(a.users)})
        return out
