"""The day's figures the report states, computed once: checks, DAU and its decomposition,
findings, where the events went and how late they were. ``findings.json`` is this, as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from dqkit.report.thresholds import Check, Thresholds, evaluate
from dqkit.timefmt import parse_iso

FORMAT = "dqkit.findings/2"
"""The ``format`` field of ``findings.json``; bumped when a field changes meaning."""


@dataclass
class DailyReport:
    """One day's report. :meth:`to_dict` is the ``findings.json`` document."""

    day: date
    thresholds: Thresholds
    checks: list[Check]
    measures: dict
    """Counts for events received that day (reconcile) and the day's lag percentiles."""
    diagnosis: dict
    """:meth:`dqkit.investigate.diagnose.Diagnosis.to_dict` for the day."""
    differences: list[dict]
    """Spans-vs-warehouse differences among the day's batches (:meth:`Reconciliation.findings`)."""
    reconciliation: object
    """The :class:`~dqkit.investigate.reconcile.Reconciliation` narrowed to the day (for charts)."""
    hourly_lag: pl.DataFrame
    """Lag percentiles per hour of the day (:func:`dqkit.investigate.lag.event_lag`)."""

    @property
    def breaches(self) -> list[Check]:
        """The checks whose value is above their limit."""
        return [c for c in self.checks if c.breached]

    @property
    def healthy(self) -> bool:
        """No check breached."""
        return not self.breaches

    def to_dict(self) -> dict:
        """The findings document (``findings.json``): status, checks, measures, diagnosis, differences."""
        d = self.diagnosis
        return {
            "format": FORMAT, "day": self.day.isoformat(), "status": "healthy" if self.healthy else "breached",
            "healthy": self.healthy, "breaches": [c.to_dict() for c in self.breaches],
            "checks": [c.to_dict() for c in self.checks], "thresholds": self.thresholds.to_dict(),
            "measures": self.measures, "baseline_day": d["baseline_day"], "baseline_reason": d["baseline_reason"],
            "verdict": d["verdict"], "reason": d.get("reason"), "dau_status": d.get("status"), "as_of": d.get("as_of"),
            "dau": d["dau"], "decomposition": d["decomposition"], "findings": d["findings"],
            "differences": self.differences,
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as ``findings.json`` (creating the folder); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return p


def daily_report(day: date | str, warehouse: str | Path, spans, thresholds: Thresholds | None = None,
                 source=None, as_of: datetime | str | None = None) -> DailyReport:
    """Everything the daily report states about ``day``.

    Args:
        day: the day (UTC) to report on.
        warehouse: the DuckDB warehouse file.
        spans: loaded spans, or OTLP/JSON files / telemetry folders.
        thresholds: the limits to check; :class:`Thresholds` defaults when None.
        source: what the warehouse's tables mean (``dqkit``, ``reference``, a mapping file); detected when None.
        as_of: the moment the report describes (ISO-8601 or datetime); default: the latest load in the data.
    """
    from dqkit.investigate.diagnose import diagnose
    from dqkit.investigate.lag import event_lag
    from dqkit.investigate.reconcile import reconcile
    from dqkit.investigate.spans import SpanData, load_spans

    th = thresholds or Thresholds()
    if isinstance(as_of, str):
        as_of = parse_iso(as_of) if as_of else None
    d = day if isinstance(day, date) else date.fromisoformat(str(day))
    sd = spans if isinstance(spans, SpanData) else load_spans(spans)
    start = datetime.combine(d, datetime.min.time(), tzinfo=UTC)
    rec = reconcile(warehouse, sd, source=source).window(start, start + timedelta(days=1))
    t = rec.totals
    daily = event_lag(warehouse, every="day", spans=sd, source=source)
    row = daily.filter(pl.col("day").dt.date() == d)
    lag = {k: (round(float(row[k][0]), 1) if row.height else None) for k in ("p50_s", "p95_s", "p99_s")}
    measures = {
        "received": t["received"], "loaded": t["warehouse_rows"], "invalid": t["invalid"], "duplicate": t["duplicate"],
        "dead_lettered": t["dead_lettered"], "in_flight": t["in_flight"], "silent_loss": t["silent_loss"],
        "never_loaded": t["never_loaded"], "over_count": t["over_count"],
        "unexplained_loss": t["silent_loss"] + t["never_loaded"] + abs(t["unexplained"]),
        "rejected_share": round(t["invalid"] / t["received"], 4) if t["received"] else 0.0,
        "lag_p50_s": lag["p50_s"], "lag_p95_s": lag["p95_s"], "lag_p99_s": lag["p99_s"],
        "loaded_after_day_close": round(float(row["after_day_close"][0]), 4) if row.height else None,
    }
    hourly = event_lag(warehouse, spans=sd, source=source)
    hourly = hourly.filter(pl.col("hour").dt.date() == d) if hourly.height and hourly["hour"].null_count() < hourly.height else hourly.head(0)
    diag = diagnose(warehouse, sd, d, source=source, as_of=as_of).to_dict()
    measures["hours_without_data"] = sum(len(f.get("hours", [])) for f in diag["findings"] if f["kind"] == "no_data")
    return DailyReport(d, th, evaluate(measures, th), measures, diag, rec.findings(), rec, hourly)
