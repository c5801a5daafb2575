"""A faithful implementation of the reference design, for comparison only.

As the article does it: per batch, validate / deduplicate / publish in Python with one SDK span
each; per event, ``analytics.enrich`` with three child spans (profile, geo-IP, session); per
batch, partition by event type and one insert per partition, each with its span. Spans go
through the SDK's BatchSpanProcessor to an OTLP/JSON-lines file exporter. Not used by dqkit.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

REQUIRED = ("event_id", "event_type", "user_id", "timestamp")


class FileExporter(SpanExporter):
    def __init__(self, path: Path) -> None:
        self.fh = open(path, "w")  # noqa: SIM115

    def export(self, spans):
        self.fh.write(MessageToJson(encode_spans(spans), indent=None) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.fh.close()


def run(sample: Path, profiles: Path, geo_dir: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(FileExporter(out / "traces.jsonl"), max_queue_size=100_000))
    tracer = provider.get_tracer("analytics.ingestion")
    prof = {r["user_id"]: r for r in pl.read_parquet(profiles).iter_rows(named=True)}
    v4 = pl.read_parquet(geo_dir / "ipv4.parquet").sort("start")
    starts, ends, countries = v4["start"].to_list(), v4["end"].to_list(), v4["country"].to_list()
    import bisect

    def geo(ip):
        try:
            n = int(ipaddress.IPv4Address(ip))
        except (ValueError, TypeError):
            return None
        i = bisect.bisect_right(starts, n) - 1
        return countries[i] if i >= 0 and n <= ends[i] else None

    con = duckdb.connect(str(out / "wh.duckdb"))
    seen: set[str] = set()
    sessions: dict[str, tuple[str, int, str]] = {}
    tables: set[str] = set()
    n_events = 0
    t0 = time.perf_counter()
    for line in gzip.open(sample, "rt"):
        batch = json.loads(line)
        events = batch.get("events", [])
        n_events += len(events)
        with tracer.start_as_current_span("analytics.ingest_batch") as span:
            span.set_attribute("batch.id", batch.get("batch_id", ""))
            span.set_attribute("batch.event_count", len(events))
            with tracer.start_as_current_span("analytics.validate_batch") as vs:
                valid = [e for e in events if isinstance(e, dict) and all(isinstance(e.get(k), str) for k in REQUIRED)
                         and e["event_type"].isidentifier()]
                vs.set_attribute("validation.valid_count", len(valid))
            with tracer.start_as_current_span("analytics.deduplicate") as ds:
                unique = []
                for e in valid:
                    if e["event_id"] not in seen:
                        seen.add(e["event_id"])
                        unique.append(e)
                ds.set_attribute("dedup.output_count", len(unique))
            with tracer.start_as_current_span("analytics.publish_to_queue") as ps:
                ps.set_attribute("queue.events_published", len(unique))
        enriched = []
        for e in unique:
            with tracer.start_as_current_span("analytics.enrich") as es:
                es.set_attribute("event.type", e["event_type"])
                with tracer.start_as_current_span("analytics.enrich.user_profile") as s1:
                    p = prof.get(e["user_id"])
                    s1.set_attribute("profile.cache_hit", p is not None)
                with tracer.start_as_current_span("analytics.enrich.geo_ip") as s2:
                    g = geo(e.get("client_ip"))
                    s2.set_attribute("geo.resolved", g is not None)
                with tracer.start_as_current_span("analytics.enrich.session") as s3:
                    sid, n, last = sessions.get(e["user_id"], ("", 0, ""))
                    if not sid or e["timestamp"][:13] != last[:13]:
                        sid, n = f"{e['user_id']}/{e['timestamp']}", 0
                    sessions[e["user_id"]] = (sid, n + 1, e["timestamp"])
                    s3.set_attribute("session.is_new", n == 0)
                enriched.append({"event_id": e["event_id"], "event_type": e["event_type"], "user_id": e["user_id"],
                                 "event_ts": e["timestamp"], "batch_id": batch.get("batch_id"), "geo_country": g,
                                 "user_country": p["country"] if p else None, "session_id": sid})
        with tracer.start_as_current_span("analytics.warehouse_load") as ls:
            parts: dict[str, list] = {}
            with tracer.start_as_current_span("analytics.warehouse.partition"):
                for e in enriched:
                    parts.setdefault(e["event_type"], []).append(e)
            for etype, rows in parts.items():
                with tracer.start_as_current_span("analytics.warehouse.insert") as ins:
                    name = f"events_{etype}"
                    if name not in tables:
                        con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (event_id VARCHAR, event_type VARCHAR, user_id VARCHAR, '
                                    'event_ts VARCHAR, batch_id VARCHAR, geo_country VARCHAR, user_country VARCHAR, session_id VARCHAR)')
                        tables.add(name)
                    con.register("_rows", pa.Table.from_pylist(rows))
                    con.execute(f'INSERT INTO "{name}" SELECT * FROM _rows')
                    con.unregister("_rows")
                    ins.set_attribute("insert.row_count", len(rows))
            ls.set_attribute("warehouse.total_loaded", len(enriched))
    provider.shutdown()
    con.close()
    secs = time.perf_counter() - t0
    return {"events": n_events, "seconds": secs, "events_per_s": n_events / secs}
