"""Loading: partition enriched events by table, insert them with retries, dead-letter what fails.

Two stages, each with one result: :func:`partition` (rows by table and load, with injected
insert failures marked) and :func:`load` (the inserts, in the chunk's open transaction, plus
what the warehouse and the load spans record about them: dead-lettered rows, per-batch
counts, ``load_audit`` rows and the loads/inserts/links frames of
:func:`dqkit.pipeline.span_writer.render_load_spans`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from dqkit.events import schema as sch
from dqkit.pipeline import clock
from dqkit.pipeline.dedup import DedupResult
from dqkit.pipeline.faults import FaultPlan
from dqkit.pipeline.span_writer import SpanIds
from dqkit.pipeline.validate import ValidateResult
from dqkit.pipeline.warehouse import DELIVERY_COLUMNS, REJECTED_COLUMNS, InsertAborted, InsertOutcome, Warehouse, table_for

InsertFault = Callable[[str, int], str | None]
"""``(table, attempt) -> error text`` to fail that attempt, or ``None`` to let it run."""


def _injected_insert_failure(table: str, attempt: int) -> str:
    return f"injected fault insert_failure: insert into {table} failed (attempt {attempt})"


@dataclass(frozen=True)
class PartitionResult:
    """A chunk's enriched events as rows by table and load."""

    rows: pl.DataFrame
    """Every row to load, with ``t_load``, ``loaded_at``, ``table``, ``injected`` and ``batch_platform``."""
    parts: dict[tuple[str, bool], pl.DataFrame]
    """The rows by ``(table, injected)``: one insert each."""
    seconds: float
    """Measured seconds of the partitioning."""


def partition(events: pl.DataFrame, batches: pl.DataFrame, faults: FaultPlan | None = None) -> PartitionResult:
    """Assign each event its load (the batch's ``t_load``) and table (``events_<type>``).

    Args:
        events: enriched events with ``delivery_key`` and ``event_type``.
        batches: per-delivery ``delivery_key, t_load, platform``.
        faults: marks rows whose insert an ``insert_failure`` fault fails.
    """
    t = time.perf_counter()
    rows = events.drop("t_consumed", strict=False).join(
        batches.select("delivery_key", "t_load", batch_platform="platform"), on="delivery_key", how="left",
    ).with_columns(
        loaded_at=clock.as_timestamp(pl.col("t_load")),
        table=pl.lit("events_") + pl.col("event_type"),
    )
    rows = (faults or FaultPlan()).mark_inserts(rows)
    parts = rows.partition_by("table", "injected", as_dict=True)
    return PartitionResult(rows, parts, time.perf_counter() - t)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoadResult:
    """What loading one chunk did: rows landed or dead-lettered, and how to record it."""

    rows: pl.DataFrame
    """Every row offered, with ``landed``."""
    dead_lettered: pl.DataFrame
    """``rejected_events`` rows (stage ``warehouse.insert``) for the rows of failed inserts."""
    per_delivery: pl.DataFrame
    """``delivery_key`` and :attr:`COUNTS`, for deliveries that had rows to load."""
    loads: pl.DataFrame
    """One row per load (``render_load_spans``' ``loads``)."""
    inserts: pl.DataFrame
    """One row per table insert (``render_load_spans``' ``inserts``)."""
    links: pl.DataFrame
    """One row per (insert, delivery) (``render_load_spans``' ``links``)."""
    audit: pl.DataFrame
    """``load_audit`` rows: one per table insert."""
    seconds: dict[str, float]
    """Measured seconds of ``warehouse.insert`` and of building these frames (``telemetry``)."""

    COUNTS: ClassVar[tuple[str, ...]] = ("loaded", "dead_lettered")


def insert_all(wh: Warehouse, parts: dict[tuple[str, bool], pl.DataFrame], attempts: int,
               insert_fault: InsertFault | None = None) -> dict[tuple[str, bool], InsertOutcome]:
    """Insert every part in a new transaction, which is left open for the caller to commit.

    Injected failures (``insert_fault``, and parts marked ``injected``) are retried up to
    ``attempts`` times, then given up. A real database error aborts DuckDB's transaction, so
    the chunk is redone from the start without the table that failed once it used its
    attempts. Any other error rolls back and is raised.
    """
    real_errors: dict[str, tuple[int, str | None]] = {}  # table -> (aborted attempts, last error)
    while True:
        wh.begin()
        try:
            outcomes: dict[tuple[str, bool], InsertOutcome] = {}
            for (table, injected), frame in sorted(parts.items()):
                name = table_for(table.removeprefix("events_"))
                used, err = real_errors.get(name, (0, None))
                if used >= attempts:
                    outcomes[(name, injected)] = InsertOutcome(name, frame.height, False, used, 0.0, err)
                    continue
                fail = _injected_insert_failure if injected else insert_fault
                o = wh.insert_events(name, frame.drop("injected", "batch_platform"), attempts=attempts - used, fail=fail)
                o.attempts += used
                outcomes[(name, injected)] = o
            return outcomes
        except InsertAborted as exc:
            wh.rollback()
            used, _ = real_errors.get(exc.table, (0, None))
            real_errors[exc.table] = (used + 1, exc.error)
        except BaseException:
            wh.rollback()
            raise


def load(wh: Warehouse, part: PartitionResult, batches: pl.DataFrame, ids: SpanIds, run_id: str, attempts: int = 3,
         insert_fault: InsertFault | None = None) -> LoadResult:
    """Insert a chunk's partitioned rows (see :func:`insert_all`) and build what records them.

    The transaction stays open on success (the caller adds the chunk's other rows and
    commits); on an error it is rolled back.

    Args:
        wh: the warehouse.
        part: the chunk's :func:`partition` result.
        batches: per-delivery frame with ``delivery_key, ctx_trace, sid_enrich, trace_id``.
        ids: makes the loads' trace and span ids.
        run_id: recorded on dead-lettered and audit rows.
        attempts: attempts per insert before its rows are dead-lettered.
        insert_fault: injected failures (for tests).
    """
    t = time.perf_counter()
    outcomes = insert_all(wh, part.parts, attempts, insert_fault)
    inserted = time.perf_counter()
    try:
        out = outcome_frame(outcomes)
        rows = part.rows.join(out.select("table", "injected", landed=pl.col("success")), on=["table", "injected"], how="left")
        dead = rows.filter(~pl.col("landed"))
        errors = out.select("table", "injected", detail=pl.col("error"))
        dead_lettered = rejected_rows(dead.join(errors, on=["table", "injected"], how="left").with_columns(
            reason=pl.lit(sch.INSERT_FAILED)), "warehouse.insert", run_id)
        per_delivery = rows.group_by("delivery_key").agg(
            loaded=pl.col("landed").sum().cast(pl.Int64), dead_lettered=(~pl.col("landed")).sum().cast(pl.Int64))
        counted = time.perf_counter()
        loads, inserts, links, audit = load_frames(batches, rows, out, part.seconds, run_id, ids)
    except BaseException:
        wh.rollback()
        raise
    # As before the stages were split: the inserts are timed, the loads' span and audit frames
    # count as telemetry, and the bookkeeping between them (outcomes, dead letters) as neither.
    return LoadResult(rows, dead_lettered, per_delivery, loads, inserts, links, audit,
                      {"warehouse.insert": inserted - t, "telemetry": time.perf_counter() - counted})


def record(wh: Warehouse, batches: pl.DataFrame, validated: ValidateResult, deduped: DedupResult, loaded: LoadResult,
           run_id: str) -> pl.DataFrame:
    """Append a chunk's rejected events (invalid, duplicate, dead-lettered) and its deliveries
    to the warehouse, in the open transaction.

    Returns ``batches`` as recorded in ``deliveries``: with :attr:`LoadResult.COUNTS`,
    ``in_flight`` and ``run_id``.
    """
    duplicates = deduped.duplicates.with_columns(reason=pl.lit(sch.DUPLICATE), detail=pl.format(
        "event_id already seen in batch {}", pl.col("duplicate_of_batch")))
    rejected = [rejected_rows(validated.rejected, "validate", run_id), rejected_rows(duplicates, "dedup", run_id),
                loaded.dead_lettered]
    wh.append("rejected_events", pl.concat(rejected, how="vertical_relaxed"), REJECTED_COLUMNS)
    out = batches.join(loaded.per_delivery, on="delivery_key", how="left").with_columns(
        pl.col(list(LoadResult.COUNTS)).fill_null(0), in_flight=pl.lit(0, pl.Int64), run_id=pl.lit(run_id))
    wh.append("deliveries", out, DELIVERY_COLUMNS)
    return out


def outcome_frame(outcomes: dict[tuple[str, bool], InsertOutcome]) -> pl.DataFrame:
    """Insert outcomes keyed by ``(table, injected)`` as a frame."""
    keys = list(outcomes)
    vals = list(outcomes.values())
    return pl.DataFrame({
        "table": [k[0] for k in keys], "injected": [k[1] for k in keys],
        "success": [o.success for o in vals], "attempts": [o.attempts for o in vals],
        "table_ms": [o.duration_ms for o in vals], "table_rows": [o.rows for o in vals],
        "error": [o.error for o in vals],
    }, schema={"table": pl.String, "injected": pl.Boolean, "success": pl.Boolean, "attempts": pl.Int64,
               "table_ms": pl.Float64, "table_rows": pl.Int64, "error": pl.String})


def rejected_rows(frame: pl.DataFrame, stage: str, run_id: str) -> pl.DataFrame:
    """``rejected_events`` rows for ``frame``'s events, rejected at ``stage`` (missing columns empty)."""
    cols = []
    for c in REJECTED_COLUMNS:
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


_EMPTY_LOADS = {"load_trace": pl.String, "load_sid": pl.String, "part_sid": pl.String, "t_load": pl.Int64,
                "t_part_end": pl.Int64, "t_load_end": pl.Int64, "rows": pl.Int64, "loaded": pl.Int64,
                "dead_lettered": pl.Int64, "partitions": pl.Int64, "batches": pl.Int64}
_EMPTY_INSERTS = {"load_trace": pl.String, "load_sid": pl.String, "insert_sid": pl.String, "table": pl.String,
                  "rows": pl.Int64, "success": pl.Boolean, "attempts": pl.Int64, "duration_ms": pl.Float64,
                  "t_start": pl.Int64, "t_end": pl.Int64, "error": pl.String}
_EMPTY_LINKS = {"insert_sid": pl.String, "ctx_trace": pl.String, "sid_enrich": pl.String, "batch_id": pl.String,
                "rows": pl.Int64}


def load_frames(batches: pl.DataFrame, rows: pl.DataFrame, outcomes: pl.DataFrame, partition_seconds: float,
                run_id: str, ids: SpanIds) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Loads (one per cadence tick in the chunk), their table inserts, the inserts' links to
    batches, and the ``load_audit`` rows; replay-clock times for each."""
    if rows.is_empty():
        return (pl.DataFrame(schema=_EMPTY_LOADS), pl.DataFrame(schema=_EMPTY_INSERTS), pl.DataFrame(schema=_EMPTY_LINKS),
                pl.DataFrame())  # no audit rows: nothing was inserted
    total_rows = rows.height
    per = (
        rows.group_by("t_load", "table", "injected", "delivery_key", "batch_id")
        .agg(rows=pl.len().cast(pl.Int64))
        .join(batches.select("delivery_key", "ctx_trace", "sid_enrich", "trace_id"), on="delivery_key", how="left")
    )
    loads = per.group_by("t_load").agg(
        first_key=pl.col("delivery_key").min(), rows=pl.col("rows").sum(), partitions=pl.col("table").n_unique().cast(pl.Int64),
        batches=pl.col("delivery_key").n_unique().cast(pl.Int64),
    ).sort("t_load")
    loads = pl.concat([loads, ids.load_ids(loads.select(pl.format("{}:{}", "t_load", "first_key")).to_series())],
                      how="horizontal")
    inserts = (
        per.group_by("t_load", "table", "injected").agg(
            rows=pl.col("rows").sum(), batch_ids=pl.col("batch_id").unique().sort(), trace_ids=pl.col("trace_id").unique().sort())
        .join(outcomes, on=["table", "injected"], how="left")
        .join(loads.select("t_load", "load_trace", "load_sid", "rows", "partitions").rename({"rows": "load_rows"}), on="t_load")
        .sort("t_load", "table")
        .with_columns(
            duration_ms=pl.col("table_ms") * pl.col("rows") / pl.col("table_rows"),
            part_ns=clock.amortized(partition_seconds, pl.col("load_rows") / total_rows),
        )
    )
    inserts = inserts.with_columns(
        insert_sid=ids.insert_span_ids(inserts.select(pl.format(
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

    def ts(c: str) -> pl.Expr:
        return pl.from_epoch(pl.col(c), time_unit="ns").dt.replace_time_zone("UTC")

    audit = inserts.select(
        load_id=pl.col("load_sid"), table_name=pl.col("table"), row_count=pl.col("rows"), success=pl.col("success"),
        attempts=pl.col("attempts").cast(pl.Int32), duration_ms=pl.col("duration_ms"), started_at=ts("t_start"),
        loaded_at=ts("t_load"), batch_ids=pl.col("batch_ids"), trace_ids=pl.col("trace_ids"),
        load_trace_id=pl.col("load_trace"), span_id=pl.col("insert_sid"),
        error=pl.col("error"), run_id=pl.lit(run_id),
    )
    return loads, inserts, links, audit
