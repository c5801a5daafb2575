"""The pipeline's metrics, aggregated from frames rather than recorded event by event.

Names and instruments are the reference design's (:mod:`dqkit.names`). Each chunk adds
grouped counts and histogram buckets computed in Polars (:func:`record_chunk`);
:meth:`PipelineMetrics.snapshot` turns the running (cumulative) totals into the SDK's
``MetricsData`` for the exporters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl

from dqkit import names as n
from dqkit.events.schema import DUPLICATE

STAGES = ("read", "validate", "dedup", "publish", "enrich.user_profile", "enrich.geo_ip", "enrich.session",
          "warehouse.partition", "warehouse.insert", "telemetry", "spans.wait")
"""The stages a replay times (``ReplayResult.stage_seconds``): ``read`` is the wait for the reader,
``telemetry`` the span and metric work left on the main thread, ``spans.wait`` the wait for the
span writer before a commit."""

LATENCY_BOUNDS_MS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0)
LAG_BOUNDS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400, 172800)
BATCH_BOUNDS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)

INSTRUMENTS = {
    n.M_INGESTED: ("counter", "Events accepted by ingestion (valid and not duplicate)", "{event}", None),
    n.M_REJECTED: ("counter", "Events rejected, by stage (validate or dedup) and reason", "{event}", None),
    n.M_ENRICH_LATENCY: ("histogram", "Time to enrich a single event", "ms", LATENCY_BOUNDS_MS),
    n.M_LAG: ("histogram", "Delay between event timestamp and warehouse availability", "s", LAG_BOUNDS_S),
    n.M_BATCH_SIZE: ("histogram", "Number of events per ingestion batch", "{event}", BATCH_BOUNDS),
}


@dataclass
class _Hist:
    count: int = 0
    total: float = 0.0
    lo: float = float("inf")
    hi: float = float("-inf")
    buckets: list[int] = field(default_factory=list)


@dataclass
class PipelineMetrics:
    """Running totals of every instrument, per attribute set."""

    start_ns: int = 0
    """When the first chunk entered (replay-clock ns): the start of every cumulative point."""
    counters: dict[str, dict[tuple, int]] = field(default_factory=dict)
    hists: dict[str, dict[tuple, _Hist]] = field(default_factory=dict)

    def add(self, name: str, frame: pl.DataFrame, keys: list[str], value: str) -> None:
        """Add ``sum(value)`` per ``keys`` group to counter ``name``."""
        series = self.counters.setdefault(name, {})
        for row in frame.group_by(keys).agg(pl.col(value).sum()).iter_rows():
            attrs = tuple(zip(keys, row[:-1]))
            series[attrs] = series.get(attrs, 0) + int(row[-1])

    def record(self, name: str, frame: pl.DataFrame, keys: list[str], value: str, weight: str | None = None) -> None:
        """Record every row's ``value`` (``weight`` times) into histogram ``name``, per ``keys``."""
        bounds = INSTRUMENTS[name][3]
        w = pl.col(weight) if weight else pl.lit(1)
        f = frame.filter(pl.col(value).is_not_null()).with_columns(
            # OTLP explicit buckets are (bounds[i-1], bounds[i]]: the first bound >= value.
            _b=pl.lit(pl.Series(list(map(float, bounds)))).search_sorted(pl.col(value).cast(pl.Float64), side="left").cast(pl.Int32),
            _w=w.cast(pl.Int64),
        )
        agg = f.group_by([*keys, "_b"]).agg(
            n=pl.col("_w").sum(), s=(pl.col(value) * pl.col("_w")).sum(), lo=pl.col(value).min(), hi=pl.col(value).max()
        )
        series = self.hists.setdefault(name, {})
        for row in agg.iter_rows(named=True):
            attrs = tuple((k, row[k]) for k in keys)
            h = series.setdefault(attrs, _Hist(buckets=[0] * (len(bounds) + 1)))
            h.count += row["n"]
            h.total += row["s"]
            h.lo = min(h.lo, row["lo"])
            h.hi = max(h.hi, row["hi"])
            h.buckets[row["_b"]] += row["n"]

    def snapshot(self, time_ns: int, resource: dict[str, object], scope: tuple[str, str]):
        """The totals so far as the SDK's ``MetricsData`` (cumulative points ending at ``time_ns``)."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
            Sum,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        cum = AggregationTemporality.CUMULATIVE
        metrics = []
        for name, (kind, desc, unit, bounds) in INSTRUMENTS.items():
            if kind == "counter":
                points = [NumberDataPoint(dict(a), self.start_ns, time_ns, v) for a, v in sorted(self.counters.get(name, {}).items(), key=str)]
                data = Sum(points, cum, True)
            else:
                points = [
                    HistogramDataPoint(dict(a), self.start_ns, time_ns, h.count, h.total, list(h.buckets), list(map(float, bounds)), h.lo, h.hi)
                    for a, h in sorted(self.hists.get(name, {}).items(), key=str)
                ]
                data = Histogram(points, cum)
            if points:
                metrics.append(Metric(name, desc, unit, data))
        return MetricsData([ResourceMetrics(Resource.create(dict(resource)), [ScopeMetrics(InstrumentationScope(*scope), metrics, "")], "")])  # type: ignore[arg-type]


def record_chunk(m: PipelineMetrics, batches: pl.DataFrame, rows: pl.DataFrame, rejected: pl.DataFrame,
                 duplicates: pl.DataFrame) -> None:
    """Add one chunk to the metrics.

    Args:
        m: the running metrics.
        batches: per-delivery ``t_enter, platform, received, published, t_consumed, t_enriched``.
        rows: rows offered to the warehouse, with ``landed, loaded_at, event_ts, event_type``.
        rejected: events validation rejected, with ``platform, reason``.
        duplicates: events dedup removed, with ``platform``.
    """
    if not m.start_ns:
        m.start_ns = int(batches.get_column("t_enter").min())  # type: ignore[arg-type]
    m.add(n.M_INGESTED, batches.rename({"platform": n.CLIENT_PLATFORM}), [n.CLIENT_PLATFORM], "published")
    rej = pl.concat([
        rejected.select("platform", "reason", stage=pl.lit("validate")),
        duplicates.select("platform", reason=pl.lit(DUPLICATE), stage=pl.lit("dedup")),
    ]).with_columns(count=pl.lit(1))
    keys = [n.CLIENT_PLATFORM, n.REJECTION_STAGE, n.REJECTION_REASON]
    if not rej.is_empty():
        m.add(n.M_REJECTED, rej.rename({"platform": n.CLIENT_PLATFORM, "reason": n.REJECTION_REASON,
                                        "stage": n.REJECTION_STAGE}), keys, "count")
    m.record(n.M_BATCH_SIZE, batches.rename({"platform": n.CLIENT_PLATFORM}), [n.CLIENT_PLATFORM], "received")
    enr = batches.filter(pl.col("published") > 0).with_columns(
        ms=(pl.col("t_enriched") - pl.col("t_consumed")) / 1e6 / pl.col("published")
    )
    m.record(n.M_ENRICH_LATENCY, enr, [], "ms", weight="published")
    landed = rows.filter(pl.col("landed")).with_columns(
        lag=(pl.col("loaded_at") - pl.col("event_ts")).dt.total_milliseconds() / 1000.0
    )
    m.record(n.M_LAG, landed.rename({"event_type": n.EVENT_TYPE}), [n.EVENT_TYPE], "lag")


class StageTimer:
    """Seconds spent per stage: in total, and in the chunk being processed (``last``)."""

    def __init__(self) -> None:
        """Start every stage of :data:`STAGES` at zero."""
        self.total: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.last: dict[str, float] = {}

    def add(self, seconds: Mapping[str, float]) -> None:
        """Add measured seconds per stage (a stage result's ``seconds``)."""
        for stage, dt in seconds.items():
            self.last[stage] = self.last.get(stage, 0.0) + dt
            self.total[stage] = self.total.get(stage, 0.0) + dt

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add({stage: time.perf_counter() - t})
