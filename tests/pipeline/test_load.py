"""Loading on hand-made frames into a real DuckDB file: partition, insert with retries,
dead-letter, and what the warehouse and the load spans record."""

import polars as pl
import pytest

from dqkit.pipeline.faults import FaultPlan, parse_fault
from dqkit.pipeline.load import LoadResult, load, partition, record
from dqkit.pipeline.span_writer import SpanIds, render_load_spans
from dqkit.pipeline.warehouse import Warehouse
from tests.pipeline.frames import T0, deliveries, raw_events

MINUTE = 60_000_000_000
T0_NS = int(T0.timestamp() * 1e9)


def _chunk():
    """Enriched events of two deliveries (views and a like) and their per-batch frame."""
    d = deliveries("k1", "k2", platform="android")
    ev = raw_events([{"delivery_key": "k1", "event_id": "e1"}, {"delivery_key": "k1", "event_id": "e2", "event_type": "like"},
                     {"delivery_key": "k2", "event_id": "e3"}], d)
    ids = SpanIds()
    d = d.join(ids.delivery_ids(d["delivery_key"]), on="delivery_key").with_columns(
        ctx_trace=pl.col("trace_id"), t_load=pl.Series([T0_NS + MINUTE, T0_NS + 2 * MINUTE]))
    enriched = ev.join(d.select("delivery_key", "trace_id"), on="delivery_key").with_columns(
        t_consumed=pl.lit(T0_NS), geo_country=pl.lit("US"), geo_region=pl.lit(None, pl.String),
        geo_city=pl.lit(None, pl.String), user_country=pl.lit("US"), user_segment=pl.lit("pro"),
        account_age_days=pl.lit(30, pl.Int32), session_id=pl.lit("s"), session_event_number=pl.lit(1, pl.Int64))
    return enriched, d, ids


@pytest.fixture
def wh(tmp_path):
    w = Warehouse(tmp_path / "wh.duckdb")
    yield w
    w.close()


def test_rows_go_to_their_type_table_and_load_on_the_batch_cadence():
    enriched, d, ids = _chunk()
    part = partition(enriched, d)
    assert sorted(part.parts) == [("events_like", False), ("events_view", False)]
    by_id = {r["event_id"]: r for r in part.rows.iter_rows(named=True)}
    assert by_id["e1"]["loaded_at"] == by_id["e2"]["loaded_at"] != by_id["e3"]["loaded_at"]
    assert int(by_id["e3"]["loaded_at"].timestamp()) == int(T0.timestamp()) + 120
    assert "t_consumed" not in part.rows.columns and part.seconds > 0
    ids.close()


def test_an_injected_failure_dead_letters_exactly_its_rows_and_the_rest_lands(wh):
    enriched, d, ids = _chunk()
    faults = FaultPlan([parse_fault("insert_failure:table=events_like")])
    part = partition(enriched, d, faults)
    assert part.rows.filter(pl.col("injected"))["event_id"].to_list() == ["e2"]
    ld = load(wh, part, d, ids, "run-1", attempts=3)
    assert ld.dead_lettered.select("event_id", "stage", "reason", "run_id").rows() == [
        ("e2", "warehouse.insert", "insert_failed", "run-1")]
    assert ld.dead_lettered["detail"][0].startswith("injected fault insert_failure: insert into events_like failed")
    per = dict(ld.per_delivery.sort("delivery_key").select("delivery_key", pl.struct(LoadResult.COUNTS)).rows())
    assert per == {"k1": {"loaded": 1, "dead_lettered": 1}, "k2": {"loaded": 1, "dead_lettered": 0}}
    assert ld.audit.sort("table_name", "loaded_at").select("table_name", "row_count", "success", "attempts").rows() == [
        ("events_like", 1, False, 3), ("events_view", 1, True, 1), ("events_view", 1, True, 1)]
    assert ld.loads.height == 2 and ld.loads["dead_lettered"].to_list() == [1, 0]
    assert len(render_load_spans(ld.loads, ld.inserts, ld.links)[2]) == 3, "one insert span per table and load"
    assert set(ld.seconds) == {"warehouse.insert", "telemetry"}
    wh.commit()
    assert wh.con.execute("SELECT event_id FROM events ORDER BY ALL").fetchall() == [("e1",), ("e3",)]
    assert faults.to_dicts()[0]["events"] == 1
    ids.close()


def test_a_transient_failure_is_retried_and_a_real_error_redoes_the_chunk_without_that_table(wh):
    enriched, d, ids = _chunk()
    ld = load(wh, partition(enriched, d), d, ids, "run-1", attempts=3,
              insert_fault=lambda table, attempt: "timeout" if attempt == 1 else None)
    assert set(ld.audit.select("success", "attempts").rows()) == {(True, 2)}
    wh.rollback()
    wh.con.execute("CREATE TABLE events_like (event_id VARCHAR, event_ts INTEGER)")  # a broken table
    ld = load(wh, partition(enriched, d), d, ids, "run-1", attempts=2)
    assert ld.dead_lettered["event_id"].to_list() == ["e2"]
    assert ld.dead_lettered["detail"][0].startswith("BinderException"), "the database's own error, not the abort after it"
    wh.commit()
    assert wh.con.execute("SELECT count(*) FROM events_view").fetchall() == [(2,)]
    ids.close()


def test_record_writes_rejects_and_deliveries_that_balance(wh):
    from dqkit.pipeline.dedup import Deduplicator
    from dqkit.pipeline.validate import validate

    enriched, d, ids = _chunk()
    bad = raw_events([{"delivery_key": "k2", "event_id": "x1", "event_ts": None}], deliveries("k2", platform="android"))
    bad = bad.join(d.select("delivery_key", "trace_id"), on="delivery_key")
    v = validate(bad, d)
    dd = Deduplicator().run(v.valid, d)
    ld = load(wh, partition(enriched, d), d, ids, "run-1")
    batches = d.with_columns(received=pl.Series([2, 2]), invalid=pl.Series([0, 1]), duplicate=pl.lit(0),
                             published=pl.Series([2, 1]))
    out = record(wh, batches, v, dd, ld, "run-1")
    wh.commit()
    assert out.select("delivery_key", "loaded", "dead_lettered", "in_flight", "run_id").sort("delivery_key").rows() == [
        ("k1", 2, 0, 0, "run-1"), ("k2", 1, 0, 0, "run-1")]
    assert wh.con.execute("SELECT event_id, stage, reason FROM rejected_events").fetchall() == [
        ("x1", "validate", "bad_timestamp")]
    got = wh.con.execute("SELECT delivery_key, received, invalid + loaded + dead_lettered FROM deliveries ORDER BY 1")
    assert got.fetchall() == [("k1", 2, 2), ("k2", 2, 2)]
    ids.close()
