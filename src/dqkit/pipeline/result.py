"""What a replay did: its counts (the accounting identity) and its run record."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from dqkit.telemetry import TelemetryStats


@dataclass
class RunCounts:
    """Where every event a replay received went (the accounting identity, DESIGN section 6)."""

    received: int = 0
    loaded: int = 0
    invalid: int = 0
    duplicate: int = 0
    dead_lettered: int = 0
    in_flight: int = 0

    def add(self, other: RunCounts) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def unaccounted(self) -> int:
        """Received events that went nowhere: zero unless events were lost."""
        return self.received - (self.loaded + self.invalid + self.duplicate + self.dead_lettered + self.in_flight)


@dataclass
class ReplayResult:
    """What one replay did."""

    run_id: str
    warehouse: Path
    telemetry_dir: Path | None
    ledger: RunCounts
    """The run's counts (the accounting identity)."""
    skipped_deliveries: int
    """Deliveries the warehouse already held (a re-run or a resume)."""
    skipped_events: int
    deliveries: int
    seconds: float
    stage_seconds: dict[str, float]
    telemetry: TelemetryStats
    faults: list[dict] = field(default_factory=list)
    """Ground truth of each injected fault: stage, kind, segment, window, events, users."""
    geo_lookup_errors: int = 0
    """Events whose geo-IP record could not be read (a damaged .mmdb): loaded with no geo."""

    @property
    def events_per_second(self) -> float:
        """Received events per second of the whole replay."""
        return self.ledger.received / self.seconds if self.seconds else 0.0
