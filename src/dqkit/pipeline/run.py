"""Replay an event sample through the traced pipeline into the warehouse.

Each chunk of deliveries goes through two halves, each a public method:

* :meth:`Replay.ingest`: validate → deduplicate → publish to the queue (an :class:`IngestResult`);
* :meth:`Replay.consume`: take the messages off the queue → enrich → partition → load, in the
  chunk's open warehouse transaction.

Every stage is a vectorized step over the whole chunk that returns one typed result: its frames
plus per-delivery counts under fixed names (:class:`~dqkit.pipeline.validate.ValidateResult`,
:class:`~dqkit.pipeline.dedup.DedupResult`, :class:`~dqkit.pipeline.enrich.EnrichResult`,
:class:`~dqkit.pipeline.load.PartitionResult` and :class:`~dqkit.pipeline.load.LoadResult`).
This module keeps the chunk loop and the commit protocol: a chunk's spans are rendered on a
writer thread while the next chunk goes through the stages, and its transaction commits only
once they are on file. Deliveries the warehouse already holds are skipped, so re-running a
sample (or resuming after a crash) changes no count.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from dqkit import names as n
from dqkit.errors import DqkitError, StageError
from dqkit.events import readers
from dqkit.pipeline import clock
from dqkit.pipeline.config import ReplayConfig
from dqkit.pipeline.dedup import Deduplicator
from dqkit.pipeline.enrich import Enricher, EnrichResult
from dqkit.pipeline.faults import FaultPlan
from dqkit.pipeline.geoip import open_geoip
from dqkit.pipeline.ingest import IngestResult, ingest
from dqkit.pipeline.load import PartitionResult, load, partition, record
from dqkit.pipeline.metrics import PipelineMetrics, StageTimer, record_chunk
from dqkit.pipeline.profiles import ProfileStore, read_profiles
from dqkit.pipeline.queue import EmbeddedQueue, Queue
from dqkit.pipeline.result import ReplayResult, RunCounts
from dqkit.pipeline.resume import KnownDeliveries
from dqkit.pipeline.sessions import SessionStitcher
from dqkit.pipeline.span_writer import SpanIds, render_enrich_spans, render_ingest_spans, render_load_spans
from dqkit.pipeline.warehouse import LOAD_AUDIT_COLUMNS, Warehouse
from dqkit.readahead import ReadAhead
from dqkit.telemetry import SCOPE, Telemetry, TelemetryConfig


@dataclass(frozen=True)
class _Pending:
    """A chunk inserted in the open transaction, waiting for its spans to be on file."""

    counts: RunCounts
    spans: Future
    chunk: int


class Replay:
    """One replay of samples into a warehouse; use :func:`replay` for the common case.

    Feed it chunks with :meth:`process` (or its two halves, :meth:`ingest` then
    :meth:`consume`), then :meth:`close` it; :meth:`abort` leaves without committing.
    """

    def __init__(
        self,
        warehouse: str | Path,
        telemetry: TelemetryConfig | str | Path | None,
        profiles: str | Path | pl.DataFrame | None = None,
        geoip: str | Path | None = None,
        config: ReplayConfig | None = None,
        queue: Queue | None = None,
    ) -> None:
        """Open the warehouse, telemetry and reference data, and finish what a crashed replay left."""
        self.config = config or ReplayConfig()
        self.run_id = uuid.uuid4().hex[:16]
        self.wh = Warehouse(warehouse)
        tcfg = telemetry if isinstance(telemetry, TelemetryConfig) else TelemetryConfig.from_env(telemetry)
        self.tcfg = TelemetryConfig(
            out_dir=tcfg.out_dir, resource={**tcfg.resource, n.CLOCK: self.config.clock},
            otlp_traces=tcfg.otlp_traces, otlp_metrics=tcfg.otlp_metrics, protocol=tcfg.protocol,
            shutdown_timeout_s=tcfg.shutdown_timeout_s,
        )
        self.telemetry = Telemetry(self.tcfg)
        prof = profiles if isinstance(profiles, pl.DataFrame) or profiles is None else read_profiles(profiles)
        self.faults = FaultPlan(self.config.faults)
        self.queue: Queue = queue or EmbeddedQueue()
        self.dedup = Deduplicator(self.config.dedup_window, self.wh.remembered_ids(self.config.dedup_window))
        sessions = SessionStitcher(state=self.wh.read(
            "SELECT user_id, last_ts, session_id, session_events FROM session_state"
        ).cast({"last_ts": pl.Datetime("us", "UTC")}))
        self.enricher = Enricher(ProfileStore(prof), open_geoip(geoip), sessions, self.faults)
        self.metrics = PipelineMetrics()
        self.ledger = RunCounts()
        self.timer = StageTimer()
        self.watermark_ns: int | None = None
        self.skipped_deliveries = 0
        self.skipped_events = 0
        self.deliveries = 0
        self.started = datetime.now(UTC)
        self.ids = SpanIds()
        self._chunks = 0  # chunks handed to ingest (numbers chunks in errors)
        self._committed_seq = 0  # chunks given a telemetry chunk id
        self.known = KnownDeliveries(self.wh)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dqkit-spans")
        self._pending: _Pending | None = None
        # Finish what a crashed replay left: spans of committed chunks are kept, others dropped.
        committed = {r[0] for r in self.wh.con.execute("SELECT chunk_id FROM telemetry_chunks").fetchall()}
        self.telemetry.recover(committed)

    @contextmanager
    def _step(self, stage: str, timed: bool = True) -> Iterator[None]:
        """Time ``stage`` (unless the stage times itself) and name it in an unexpected error."""
        try:
            if timed:
                with self.timer(stage):
                    yield
            else:
                yield
        except DqkitError:
            raise
        except Exception as exc:
            raise StageError(stage, self._chunks, self.run_id, exc) from exc

    # ------------------------------------------------------------------------------------
    def process(self, chunk: readers.RawChunk) -> None:
        """Run one chunk through every stage (:meth:`ingest`, then :meth:`consume`). Its commit
        waits until the next chunk has been prepared (or :meth:`flush`), so that its spans are
        written meanwhile on another thread."""
        ingested = self.ingest(chunk)
        if ingested is not None:
            self.consume(ingested)

    def ingest(self, chunk: readers.RawChunk) -> IngestResult | None:
        """The ingest half: validate, deduplicate and publish a chunk's new deliveries
        (:func:`dqkit.pipeline.ingest.ingest`). ``None`` when the warehouse already holds them all."""
        self._chunks += 1
        self.timer.last = {}
        chunk, skipped = self.known.split(chunk)
        self.skipped_deliveries += skipped.height
        self.skipped_events += int(skipped.get_column("event_count").sum())
        if chunk.deliveries.is_empty():
            return None
        with self._step("ingest", timed=False):
            # Live, a record with no arrival stamp (another producer's) arrived when it is read.
            unstamped = clock.live_now_ns() if self.config.clock == "live" else self.watermark_ns
            ingested = ingest(chunk.deliveries, chunk.events, self.dedup, self.queue, self.ids, self.config.limits, unstamped)
        self.timer.add(ingested.seconds)
        entered = ingested.batches.get_column("t_enter").max()
        if entered is not None:
            self.watermark_ns = max(self.watermark_ns or 0, int(entered))  # type: ignore[arg-type]
        return ingested

    def consume(self, ingested: IngestResult) -> RunCounts:
        """The consume half: enrich what the queue delivers for ``ingested``, partition and insert
        it in a new warehouse transaction, committing the chunk before it (see :meth:`flush`).

        Returns the chunk's counts; they join the run's (:attr:`ledger`) once it commits.
        """
        d = ingested.batches
        published = ingested.deduped.unique.select("delivery_key", "user_id")
        d = d.with_columns(t_consumed=clock.consumed_at(
            pl.col("t_published") + self.faults.batch_delay(d, "queue_backlog", "t_published", published),
            live=self.config.clock == "live"))
        msg = self.queue.consume()
        consumed = msg.events if msg is not None else ingested.deduped.unique.clear()
        if msg is not None:
            traceparent = pl.col("traceparent").str.split("-")
            d = d.join(msg.headers.select("delivery_key", ctx_trace=traceparent.list.get(1), ctx_parent=traceparent.list.get(2)),
                       on="delivery_key", how="left")
        else:
            d = d.with_columns(ctx_trace=pl.col("trace_id"), ctx_parent=pl.col("sid_publish"))
        consumed = consumed.join(d.select("delivery_key", "t_consumed"), on="delivery_key", how="left")

        with self._step("enrich", timed=False):
            e = self.enricher.run(consumed)
        self.timer.add(e.seconds)
        d = d.join(e.per_delivery, on="delivery_key", how="left").with_columns(pl.col(list(EnrichResult.COUNTS)).fill_null(0))
        d = clock.stamp_enrich(d, e.seconds, consumed.height,
                               self.faults.batch_delay(d, "profile_slow", "t_consumed", published), self.config.load_interval_s,
                               live=self.config.clock == "live")
        # The ingest and enrich spans need nothing from the warehouse: they are rendered on the
        # writer thread while this chunk is partitioned and inserted, so that only the load
        # spans are left to render once the last chunk is done.
        early = self._writer.submit(self._render_early, d)
        with self._step("warehouse.partition", timed=False):
            part = partition(e.events, d, self.faults)
        self.timer.add({"warehouse.partition": part.seconds})
        self.flush()  # the previous chunk: its spans were written while this one was prepared
        self._pending = self._load(ingested, d, e, part, early)
        self.deliveries += d.height
        return self._pending.counts

    def _load(self, ingested: IngestResult, d: pl.DataFrame, e: EnrichResult, part: PartitionResult,
              early: Future) -> _Pending:
        """Insert the chunk and record it in an open transaction; its spans are built and
        written on the writer thread."""
        with self._step("warehouse.insert", timed=False):
            ld = load(self.wh, part, d, self.ids, self.run_id, self.config.insert_attempts, self.config.insert_fault)
        self.timer.add(ld.seconds)
        v, dd = ingested.validated, ingested.deduped
        try:
            with self._step("warehouse.record", timed=False):
                d = record(self.wh, d, v, dd, ld, self.run_id)
                self.wh.upsert_sessions(e.session_changes)
            with self._step("telemetry"):
                self.wh.append("load_audit", ld.audit, LOAD_AUDIT_COLUMNS)
                self._committed_seq += 1
                chunk_id = f"{self.run_id}-{self._committed_seq:06d}"
                spans = self._writer.submit(self._write_spans, early, (ld.loads, ld.inserts, ld.links), chunk_id)
                self.wh.con.execute("INSERT INTO telemetry_chunks VALUES (?, ?)", [chunk_id, self.run_id])
                record_chunk(self.metrics, d, ld.rows, v.rejected, dd.duplicates)
        except BaseException:
            self.wh.rollback()
            raise
        totals = d.select(pl.col([f.name for f in fields(RunCounts)]).sum()).row(0, named=True)
        return _Pending(RunCounts(**{k: int(x) for k, x in totals.items()}), spans, self._chunks)

    def flush(self) -> None:
        """Commit the chunk in hand once its spans are on file (DESIGN: a committed chunk's spans
        are never lost, an uncommitted chunk's never kept), then export them."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            with self.timer("spans.wait"):
                try:
                    staged = pending.spans.result()  # re-raises what went wrong on the writer thread
                except DqkitError:
                    raise
                except Exception as exc:
                    raise StageError("spans", pending.chunk, self.run_id, exc) from exc
            self.wh.commit()
        except BaseException:
            self.wh.rollback()
            raise
        self.telemetry.publish(staged)
        self.ledger.add(pending.counts)

    def _render_early(self, d: pl.DataFrame) -> list[pa.LargeStringArray]:
        """On the writer thread: the chunk's ingest and enrich spans."""
        if not self.config.tracing:
            return []
        return [*render_ingest_spans(d, self.queue.system, self.queue.topic), *render_enrich_spans(d, self.queue.topic)]

    def _write_spans(self, early: Future, load_frames: tuple[pl.DataFrame, ...], chunk_id: str) -> tuple:
        """On the writer thread: the chunk's spans, rendered to ``traces.jsonl``. Polars
        does the work outside the GIL, so this overlaps the next chunk's stages. ``early``
        (submitted before, so already done on this one-worker thread) holds the spans that
        did not wait for the inserts."""
        rendered = [*early.result(), *render_load_spans(*load_frames)] if self.config.tracing else []
        return self.telemetry.stage(rendered, chunk_id)

    # ------------------------------------------------------------------------------------
    def close(self, sample: str = "") -> ReplayResult:
        """Commit the last chunk, export the final metrics, prune state past its window, record the run."""
        self.flush()
        self._writer.shutdown()
        self.ids.close()
        if self.metrics.start_ns:
            self.telemetry.emit_metrics(self.metrics.snapshot(self.watermark_ns or self.metrics.start_ns,
                                                              dict(self.tcfg.resource), SCOPE))
        stats = self.telemetry.close()
        if self.faults.truths and self.config.truth_path is not None:
            self.faults.write_truth(self.config.truth_path)
        finished = datetime.now(UTC)
        lg = self.ledger
        self.wh.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [self.run_id, sample, self.started, finished, lg.received, lg.loaded, lg.invalid, lg.duplicate,
             lg.dead_lettered, lg.in_flight, self.skipped_deliveries, ""],
        )
        self.wh.con.execute("CHECKPOINT")
        self.wh.close()
        return ReplayResult(
            run_id=self.run_id, warehouse=self.wh.path, telemetry_dir=self.tcfg.out_dir, ledger=lg,
            skipped_deliveries=self.skipped_deliveries, skipped_events=self.skipped_events, deliveries=self.deliveries,
            seconds=(finished - self.started).total_seconds(), stage_seconds=dict(self.timer.total), telemetry=stats,
            faults=self.faults.to_dicts(), geo_lookup_errors=self.enricher.geo.lookup_errors,
        )

    def abort(self) -> None:
        """Stop without committing the chunk in hand; the next start cuts its spans off again."""
        self._writer.shutdown()
        self.ids.close()
        self.telemetry.close()
        self.wh.close()


def replay(
    sample: str | Path,
    warehouse: str | Path,
    telemetry: TelemetryConfig | str | Path | None,
    profiles: str | Path | pl.DataFrame | None = None,
    geoip: str | Path | None = None,
    config: ReplayConfig | None = None,
    progress: Callable[[int, RunCounts], None] | None = None,
) -> ReplayResult:
    """Replay ``sample`` into the DuckDB file ``warehouse``, writing OTLP/JSON telemetry.

    A long replay runs faster (up to a tenth less CPU) when :func:`dqkit.allocator.keep_freed_memory`
    was called before Polars was first imported in the process; the ``dqkit`` command does so.

    Args:
        sample: NDJSON (optionally gzip) of native or Segment batches, or flat Parquet.
        warehouse: DuckDB file; created when missing. Re-running a sample changes no count.
        telemetry: folder for ``traces.jsonl``/``metrics.jsonl`` (or a :class:`TelemetryConfig`).
        profiles: user profiles (CSV/Parquet with ``user_id, country, segment, signup_date``).
        geoip: a ``.mmdb`` file or a directory of range tables; the bundled tables by default.
        config: chunking, load cadence, limits and injected faults.
        progress: called after each chunk with the input position and the running counts.
    """
    cfg = config or ReplayConfig()
    # The first chunk is read while the warehouse and the reference data open.
    with ReadAhead(readers.iter_sample(sample, cfg.chunk_lines)) as chunks:
        run = Replay(warehouse, telemetry, profiles, geoip, cfg)
        try:
            while True:
                t = time.perf_counter()
                chunk = next(chunks, None)
                run.timer.add({"read": time.perf_counter() - t})
                if chunk is None:
                    break
                run.process(chunk)
                if progress:
                    progress(chunk.position, run.ledger)
        except BaseException:
            run.abort()  # the chunk in hand stays uncommitted
            raise
    return run.close(str(sample))
