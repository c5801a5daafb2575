"""Warehouses and span exports that dqkit did not write, with their ground truth.

``reference_pipeline``: the reference article's pipeline (:mod:`tests.thirdparty.refpipeline`)
run over an 8-day sample, exporting over OTLP/gRPC to a Collector-like receiver in a child
process, with three faults on the last day. ``segment_warehouse``: a Segment-shaped ``tracks``
table with one client segment lost before load. dqkit's generator only makes the input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dqkit.events.generator import SampleSpec, generate
from dqkit.paths import geoip_dir as default_geoip_dir
from tests.thirdparty.otlp_receiver import receiver_process
from tests.thirdparty.refpipeline import (
    BadTimestamps,
    FailingInsert,
    ReferencePipeline,
    Window,
    otlp_providers,
)
from tests.thirdparty.segment_wh import LostSegment, write_segment_warehouse

START = datetime(2026, 11, 13, tzinfo=UTC)  # a Friday: the incident day is the Friday after
DAYS = 8
DAY = (START + timedelta(days=DAYS - 1)).date()
BASELINE_DAY = START.date()
MAPPING = Path(__file__).with_name("segment.toml")


def _at(hour: int) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hour, tzinfo=UTC)


@dataclass(frozen=True)
class ReferencePipelineRun:
    warehouse: Path
    """DuckDB file with the pipeline's ``events_<type>`` tables."""
    telemetry: Path
    """Directory with ``traces.jsonl`` and ``metrics.jsonl`` (OTLP/JSON, one request per line)."""
    day: date
    baseline_day: date
    """The same weekday a week before ``day``."""
    incidents: list[dict]
    """Per fault: stage, kind, segment, window {start, end} (ISO-8601 Z), window_on, events, users."""
    expected: dict
    """Counts from the pipeline's own code: received, invalid, duplicate, loaded, failed_insert_rows,
    reported_total_loaded, batches, enriched, loads, inserts, failed_inserts, spans {name: count};
    and duplicate_rows_loaded (measured in the warehouse: retried events that loaded twice)."""
    sample: Path
    """The client batches it ingested (NDJSON, gzip)."""
    profiles: Path
    build_seconds: float


@dataclass(frozen=True)
class SegmentWarehouse:
    warehouse: Path
    mapping: Path
    """The TOML that says what its columns mean to dqkit."""
    day: date
    baseline_day: date
    incidents: list[dict]
    expected: dict
    """``rows`` in ``tracks``."""

    @property
    def path(self) -> Path:
        return self.warehouse


@pytest.fixture(scope="session")
def reference_pipeline(tmp_path_factory) -> ReferencePipelineRun:
    t0 = time.perf_counter()
    root = tmp_path_factory.mktemp("refpipeline")
    sample = generate(root / "sample", SampleSpec(start=START, days=DAYS, users=400, events=4_000, seed=12))
    warehouse, telemetry = root / "warehouse.duckdb", root / "telemetry"
    with receiver_process(telemetry) as endpoint:
        tp, mp = otlp_providers(endpoint)
        pipe = ReferencePipeline(
            warehouse, tp, mp, profiles=sample.profiles_path, geoip_ranges=default_geoip_dir() / "ipv4.parquet",
            bad_timestamps=BadTimestamps("android", "8.4.0", Window(_at(8), _at(14))),
            geoip_outage=Window(_at(15), _at(18)),
            failing_insert=FailingInsert("events_view", Window(_at(19), _at(23))),
            durable=False,  # a throwaway file: ~2000 commits without an fsync each
        )
        try:
            counts = pipe.run(sample.events_path)
        finally:
            pipe.close()
            tp.force_flush()
            mp.force_flush()
            tp.shutdown()
            mp.shutdown()
    expected = {k: getattr(counts, k) for k in ("received", "invalid", "duplicate", "loaded", "failed_insert_rows",
                                                "reported_total_loaded", "batches", "enriched", "loads", "inserts",
                                                "failed_inserts")}
    expected["spans"] = dict(counts.spans)
    # Measured, not predicted: client retries in later batches pass the in-batch dedup and load twice.
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        union = " union all ".join(f'select event_id from "{t}"' for (t,) in con.execute("show tables").fetchall())
        expected["duplicate_rows_loaded"] = con.execute(f"select count(*) - count(distinct event_id) from ({union})").fetchone()[0]
    finally:
        con.close()
    return ReferencePipelineRun(warehouse, telemetry, DAY, BASELINE_DAY, pipe.incidents(), expected,
                                sample.events_path, sample.profiles_path, round(time.perf_counter() - t0, 2))


@pytest.fixture(scope="session")
def segment_warehouse(tmp_path_factory) -> SegmentWarehouse:
    root = tmp_path_factory.mktemp("segment")
    # No per-event Python here, so the sample can be big enough for a clear drop in daily users.
    sample = generate(root / "sample", SampleSpec(start=START, days=DAYS, users=3_000, events=40_000, seed=12))
    wh = root / "segment.duckdb"
    out = write_segment_warehouse(wh, sample.events_path, sample.profiles_path,
                                  LostSegment("android", "8.4.0", _at(10), _at(16)))
    return SegmentWarehouse(wh, MAPPING, DAY, BASELINE_DAY, out["incidents"], {"rows": out["rows"]})
