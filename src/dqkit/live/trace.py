"""The ingestion endpoint's spans: per accepted request an HTTP server span and, as its child, the
queue send span whose context the record carries as ``traceparent``.

Both are in the delivery's own trace (:func:`dqkit.pipeline.span_writer.delivery_trace_id`), so the
consumer's ``analytics.ingest_batch`` (the send span's child) and the enrich and load spans after
it continue the trace the request started. Spans are collected as rows and rendered column-wise
(:mod:`dqkit.otlp_json`) about once a second to ``traces-serve.jsonl`` in the telemetry folder,
where span readers find it beside the pipeline's ``traces.jsonl``.
"""

from __future__ import annotations

import os
import threading

import polars as pl

from dqkit.otlp_json import (
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    i,
    link_arrays,
    s,
    span,
)
from dqkit.telemetry import Telemetry, TelemetryConfig

SERVE_TRACES = "traces-serve.jsonl"

_SCHEMA = {
    "trace_id": pl.String, "http_sid": pl.String, "send_sid": pl.String, "route": pl.String, "status": pl.Int64,
    "body_bytes": pl.Int64, "events": pl.Int64, "t_start": pl.Int64, "t_sent": pl.Int64, "t_end": pl.Int64,
    "partition": pl.Int64, "offset": pl.Int64,
}


class RequestSpans:
    """Collects accepted requests and writes their spans from a background thread."""

    def __init__(self, telemetry_dir, system: str, topic: str, interval_s: float = 1.0) -> None:
        base = TelemetryConfig.from_env(telemetry_dir)
        self.telemetry = Telemetry(TelemetryConfig(
            out_dir=base.out_dir, resource={**base.resource, "dqkit.clock": "live", "dqkit.process": "serve"},
            otlp_traces=base.otlp_traces, otlp_metrics=False, protocol=base.protocol, traces_file=SERVE_TRACES))
        self.system, self.topic = system, topic
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._loop, name="dqkit-serve-spans", daemon=True)
        self._thread.start()

    def add(self, trace_id: str, send_sid: str, route: str, status: int, body_bytes: int, events: int,
            t_start: int, t_sent: int, t_end: int, partition: int, offset: int) -> None:
        """Record one accepted request (times in ns) for the next flush; its HTTP span gets a fresh span id."""
        row = (trace_id, os.urandom(8).hex(), send_sid, route, status, body_bytes, events, t_start, t_sent, t_end,
               partition, offset)
        with self._lock:
            self._rows.append(row)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Write the spans of every request recorded since the last flush."""
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            self.telemetry.emit_spans(self.render(pl.DataFrame(rows, schema=_SCHEMA, orient="row")))

    def render(self, f: pl.DataFrame) -> list:
        """OTLP span arrays for request rows ``f``: an HTTP server span per request and its queue send span as child."""
        # One array per route: an HTTP server span is named "POST {route}" (HTTP semantic conventions).
        http = [span(
            g, f"POST {route}", KIND_SERVER, pl.col("trace_id"), pl.col("http_sid"), None, pl.col("t_start"), pl.col("t_end"),
            [s("http.request.method", "POST"), s("http.route", route), s("url.path", route),
             i("http.response.status_code", pl.col("status")), i("http.request.body.size", pl.col("body_bytes")),
             i("batch.event_count", pl.col("events"))],
        ) for (route,), g in f.group_by("route", maintain_order=True)]
        offset_key = "messaging.kafka.offset" if self.system == "kafka" else "messaging.message.id"
        send = span(
            f, f"send {self.topic}", KIND_PRODUCER, pl.col("trace_id"), pl.col("send_sid"), pl.col("http_sid"),
            pl.col("t_start"), pl.col("t_sent"),
            [s("messaging.system", self.system), s("messaging.destination.name", self.topic),
             s("messaging.operation.type", "send"), s("messaging.operation.name", "send"),
             s("messaging.destination.partition.id", pl.col("partition").cast(pl.String)),
             (i(offset_key, pl.col("offset")) if self.system == "kafka" else s(offset_key, pl.col("offset").cast(pl.String))),
             i("batch.event_count", pl.col("events"))],
        )
        return [*http, send]

    def close(self) -> None:
        """Stop the background thread, write the last spans and close the telemetry."""
        self._stop.set()
        self._thread.join()
        self.flush()
        self.telemetry.close()



CONSUME_TRACES = "traces-consume.jsonl"


class ReceiveSpans:
    """The consumer's side: one ``receive {topic}`` span per chunk of records (its own trace), with
    ``messaging.batch.message_count`` and a link to each record's send span carrying the record's
    partition and offset (the messaging conventions' batch receive). Written after the chunk's
    warehouse commit to ``traces-consume.jsonl``."""

    def __init__(self, telemetry_dir, system: str, topic: str, group: str | None = None) -> None:
        base = TelemetryConfig.from_env(telemetry_dir)
        self.telemetry = Telemetry(TelemetryConfig(
            out_dir=base.out_dir, resource={**base.resource, "dqkit.clock": "live", "dqkit.process": "consume"},
            otlp_traces=base.otlp_traces, otlp_metrics=False, protocol=base.protocol, traces_file=CONSUME_TRACES))
        self.telemetry.recover(set())  # a loader killed mid-write leaves at most part of a line
        self.system, self.topic, self.group = system, topic, group

    def emit(self, contexts: list[tuple[str, str, int, int]], t_start: int, t_end: int) -> None:
        """``contexts``: (trace id, send span id, partition, offset) per record that named its sender."""
        trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
        links = link_arrays(
            pl.DataFrame(contexts, schema={"t": pl.String, "s": pl.String, "partition": pl.Int64, "offset": pl.Int64},
                         orient="row").with_columns(sid=pl.lit(span_id)),
            "sid", "t", "s", [s("messaging.destination.partition.id", pl.col("partition").cast(pl.String)),
                             i("messaging.kafka.offset" if self.system == "kafka" else "dqkit.queue.offset", pl.col("offset"))])
        f = pl.DataFrame({"trace_id": [trace_id], "sid": [span_id], "t0": [t_start], "t1": [t_end],
                          "n": [len(contexts)]}).join(links, on="sid", how="left")
        attrs = [s("messaging.system", self.system), s("messaging.destination.name", self.topic),
                 s("messaging.operation.type", "receive"), s("messaging.operation.name", "poll"),
                 i("messaging.batch.message_count", pl.col("n"))]
        if self.group:
            attrs.append(s("messaging.consumer.group.name", self.group))
        self.telemetry.emit_spans([span(f, f"receive {self.topic}", KIND_CONSUMER, pl.col("trace_id"), pl.col("sid"), None,
                                        pl.col("t0"), pl.col("t1"), attrs, links=pl.col("links"))])

    def close(self) -> None:
        """Close the telemetry, flushing its span exports."""
        self.telemetry.close()
