"""Replay an event sample through the traced pipeline into the warehouse.

Per chunk of deliveries: validate → deduplicate → publish → (queue) → enrich → load, each a
vectorized step over the whole chunk, then the chunk's spans are written and its warehouse
transaction committed. Deliveries the warehouse already holds are skipped, so re-running a
sample (or resuming after a crash) changes no count.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from dqkit.events import readers
from dqkit.events import schema as sch
from dqkit.pipeline import clock, spans
from dqkit.pipeline.dedup import Deduplicator
from dqkit.pipeline.faults import Fault, FaultTruth
from dqkit.pipeline.geoip import open_geoip
from dqkit.pipeline.metrics import PipelineMetrics
from dqkit.pipeline.profiles import ProfileStore, read_profiles
from dqkit.pipeline.queue import EmbeddedQueue, Queue
from dqkit.pipeline.sessions import SessionStitcher
from dqkit.pipeline.validate import validate
from dqkit.pipeline.warehouse import (
    DELIVERY_COLUMNS, LOAD_AUDIT_COLUMNS, REJECTED_COLUMNS, InsertOutcome, Warehouse, InsertAborted, table_for,
)
from dqkit.telemetry import SCOPE, Telemetry, TelemetryConfig, TelemetryStats

_KEY_SEED = 0xDE11  # hashes of delivery keys, compared within one process only

STAGES = ("read", "validate", "dedup", "publish", "enrich.user_profile", "enrich.geo_ip", "enrich.session",
          "warehouse.partition", "warehouse.insert", "telemetry", "spans.wait")


@dataclass(frozen=True)
class ReplayConfig:
    """Settings of one replay."""

    chunk_lines: int = readers.DEFAULT_CHUNK_LINES
    """Deliveries (lines) processed together; bounds memory."""
    load_interval_s: float = 60.0
    """Warehouse load cadence on the replay clock."""
    dedup_window: timedelta = timedelta(days=7)
    """How long an event id is remembered for deduplication."""
    limits: sch.ValidationLimits = field(default_factory=sch.ValidationLimits)
    insert_attempts: int = 3
    """Attempts per table insert before its rows are dead-lettered."""
    insert_fault: Callable[[str, int], str | None] | None = None
    """Injected insert failures: ``(table, attempt) -> error text or None`` (for tests)."""
    faults: tuple[Fault, ...] = ()
    """Pipeline faults to inject (see :mod:`dqkit.pipeline.faults`)."""
    truth_path: Path | None = None
    """Where to write what the injected faults did (JSON), if anywhere."""
    tracing: bool = True
    """Build and export spans (off only to measure what tracing costs)."""
    clock: str = "replay"
    """``replay``: the replay clock (DESIGN section 7). ``live``: real time, for a pipeline fed by
    the ingestion endpoint (:mod:`dqkit.live`): a chunk's batches enter when it is processed and
    load when it is inserted (see :func:`dqkit.pipeline.clock.live_now`)."""


@dataclass
class Ledger:
    """Where every received event went (DESIGN section 6)."""

    received: int = 0
    loaded: int = 0
    invalid: int = 0
    duplicate: int = 0
    dead_lettered: int = 0
    in_flight: int = 0

    def add(self, other: dict[str, int]) -> None:
        for k in ("received", "loaded", "invalid", "duplicate", "dead_lettered", "in_flight"):
            setattr(self, k, getattr(self, k) + int(other.get(k, 0)))

    @property
    def unaccounted(self) -> int:
        return self.received - (self.loaded + self.invalid + self.duplicate + self.dead_lettered + self.in_flight)


@dataclass
class ReplayResult:
    run_id: str
    warehouse: Path
    telemetry_dir: Path | None
    ledger: Ledger
    skipped_deliveries: int
    skipped_events: int
    deliveries: int
    seconds: float
    stage_seconds: dict[str, float]
    telemetry: TelemetryStats
    faults: list[dict] = field(default_factory=list)
    """Ground truth of each injected fault: stage, kind, segment, window, events, users."""

    @property
    def events_per_second(self) -> float:
        return self.ledger.received / self.seconds if self.seconds else 0.0


class _Timer:
    """Seconds spent per stage: in total, and in the chunk being processed (``last``)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.last: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            self.last[stage] = self.last.get(stage, 0.0) + dt
            self.total[stage] += dt


def _INJECTED_INSERT_FAILURE(table: str, attempt: int) -> str:  # noqa: N802 - a constant-like callable
    return f"injected fault insert_failure: insert into {table} failed (attempt {attempt})"


def _outcome_frame(outcomes: dict) -> pl.DataFrame:
    """Insert outcomes keyed by (table, injected) as a frame."""
    keys = list(outcomes)
    vals = list(outcomes.values())
    return pl.DataFrame({
        "table": [k[0] for k in keys], "injected": [k[1] for k in keys],
        "success": [o.success for o in vals], "attempts": [o.attempts for o in vals],
        "table_ms": [o.duration_ms for o in vals], "table_rows": [o.rows for o in vals],
        "error": [o.error for o in vals],
    }, schema={"table": pl.String, "injected": pl.Boolean, "success": pl.Boolean, "attempts": pl.Int64,
               "table_ms": pl.Float64, "table_rows": pl.Int64, "error": pl.String})


def _rejects(frame: pl.DataFrame, stage: str, run_id: str) -> pl.DataFrame:
    cols = []
    for c, _ in REJECTED_COLUMNS.items():
        if c == "stage":
            cols.append(pl.lit(stage).alias(c))
        elif c == "run_id":
            cols.append(pl.lit(run_id).alias(c))
        elif c in frame.columns:
            cols.append(pl.col(c))
        else:
            cols.append(pl.lit(None, pl.String).alias(c))
    out = frame.select(cols)
    return out.with_columns(pl.col("received_at", "event_ts").cast(pl.Datetime("us", "UTC")))


class Replay:
    """One replay of samples into a warehouse; use :func:`replay` for the common case."""

    def __init__(
        self,
        warehouse: str | Path,
        telemetry: TelemetryConfig | str | Path | None,
        profiles: str | Path | pl.DataFrame | None = None,
        geoip: str | Path | None = None,
        config: ReplayConfig | None = None,
        queue: Queue | None = None,
    ) -> None:
        self.config = config or ReplayConfig()
        self.run_id = uuid.uuid4().hex[:16]
        self.wh = Warehouse(warehouse)
        tcfg = telemetry if isinstance(telemetry, TelemetryConfig) else TelemetryConfig.from_env(telemetry)
        self.tcfg = TelemetryConfig(
            out_dir=tcfg.out_dir, resource={**tcfg.resource, "dqkit.clock": self.config.clock},
            otlp_traces=tcfg.otlp_traces, otlp_metrics=tcfg.otlp_metrics, protocol=tcfg.protocol,
            shutdown_timeout_s=tcfg.shutdown_timeout_s,
        )
        self.telemetry = Telemetry(self.tcfg)
        prof = profiles if isinstance(profiles, pl.DataFrame) or profiles is None else read_profiles(profiles)
        self.profiles = ProfileStore(prof)
        self.geo = open_geoip(geoip)
        self.queue: Queue = queue or EmbeddedQueue()
        self.dedup = Deduplicator(self.config.dedup_window, self.wh.remembered_ids(self.config.dedup_window))
        self.sessions = SessionStitcher(state=self.wh.read(
            "SELECT user_id, last_ts, session_id, session_events FROM session_state"
        ).cast({"last_ts": pl.Datetime("us", "UTC")}))
        self.metrics = PipelineMetrics()
        self.ledger = Ledger()
        self.timer = _Timer()
        self.watermark_ns: int | None = None
        self.skipped_deliveries = 0
        self.skipped_events = 0
        self.deliveries = 0
        self.started = datetime.now(UTC)
        self.truth = [FaultTruth(f) for f in self.config.faults]
        self._chunk_seq = 0
        self._earlier_keys = pl.concat(
            [b.get_column("delivery_key").hash(seed=_KEY_SEED) for b in self.wh.read_batches("SELECT delivery_key FROM deliveries")]
            or [pl.Series([], dtype=pl.UInt64)]).sort()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dqkit-spans")
        self._pending: tuple[dict[str, int], Future] | None = None
        # Finish what a crashed replay left: spans of committed chunks are kept, others dropped.
        committed = {r[0] for r in self.wh.con.execute("SELECT chunk_id FROM telemetry_chunks").fetchall()}
        self.recovered_chunks = self.telemetry.recover(committed)

    # ------------------------------------------------------------------------------------
    def process(self, chunk: readers.RawChunk) -> None:
        """Run one chunk through every stage. Its commit waits until the next chunk has been
        prepared (or :meth:`flush`), so that its spans are written meanwhile on another thread."""
        self.timer.last = {}
        known = self._known_deliveries(chunk.deliveries.get_column("delivery_key"))
        if known:
            skipped = chunk.deliveries.filter(pl.col("delivery_key").is_in(list(known)))
            self.skipped_deliveries += skipped.height
            self.skipped_events += int(skipped.get_column("event_count").sum())
            chunk = readers.RawChunk(
                chunk.deliveries.filter(~pl.col("delivery_key").is_in(list(known))),
                chunk.events.filter(~pl.col("delivery_key").is_in(list(known))),
                chunk.position,
            )
        if chunk.deliveries.is_empty():
            return
        ids = spans.delivery_ids(chunk.deliveries.get_column("delivery_key"))
        deliveries = chunk.deliveries.sort("line_no").join(ids, on="delivery_key", how="left")
        if self.config.clock == "live":
            deliveries = deliveries.with_columns(t_enter=clock.live_now())
        else:
            deliveries = deliveries.with_columns(clock.entry_times(deliveries, self.watermark_ns))
        events = chunk.events.join(deliveries.select("delivery_key", "trace_id"), on="delivery_key", how="left")
        total_events = max(int(deliveries.get_column("event_count").sum()), 1)

        with self.timer("validate"):
            v = validate(events, deliveries, self.config.limits)
        with self.timer("dedup"):
            dd = self.dedup.run(v.valid, deliveries)
        d = deliveries.join(v.per_delivery, on="delivery_key", how="left").join(dd.per_delivery, on="delivery_key", how="left")

        with self.timer("publish"):
            headers = d.select("delivery_key", traceparent=pl.format("00-{}-{}-01", pl.col("trace_id"), pl.col("sid_publish")))
            pub = self.queue.publish(dd.unique, headers)
        self._published = dd.unique.select("delivery_key", "user_id")
        d = d.join(pub, on="delivery_key", how="left").with_columns(
            received=pl.col("event_count"), invalid=pl.col("invalid_count"), duplicate=pl.col("duplicates_removed"),
            published=pl.col("queue_published"),
        )
        # Replay clock, ingest side: each batch's own timeline (see dqkit.pipeline.clock).
        t = self.timer.last
        share_in = pl.col("event_count") / total_events
        d = d.with_columns(t_validated=pl.col("t_enter") + clock.amortized(t.get("validate", 0), share_in))
        d = d.with_columns(t_deduped=pl.col("t_validated") + clock.amortized(t.get("dedup", 0), share_in))
        d = d.with_columns(t_published=pl.col("t_deduped") + clock.amortized(t.get("publish", 0), share_in))
        d = d.with_columns(t_consumed=pl.col("t_published") + self._batch_delay(d, "queue_backlog", "t_published"))

        msg = self.queue.consume()
        consumed = msg.events if msg is not None else dd.unique.clear()
        if msg is not None:
            ctx = msg.headers.select(
                "delivery_key",
                ctx_trace=pl.col("traceparent").str.split("-").list.get(1),
                ctx_parent=pl.col("traceparent").str.split("-").list.get(2),
            )
            d = d.join(ctx, on="delivery_key", how="left")
        else:
            d = d.with_columns(ctx_trace=pl.col("trace_id"), ctx_parent=pl.col("sid_publish"))
        consumed = consumed.join(d.select("delivery_key", "t_consumed"), on="delivery_key", how="left")

        with self.timer("enrich.user_profile"):
            enriched = self.profiles.enrich(consumed)
            enriched = self._event_fault(enriched, "profile_outage", ["user_country", "user_segment", "account_age_days"],
                                         flag="profile_error")
        with self.timer("enrich.geo_ip"):
            geo = self.geo.lookup(enriched.get_column("client_ip"))
            enriched = enriched.join(geo, on="client_ip", how="left")
            enriched = self._event_fault(enriched, "geoip_outage", ["geo_country", "geo_region", "geo_city"])
        with self.timer("enrich.session"):
            enriched, session_changes = self.sessions.stitch(enriched)

        # Replay clock, consumer side.
        t = self.timer.last
        share_pub = pl.col("published") / max(consumed.height, 1)
        per_batch = enriched.group_by("delivery_key").agg(
            profile_hits=pl.col("profile_cache_hit").sum().cast(pl.Int64),
            profile_misses=(~pl.col("profile_cache_hit")).sum().cast(pl.Int64),
            profile_missing=(pl.col("profile_missing") & ~pl.col("profile_error")).sum().cast(pl.Int64),
            profile_errors=pl.col("profile_error").sum().cast(pl.Int64),
            geo_resolved=pl.col("geo_country").is_not_null().sum().cast(pl.Int64),
            sessions_new=pl.col("session_is_new").sum().cast(pl.Int64),
            event_types=pl.col("event_type").unique().sort().str.join(","),
            # The batch's country (one client per batch): country-level, so safe in telemetry.
            geo_country=pl.col("geo_country").drop_nulls().mode().sort().first(),
        )
        d = d.join(per_batch, on="delivery_key", how="left").with_columns(
            pl.col("profile_hits", "profile_misses", "profile_missing", "profile_errors", "geo_resolved",
                   "sessions_new").fill_null(0),
        )
        d = d.with_columns(t_profiled=pl.col("t_consumed") + clock.amortized(t.get("enrich.user_profile", 0), share_pub)
                           + self._batch_delay(d, "profile_slow", "t_consumed"))
        d = d.with_columns(t_geo=pl.col("t_profiled") + clock.amortized(t.get("enrich.geo_ip", 0), share_pub))
        d = d.with_columns(t_enriched=pl.col("t_geo") + clock.amortized(t.get("enrich.session", 0), share_pub))
        if self.config.clock == "live":  # one load, now
            d = d.with_columns(t_load=pl.max_horizontal(pl.col("t_enriched").max(), clock.live_now()))
        else:
            d = d.with_columns(t_load=clock.next_load(pl.col("t_enriched"), self.config.load_interval_s))
        # The ingest and enrich spans need nothing from the warehouse: they are rendered on the
        # writer thread while this chunk is partitioned and inserted, so that only the load
        # spans are left to render once the last chunk is done.
        early = self._writer.submit(self._render_early, d)

        with self.timer("warehouse.partition"):
            rows = enriched.drop("t_consumed").join(d.select("delivery_key", "t_load", "platform").rename(
                {"platform": "batch_platform"}), on="delivery_key", how="left").with_columns(
                loaded_at=pl.from_epoch(pl.col("t_load"), time_unit="ns").dt.cast_time_unit("us").dt.replace_time_zone("UTC"),
                table=pl.lit("events_") + pl.col("event_type"),
            )
            rows = self._insert_faults(rows)
            parts = rows.partition_by("table", "injected", as_dict=True)
        self.flush()  # the previous chunk: its spans were written while this one was prepared
        self._pending = self._write(chunk, d, v, dd, rows, parts, session_changes, early)
        max_recv = deliveries.get_column("t_enter").max()
        if max_recv is not None:
            self.watermark_ns = max(self.watermark_ns or 0, int(max_recv))
        self.deliveries += d.height

    def _known_deliveries(self, keys: pl.Series) -> set[str]:
        """Keys the warehouse held before this run began (a re-run, or a resume after a crash).
        Keys are unique within a run, so only those need asking; the hashes narrow each chunk
        down to the few candidates asked of DuckDB, instead of scanning every delivery."""
        if not self._earlier_keys.len():
            return set()
        h = keys.hash(seed=_KEY_SEED)
        at = self._earlier_keys.search_sorted(h, side="left").clip(upper_bound=self._earlier_keys.len() - 1)
        maybe = keys.filter(self._earlier_keys.gather(at) == h)
        return self.wh.known_deliveries(maybe.to_list()) if maybe.len() else set()

    def flush(self) -> None:
        """Commit the chunk in hand once its spans are on file (DESIGN: a committed chunk's spans
        are never lost, an uncommitted chunk's never kept), then export them."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        result, spans_written = pending
        try:
            with self.timer("spans.wait"):
                staged = spans_written.result()  # re-raises what went wrong on the writer thread
            self.wh.commit()
        except BaseException:
            self.wh.rollback()
            raise
        self.telemetry.publish(staged)
        self.ledger.add(result)

    # -- injected faults -------------------------------------------------------------------
    def _faults(self, name: str) -> list[FaultTruth]:
        return [ft for ft in self.truth if ft.fault.name == name]

    def _batch_delay(self, d: pl.DataFrame, name: str, t_col: str) -> pl.Expr:
        """Extra replay-clock nanoseconds for batches a delay fault hits (0 elsewhere)."""
        delay = pl.lit(0, pl.Int64)
        for ft in self._faults(name):
            f = ft.fault
            hit = f.active(pl.col(t_col), pl.col("platform")) & f.chosen(pl.col("trace_id")) & (pl.col("published") > 0)
            mask = d.select(hit.alias("hit"))["hit"]
            ft.add(self._events_of(d.filter(mask), t_col), t_col)
            delay = delay + pl.when(hit).then(int(f.delay.total_seconds() * 1e9)).otherwise(0)
        return delay

    def _events_of(self, batches: pl.DataFrame, t_col: str) -> pl.DataFrame:
        # The events a batch-level fault touched: what the queue delivered for those batches.
        return self._published.join(batches.select("delivery_key", t_col), on="delivery_key")

    def _event_fault(self, events: pl.DataFrame, name: str, cols: list[str], flag: str | None = None) -> pl.DataFrame:
        """Blank ``cols`` for events an outage hits (they load degraded, not dropped)."""
        hit_all = pl.lit(False)
        for ft in self._faults(name):
            f = ft.fault
            hit = f.active(pl.col("t_consumed"), pl.col("platform")) & f.chosen(pl.col("event_id"))
            ft.add(events.filter(hit), "t_consumed")
            hit_all = hit_all | hit
        out = events.with_columns(_hit=hit_all)
        out = out.with_columns([pl.when(pl.col("_hit")).then(None).otherwise(pl.col(c)).alias(c) for c in cols])
        if flag:
            out = out.with_columns(pl.col("_hit").alias(flag))
        return out.drop("_hit")

    def _insert_faults(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Mark rows whose insert an ``insert_failure`` fault fails (chosen per table and load)."""
        injected = pl.lit(False)
        for ft in self._faults("insert_failure"):
            f = ft.fault
            hit = f.active(pl.col("t_load"), pl.col("batch_platform")) & f.chosen(
                pl.concat_str(pl.col("table"), pl.col("t_load").cast(pl.String)))
            if f.table:
                hit = hit & (pl.col("table") == f.table)
            ft.add(rows.filter(hit & ~injected), "t_load")
            injected = injected | hit
        return rows.with_columns(injected=injected)

    # ------------------------------------------------------------------------------------
    def _write(self, chunk, d, v, dd, rows, parts, session_changes, early: Future) -> tuple[dict[str, int], Future]:
        """Insert (with retries) and record the chunk in an open transaction, redoing it without
        a table whose insert hit a real database error; its spans are built and written on the
        writer thread. Returns the chunk's ledger counts and the spans' future, for :meth:`flush`."""
        real_errors: dict[str, tuple[int, str]] = {}  # table -> (aborted attempts, last error)
        attempts = self.config.insert_attempts
        while True:
            self.wh.begin()
            try:
                outcomes = {}
                with self.timer("warehouse.insert"):
                    for (table, injected), frame in sorted(parts.items()):
                        name = table_for(table.removeprefix("events_"))
                        used, err = real_errors.get(name, (0, None))
                        if used >= attempts:
                            outcomes[(name, injected)] = InsertOutcome(name, frame.height, False, used, 0.0, err)
                            continue
                        fail = self.config.insert_fault
                        if injected:
                            fail = _INJECTED_INSERT_FAILURE
                        o = self.wh.insert_events(name, frame.drop("injected", "batch_platform"), attempts=attempts - used,
                                                  fail=fail)
                        o.attempts += used
                        outcomes[(name, injected)] = o
                break
            except InsertAborted as exc:
                # DuckDB aborted the transaction: redo the chunk, counting the attempt.
                self.wh.rollback()
                used, _ = real_errors.get(exc.table, (0, None))
                real_errors[exc.table] = (used + 1, exc.error)
            except BaseException:
                self.wh.rollback()
                raise

        try:
            return self._finish(chunk, d, v, dd, rows, outcomes, session_changes, early)
        except BaseException:
            self.wh.rollback()
            raise

    def _finish(self, chunk, d, v, dd, rows, outcomes, session_changes, early: Future) -> tuple[dict[str, int], Future]:
        run_id = self.run_id
        out = _outcome_frame(outcomes)
        rows = rows.join(out.select("table", "injected", landed=pl.col("success")), on=["table", "injected"], how="left")
        dead = rows.filter(~pl.col("landed"))
        rejected = [_rejects(v.rejected, "validate", run_id), _rejects(dd.duplicates.with_columns(
            reason=pl.lit(sch.DUPLICATE), detail=pl.format("event_id already seen in batch {}", pl.col("duplicate_of_batch"))
        ), "dedup", run_id)]
        if not dead.is_empty():
            errors = out.select("table", "injected", detail=pl.col("error"))
            rejected.append(_rejects(dead.join(errors, on=["table", "injected"], how="left").with_columns(reason=pl.lit(sch.INSERT_FAILED)),
                                     "warehouse.insert", run_id))
        self.wh.append("rejected_events", pl.concat(rejected, how="vertical_relaxed"), REJECTED_COLUMNS)

        per_batch_load = rows.group_by("delivery_key").agg(
            loaded=pl.col("landed").sum().cast(pl.Int64), dead_lettered=(~pl.col("landed")).sum().cast(pl.Int64)
        )
        d = d.join(per_batch_load, on="delivery_key", how="left").with_columns(
            pl.col("loaded", "dead_lettered").fill_null(0), in_flight=pl.lit(0, pl.Int64), run_id=pl.lit(run_id)
        )
        self.wh.append("deliveries", d, DELIVERY_COLUMNS)
        self.wh.upsert_sessions(session_changes)

        with self.timer("telemetry"):
            load_frames = self._load_telemetry(d, rows, out)
            self.wh.append("load_audit", load_frames[3], LOAD_AUDIT_COLUMNS)
            self._chunk_seq += 1
            chunk_id = f"{self.run_id}-{self._chunk_seq:06d}"
            spans_written = self._writer.submit(self._write_spans, early, load_frames[:3], chunk_id)
            self.wh.con.execute("INSERT INTO telemetry_chunks VALUES (?, ?)", [chunk_id, self.run_id])
            self._record_metrics(d, rows, v, dd)

        totals = d.select(pl.col("received", "loaded", "invalid", "duplicate", "dead_lettered", "in_flight").sum()).row(0, named=True)
        return totals, spans_written

    def _render_early(self, d: pl.DataFrame) -> list[pa.LargeStringArray]:
        """On the writer thread: the chunk's ingest and enrich spans."""
        if not self.config.tracing:
            return []
        return [*spans.ingest_spans(d, self.queue.system, self.queue.topic), *spans.enrich_spans(d, self.queue.topic)]

    def _write_spans(self, early: Future, load_frames: tuple[pl.DataFrame, ...], chunk_id: str) -> tuple:
        """On the writer thread: the chunk's spans, rendered to ``traces.jsonl``. Polars
        does the work outside the GIL, so this overlaps the next chunk's stages. ``early``
        (submitted before, so already done on this one-worker thread) holds the spans that
        did not wait for the inserts."""
        rendered = [*early.result(), *spans.load_spans(*load_frames)] if self.config.tracing else []
        return self.telemetry.stage(rendered, chunk_id)

    def _load_telemetry(self, d: pl.DataFrame, rows: pl.DataFrame, out: pl.DataFrame) -> tuple[pl.DataFrame, ...]:
        """Loads (one per cadence tick in this chunk), their table inserts and batch links."""
        if rows.is_empty():
            return (pl.DataFrame(schema={"load_trace": pl.String, "load_sid": pl.String, "part_sid": pl.String,
                                         "t_load": pl.Int64, "t_part_end": pl.Int64, "t_load_end": pl.Int64,
                                         "rows": pl.Int64, "loaded": pl.Int64, "dead_lettered": pl.Int64,
                                         "partitions": pl.Int64, "batches": pl.Int64}),
                    pl.DataFrame(schema={"load_trace": pl.String, "load_sid": pl.String, "insert_sid": pl.String,
                                         "table": pl.String, "rows": pl.Int64, "success": pl.Boolean,
                                         "attempts": pl.Int64, "duration_ms": pl.Float64, "t_start": pl.Int64,
                                         "t_end": pl.Int64, "error": pl.String}),
                    pl.DataFrame(schema={"insert_sid": pl.String, "ctx_trace": pl.String, "sid_enrich": pl.String,
                                         "batch_id": pl.String, "rows": pl.Int64}),
                    pl.DataFrame())  # no audit rows: nothing was inserted
        t = self.timer.last
        total_rows = rows.height
        per = (
            rows.group_by("t_load", "table", "injected", "delivery_key", "batch_id")
            .agg(rows=pl.len().cast(pl.Int64))
            .join(d.select("delivery_key", "ctx_trace", "sid_enrich", "trace_id"), on="delivery_key", how="left")
        )
        loads = per.group_by("t_load").agg(
            first_key=pl.col("delivery_key").min(), rows=pl.col("rows").sum(), partitions=pl.col("table").n_unique().cast(pl.Int64),
            batches=pl.col("delivery_key").n_unique().cast(pl.Int64),
        ).sort("t_load")
        loads = pl.concat([loads, spans.load_ids(loads.select(pl.format("{}:{}", "t_load", "first_key")).to_series())],
                          how="horizontal")
        inserts = (
            per.group_by("t_load", "table", "injected").agg(
                rows=pl.col("rows").sum(), batch_ids=pl.col("batch_id").unique().sort(), trace_ids=pl.col("trace_id").unique().sort())
            .join(out, on=["table", "injected"], how="left")
            .join(loads.select("t_load", "load_trace", "load_sid", "rows", "partitions").rename({"rows": "load_rows"}), on="t_load")
            .sort("t_load", "table")
            .with_columns(
                duration_ms=pl.col("table_ms") * pl.col("rows") / pl.col("table_rows"),
                part_ns=clock.amortized(t.get("warehouse.partition", 0), pl.col("load_rows") / total_rows),
            )
        )
        inserts = inserts.with_columns(
            insert_sid=spans.insert_span_ids(inserts.select(pl.format(
                "{}:{}{}", "load_sid", "table", pl.when("injected").then(pl.lit(":injected")).otherwise(pl.lit("")))).to_series()),
            dur_ns=pl.max_horizontal((pl.col("duration_ms") * 1e6).round().cast(pl.Int64), pl.lit(clock.MIN_STAGE_NS)),
        ).with_columns(
            t_end=pl.col("t_load") + pl.col("part_ns") + pl.col("dur_ns").cum_sum().over("t_load"),
        ).with_columns(t_start=pl.col("t_end") - pl.col("dur_ns"))
        loads = loads.join(
            inserts.group_by("t_load").agg(
                t_load_end=pl.col("t_end").max(), part_ns=pl.col("part_ns").first(),
                loaded=pl.when(pl.col("success")).then(pl.col("rows")).otherwise(0).sum(),
                dead_lettered=pl.when(pl.col("success")).then(0).otherwise(pl.col("rows")).sum(),
            ), on="t_load",
        ).with_columns(t_part_end=pl.col("t_load") + pl.col("part_ns"))
        links = per.join(inserts.select("t_load", "table", "injected", "insert_sid"), on=["t_load", "table", "injected"])
        ts = lambda c: pl.from_epoch(pl.col(c), time_unit="ns").dt.replace_time_zone("UTC")  # noqa: E731
        audit = inserts.select(
            load_id=pl.col("load_sid"), table_name=pl.col("table"), row_count=pl.col("rows"), success=pl.col("success"),
            attempts=pl.col("attempts").cast(pl.Int32), duration_ms=pl.col("duration_ms"), started_at=ts("t_start"),
            loaded_at=ts("t_load"), batch_ids=pl.col("batch_ids"), trace_ids=pl.col("trace_ids"),
            load_trace_id=pl.col("load_trace"), span_id=pl.col("insert_sid"), error=pl.col("error"), run_id=pl.lit(self.run_id),
        )
        return loads, inserts, links, audit

    def _record_metrics(self, d: pl.DataFrame, rows: pl.DataFrame, v, dd) -> None:
        m = self.metrics
        if not m.start_ns:
            m.start_ns = int(d.get_column("t_enter").min())
        m.add("analytics.events.ingested", d, ["platform"], "published")
        rej = pl.concat([
            v.rejected.select("platform", "reason", stage=pl.lit("validate")),
            dd.duplicates.select("platform", reason=pl.lit(sch.DUPLICATE), stage=pl.lit("dedup")),
        ]).with_columns(n=pl.lit(1))
        if not rej.is_empty():
            m.add("analytics.events.rejected", rej.rename({"platform": "client.platform", "reason": "rejection.reason",
                                                            "stage": "rejection.stage"}),
                  ["client.platform", "rejection.stage", "rejection.reason"], "n")
        m.record("analytics.ingestion.batch_size", d.rename({"platform": "client.platform"}), ["client.platform"], "received")
        enr = d.filter(pl.col("published") > 0).with_columns(
            ms=(pl.col("t_enriched") - pl.col("t_consumed")) / 1e6 / pl.col("published")
        )
        m.record("analytics.enrichment.latency_ms", enr, [], "ms", weight="published")
        landed = rows.filter(pl.col("landed")).with_columns(
            lag=(pl.col("loaded_at") - pl.col("event_ts")).dt.total_milliseconds() / 1000.0
        )
        m.record("analytics.pipeline.lag_seconds", landed.rename({"event_type": "event.type"}), ["event.type"], "lag")

    # ------------------------------------------------------------------------------------
    def close(self, sample: str = "") -> ReplayResult:
        """Commit the last chunk, export the final metrics, prune state past its window, record the run."""
        self.flush()
        self._writer.shutdown()
        if self.metrics.start_ns:
            self.telemetry.emit_metrics(self.metrics.snapshot(self.watermark_ns or self.metrics.start_ns,
                                                              dict(self.tcfg.resource), SCOPE))
        stats = self.telemetry.close()
        if self.truth and self.config.truth_path is not None:
            import json

            self.config.truth_path.parent.mkdir(parents=True, exist_ok=True)
            self.config.truth_path.write_text(json.dumps({"faults": [ft.to_dict() for ft in self.truth]}, indent=2) + "\n")
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
            faults=[ft.to_dict() for ft in self.truth],
        )


def replay(
    sample: str | Path,
    warehouse: str | Path,
    telemetry: TelemetryConfig | str | Path | None,
    profiles: str | Path | pl.DataFrame | None = None,
    geoip: str | Path | None = None,
    config: ReplayConfig | None = None,
    progress: Callable[[int, Ledger], None] | None = None,
) -> ReplayResult:
    """Replay ``sample`` into the DuckDB file ``warehouse``, writing OTLP/JSON telemetry.

    Args:
        sample: NDJSON (optionally gzip) of native or Segment batches, or flat Parquet.
        warehouse: DuckDB file; created when missing. Re-running a sample changes no count.
        telemetry: folder for ``traces.jsonl``/``metrics.jsonl`` (or a :class:`TelemetryConfig`).
        profiles: user profiles (CSV/Parquet with ``user_id, country, segment, signup_date``).
        geoip: a ``.mmdb`` file or a directory of range tables; the bundled tables by default.
        config: chunking, load cadence, limits and injected faults.
        progress: called after each chunk with the input position and the running ledger.
    """
    cfg = config or ReplayConfig()
    # The first chunk is read while the warehouse and the reference data open.
    with readers.ReadAhead(readers.iter_sample(sample, cfg.chunk_lines)) as chunks:
        run = Replay(warehouse, telemetry, profiles, geoip, cfg)
        try:
            while True:
                t = time.perf_counter()
                chunk = next(chunks, None)
                run.timer.total["read"] += time.perf_counter() - t
                if chunk is None:
                    break
                run.process(chunk)
                if progress:
                    progress(chunk.position, run.ledger)
        except BaseException:
            # The chunk in hand stays uncommitted; the next start cuts its spans off again.
            run._writer.shutdown()
            run.telemetry.close()
            run.wh.close()
            raise
    return run.close(str(sample))
