"""Telemetry output: the only place that configures OpenTelemetry exporters.

Spans arrive rendered as OTLP/JSON (:mod:`dqkit.otlp_json`) and metrics as pre-aggregated points.
By default both go to OTLP/JSON lines files (``traces.jsonl``, ``metrics.jsonl``), one export
request per line. When the standard ``OTEL_EXPORTER_OTLP_*`` variables name an endpoint, they
are also sent over OTLP (gRPC, or HTTP with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``) by the
SDK's own exporters, from a background thread with a bounded queue: a slow or absent collector
costs dropped, counted spans — never a stalled or crashed pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dqkit import __version__
from dqkit import names as n
from dqkit.errors import ConfigError
from dqkit.otlp_json import ExportText, export_text

log = logging.getLogger(__name__)
SCOPE = (n.SCOPE_NAME, __version__)
_NETWORK_QUEUE_FRAMES = 64


def _parse_resource_attributes(raw: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        if "=" not in part:
            raise ConfigError(f"OTEL_RESOURCE_ATTRIBUTES item {part!r} must look like key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@dataclass(frozen=True)
class TelemetryConfig:
    """Where telemetry goes. Build it with :meth:`from_env`."""

    out_dir: Path | None
    """Folder for ``traces.jsonl`` and ``metrics.jsonl``; ``None`` writes no files."""
    resource: Mapping[str, object] = field(default_factory=dict)
    """Resource attributes (``service.name`` and ``OTEL_RESOURCE_ATTRIBUTES``)."""
    otlp_traces: bool = False
    """Send spans over OTLP (an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is set)."""
    otlp_metrics: bool = False
    """Send metrics over OTLP (an ``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT`` is set)."""
    protocol: str = "grpc"
    """``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` or ``http/protobuf``."""
    shutdown_timeout_s: float = 5.0
    """How long closing waits for the network exporter before counting the rest as dropped."""
    traces_file: str = n.TRACES_FILE
    """Span file name in ``out_dir``. Another process writing the same folder (the ingestion
    endpoint) uses its own ``traces-*.jsonl``, which span readers pick up with the rest."""

    @classmethod
    def from_env(cls, out_dir: str | Path | None, env: Mapping[str, str] | None = None) -> TelemetryConfig:
        """The configuration from ``OTEL_*`` variables (``env``, default ``os.environ``), writing files to ``out_dir``."""
        env = os.environ if env is None else env
        resource: dict[str, object] = {n.SERVICE_NAME: "dqkit", n.SERVICE_VERSION: __version__}
        resource.update(_parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
        if env.get("OTEL_SERVICE_NAME"):
            resource[n.SERVICE_NAME] = env["OTEL_SERVICE_NAME"]
        any_ep = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        if protocol not in ("grpc", "http/protobuf"):
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf")
        traces_on = env.get("OTEL_TRACES_EXPORTER", "otlp") != "none"
        metrics_on = env.get("OTEL_METRICS_EXPORTER", "otlp") != "none"
        return cls(
            out_dir=Path(out_dir) if out_dir is not None else None,
            resource=resource,
            otlp_traces=traces_on and (any_ep or bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))),
            otlp_metrics=metrics_on and (any_ep or bool(env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))),
            protocol=protocol,
        )


@dataclass
class TelemetryStats:
    """What the telemetry did: spans written, sent and not exported, metric exports."""

    spans_written: int = 0
    """Spans written to ``traces.jsonl``."""
    spans_sent: int = 0
    """Spans the OTLP exporter reported as exported."""
    spans_not_exported: int = 0
    """Spans meant for OTLP that were dropped (queue full, exporter failed, shutdown timeout)."""
    metric_exports: int = 0


def _span_exporter(protocol: str):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def _metric_exporter(protocol: str):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter()


def readable_spans(requests: list[dict]) -> list:
    """SDK span objects for OTLP/JSON export requests (for the SDK's network exporters), so
    a collector receives exactly what the file holds."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    kinds = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT, 4: SpanKind.PRODUCER, 5: SpanKind.CONSUMER}
    flags = TraceFlags(TraceFlags.SAMPLED)

    def ctx(t: str, s: str) -> SpanContext:
        return SpanContext(int(t, 16), int(s, 16), is_remote=False, trace_flags=flags)

    def amap(attributes: list[dict]) -> dict:
        out = {}
        for a in attributes:
            (kind, v), = a["value"].items()
            out[a["key"]] = int(v) if kind == "intValue" else v
        return out

    spans = []
    resources: dict[str, Resource] = {}
    for request in requests:
        for rs in request["resourceSpans"]:
            key = json.dumps(rs["resource"]["attributes"], sort_keys=True)
            if key not in resources:
                resources[key] = Resource.create(amap(rs["resource"]["attributes"]))
            res = resources[key]
            for ss in rs["scopeSpans"]:
                scope = InstrumentationScope(ss["scope"]["name"], ss["scope"].get("version"))
                for r in ss["spans"]:
                    status = r.get("status", {})
                    spans.append(ReadableSpan(
                        r["name"],
                        context=ctx(r["traceId"], r["spanId"]),
                        parent=ctx(r["traceId"], r["parentSpanId"]) if r.get("parentSpanId") else None,
                        resource=res,
                        attributes=amap(r.get("attributes", [])),
                        events=[Event(e["name"], amap(e.get("attributes", [])), int(e["timeUnixNano"])) for e in r.get("events", [])],
                        links=[Link(ctx(lk["traceId"], lk["spanId"]), amap(lk.get("attributes", []))) for lk in r.get("links", [])],
                        kind=kinds.get(r["kind"], SpanKind.INTERNAL),
                        status=Status(StatusCode.ERROR, status.get("message")) if status.get("code") == 2 else Status(StatusCode.UNSET),
                        start_time=int(r["startTimeUnixNano"]),
                        end_time=int(r["endTimeUnixNano"]),
                        instrumentation_scope=scope,
                    ))
    return spans


class Telemetry:
    """Writes span frames and metric snapshots to files and, if configured, to a collector."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        self.stats = TelemetryStats()
        self._traces = self._metrics = None
        if config.out_dir is not None:
            config.out_dir.mkdir(parents=True, exist_ok=True)
            self._traces = open(config.out_dir / config.traces_file, "ab")  # noqa: SIM115
            self._metrics = open(config.out_dir / n.METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._queue: queue.Queue[ExportText | None] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._sending = 0  # spans inside an export call right now
        if config.otlp_traces:
            self._queue = queue.Queue(maxsize=_NETWORK_QUEUE_FRAMES)
            self._span_exporter = _span_exporter(config.protocol)
            self._thread = threading.Thread(target=self._send_loop, name="dqkit-otlp", daemon=True)
            self._thread.start()
        self._metric_exporter = _metric_exporter(config.protocol) if config.otlp_metrics else None

    # -- spans -------------------------------------------------------------------------
    # A replay appends a chunk's spans before its warehouse commit, after noting in a marker file
    # where the chunk starts; after the commit the marker goes. A crash in between leaves the
    # marker, and the next start cuts the uncommitted chunk off again (see :meth:`recover`).
    # So spans of committed chunks are never lost and spans of uncommitted ones never kept, at
    # the cost of one small file per chunk rather than writing the spans twice.
    def emit_spans(self, spans: Sequence[pa.LargeStringArray]) -> None:
        """Write (and send) rendered spans now, outside any chunk's commit (the ingestion endpoint's spans)."""
        self.publish(self.stage(spans, "now"))

    def stage(self, spans: Sequence[pa.LargeStringArray], chunk_id: str) -> tuple[str, bool, ExportText]:
        """Append rendered spans (:func:`dqkit.otlp_json.span`) to ``traces.jsonl`` as chunk
        ``chunk_id``, not yet committed."""
        text = export_text(spans, dict(self.config.resource), SCOPE)
        staged = False
        if self._traces is not None and text.spans:
            self._traces.flush()
            self._marker.write_text(f"{chunk_id} {os.fstat(self._traces.fileno()).st_size}\n", encoding="utf-8")
            text.write(self._traces)
            self._traces.flush()
            staged = True
        return chunk_id, staged, text

    def publish(self, staged: tuple[str, bool, ExportText]) -> None:
        """Mark a staged chunk as committed and hand it to the network exporter."""
        _, on_file, text = staged
        if not text.spans:
            return
        if on_file:
            self._marker.unlink(missing_ok=True)
            self.stats.spans_written += text.spans
        if self._queue is not None:
            try:
                self._queue.put_nowait(text)
            except queue.Full:
                self._count_dropped(text.spans)

    @property
    def _marker(self) -> Path:
        assert self.config.out_dir is not None
        return self.config.out_dir / f"{self.config.traces_file}.uncommitted"

    def recover(self, committed: set[str]) -> int:
        """After a crash: cut off the spans of a chunk the warehouse did not commit (and any
        half-written last line). Returns the chunks whose spans were kept."""
        if self._traces is None:
            return 0
        self._traces.flush()
        path = self.config.out_dir / self.config.traces_file
        recovered = 0
        size = path.stat().st_size
        keep = size
        if self._marker.exists():
            chunk_id, _, offset = self._marker.read_text(encoding="utf-8").strip().partition(" ")
            if chunk_id in committed:
                recovered += 1
            else:
                keep = min(size, int(offset))
            self._marker.unlink()
        if keep:
            with open(path, "rb") as fh:
                fh.seek(max(0, keep - 1))
                if fh.read(1) != b"\n":  # a half-written line: back to the last whole one
                    fh.seek(0)
                    keep = fh.read(keep).rfind(b"\n") + 1
        if keep < size:
            with open(path, "r+b") as fh:
                fh.truncate(keep)
            self._traces.seek(0, 2)
        # Spans staged by earlier dqkit versions (one pending file per chunk).
        for pending in sorted(self.config.out_dir.glob(f"{n.TRACES_FILE}.pending-*")):
            if pending.name.split("pending-", 1)[1] in committed:
                self._traces.write(pending.read_bytes())
                self._traces.flush()
                recovered += 1
            pending.unlink()
        return recovered

    def _count_dropped(self, n: int) -> None:
        with self._lock:
            self.stats.spans_not_exported += n

    def _send_loop(self) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        assert self._queue is not None
        while True:
            text = self._queue.get()
            if text is None:
                return
            with self._lock:
                self._sending = text.spans
            try:
                ok = self._span_exporter.export(readable_spans(text.requests())) == SpanExportResult.SUCCESS
            except Exception:  # telemetry must never break the pipeline
                log.exception("OTLP span export failed")
                ok = False
            with self._lock:
                self._sending = 0
                if ok:
                    self.stats.spans_sent += text.spans
                else:
                    self.stats.spans_not_exported += text.spans

    # -- metrics -----------------------------------------------------------------------
    def emit_metrics(self, data) -> None:
        """Write an SDK ``MetricsData`` snapshot as one OTLP/JSON line (and send it)."""
        if self._metrics is not None:
            from google.protobuf.json_format import MessageToDict
            from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

            body = MessageToDict(encode_metrics(data), use_integers_for_enums=True)
            self._metrics.write(json.dumps(body, separators=(",", ":")) + "\n")
            self._metrics.flush()
        if self._metric_exporter is not None:
            try:
                self._metric_exporter.export(data, timeout_millis=self.config.shutdown_timeout_s * 1000)
            except Exception:
                log.exception("OTLP metric export failed")
        self.stats.metric_exports += 1

    def close(self) -> TelemetryStats:
        """Drain the network queue (within the shutdown timeout), shut the exporters down, close the files."""
        if self._queue is not None and self._thread is not None:
            # Drain what is already queued within the timeout; count the rest as not exported.
            try:
                self._queue.put(None, timeout=self.config.shutdown_timeout_s)
            except queue.Full:
                pass
            self._thread.join(timeout=self.config.shutdown_timeout_s)
            left = 0
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    left += item.spans
            if self._thread.is_alive():  # stuck on a slow collector: its batch is lost too
                with self._lock:
                    left += self._sending
                    self._sending = 0
            self._count_dropped(left)
            try:
                self._span_exporter.shutdown()
            except Exception:
                log.exception("OTLP exporter shutdown failed")
        if self._metric_exporter is not None:
            try:
                self._metric_exporter.shutdown(timeout_millis=1000)
            except Exception:
                log.exception("OTLP metric exporter shutdown failed")
        for f in (self._traces, self._metrics):
            if f is not None:
                f.close()
        return self.stats
