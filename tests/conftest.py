"""Shared fixtures: sample builders, a replay into a real DuckDB file and real OTLP/JSON files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from dqkit.investigate.ledger import span_ledger, unbalanced, warehouse_ledger
from dqkit.investigate.spans import load_spans
from dqkit.pipeline.run import ReplayConfig, ReplayResult, replay


def event(eid: str, etype: str = "view", user: str = "u_1", ts: str = "2026-11-20T10:00:00.000Z",
          ip: str | None = "8.8.8.8", **extra) -> dict:
    e = {"event_id": eid, "event_type": etype, "user_id": user, "timestamp": ts, "properties": {"item_id": "p_1"}}
    if ip is not None:
        e["client_ip"] = ip
    e.update(extra)
    return e


def batch(bid: str, events: list, received: str = "2026-11-20T10:00:05.000Z", platform: str = "ios") -> dict:
    return {"batch_id": bid, "received_at": received,
            "client": {"platform": platform, "app_version": "5.2.0", "sdk_version": "3.1.4"}, "events": events}


def write_lines(path: Path, items: list) -> Path:
    """Write batches (dicts) or raw lines (str/bytes) as NDJSON."""
    with open(path, "wb") as f:
        for it in items:
            data = it if isinstance(it, bytes) else (it if isinstance(it, str) else json.dumps(it)).encode()
            f.write(data + b"\n")
    return path


@dataclass
class Run:
    result: ReplayResult | None
    """None for a warehouse written by another process (then only spans and warehouse are compared)."""
    warehouse: Path
    telemetry: Path

    def sql(self, q: str) -> list[tuple]:
        import duckdb

        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            return con.execute(q).fetchall()
        finally:
            con.close()

    def spans(self):
        return load_spans(self.telemetry)


@pytest.fixture
def run_sample(tmp_path):
    """Replay a sample into ``tmp_path/wh.duckdb`` with telemetry in ``tmp_path/tel``."""

    def _run(sample: Path, profiles=None, config: ReplayConfig | None = None, **kw) -> Run:
        wh, tel = tmp_path / "wh.duckdb", tmp_path / "tel"
        res = replay(sample, wh, tel, profiles=profiles, config=config, **kw)
        return Run(res, wh, tel)

    return _run


def assert_balanced(run: Run) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The accounting identity per batch, from spans and from the warehouse, and the two agree."""
    from_spans = span_ledger(run.spans()).sort("trace_id")
    from_wh = warehouse_ledger(run.warehouse).sort("trace_id")
    assert unbalanced(from_spans).is_empty(), f"spans ledger unbalanced:\n{unbalanced(from_spans)}"
    assert unbalanced(from_wh).is_empty(), f"warehouse ledger unbalanced:\n{unbalanced(from_wh)}"
    assert from_spans.equals(from_wh), f"spans and warehouse disagree:\n{from_spans}\n{from_wh}"
    if run.result is not None:
        lg = run.result.ledger
        assert lg.unaccounted == 0, f"expected every event accounted for, got {lg}"
        assert int(from_wh["received"].sum()) == lg.received
    return from_spans, from_wh
