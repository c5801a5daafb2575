"""The settings of one replay, validated once, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dqkit.events import schema as sch
from dqkit.events.readers import DEFAULT_CHUNK_LINES
from dqkit.pipeline.faults import Fault
from dqkit.pipeline.load import InsertFault


@dataclass(frozen=True)
class ReplayConfig:
    """Settings of one replay."""

    chunk_lines: int = DEFAULT_CHUNK_LINES
    """Deliveries (lines) processed together; bounds memory."""
    load_interval_s: float = 60.0
    """Warehouse load cadence on the replay clock."""
    dedup_window: timedelta = timedelta(days=7)
    """How long an event id is remembered for deduplication."""
    limits: sch.ValidationLimits = field(default_factory=sch.ValidationLimits)
    """What validation accepts (sizes, timestamp plausibility, event types)."""
    insert_attempts: int = 3
    """Attempts per table insert before its rows are dead-lettered."""
    insert_fault: InsertFault | None = None
    """Injected insert failures: ``(table, attempt) -> error text or None`` (for tests)."""
    faults: tuple[Fault, ...] = ()
    """Pipeline faults to inject (see :mod:`dqkit.pipeline.faults`)."""
    truth_path: Path | None = None
    """Where to write what the injected faults did (JSON), if anywhere."""
    tracing: bool = True
    """Build and export spans (off only to measure what tracing costs)."""
    clock: str = "replay"
    """``replay``: the replay clock (DESIGN section 7). ``live``: real time, for a pipeline fed by
    the ingestion endpoint (:mod:`dqkit.live`): a batch enters at its request's arrival (the
    endpoint's ``received_at``), leaves the queue when the consumer processes it and loads when
    it is inserted (see :func:`dqkit.pipeline.clock.consumed_at`)."""
