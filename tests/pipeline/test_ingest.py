"""The ingest half on hand-made frames: validate, dedup and publish, counted per delivery."""

import polars as pl

from dqkit.pipeline.dedup import Deduplicator
from dqkit.pipeline.ingest import IngestResult, ingest
from dqkit.pipeline.queue import EmbeddedQueue
from dqkit.pipeline.span_writer import SpanIds
from tests.pipeline.frames import deliveries, raw_events, with_counts


def _chunk():
    d = deliveries("k1", "k2")
    ev = raw_events([
        {"delivery_key": "k1", "event_id": "e1"}, {"delivery_key": "k1", "event_id": "e2", "event_ts": None},
        {"delivery_key": "k1", "event_id": "e1"}, {"delivery_key": "k2", "event_id": "e3", "user_id": "u_2"},
        {"delivery_key": "k2", "event_id": "e1"},
    ], d)
    return with_counts(d, ev), ev


def test_every_event_is_accounted_for_per_delivery_and_published_with_its_trace():
    d, ev = _chunk()
    queue, ids = EmbeddedQueue(), SpanIds()
    r = ingest(d, ev, Deduplicator(), queue, ids)
    b = r.batches.sort("delivery_key")
    assert b.select("delivery_key", *IngestResult.COUNTS).rows() == [("k1", 3, 1, 1, 1), ("k2", 2, 0, 1, 1)]
    assert r.validated.rejected.select("event_id", "reason").rows() == [("e2", "bad_timestamp")]
    dups = r.deduped.duplicates.sort("delivery_key").select("event_id", "batch_id", "duplicate_of_batch").rows()
    assert dups == [("e1", "b-k1", "b-k1"), ("e1", "b-k2", "b-k1")]
    assert set(r.seconds) == {"validate", "dedup", "publish"}
    # The replay clock: each delivery enters at its arrival, and every step takes some time.
    assert b["t_enter"].to_list() == d.sort("delivery_key")["received_at"].dt.epoch("ns").to_list()
    assert (b["t_enter"] < b["t_validated"]).all() and (b["t_validated"] < b["t_deduped"]).all()
    assert (b["t_deduped"] < b["t_published"]).all()
    msg = queue.consume()
    assert sorted(msg.events["event_id"].to_list()) == ["e1", "e3"]
    heads = msg.headers.join(b.select("delivery_key", "trace_id", "sid_publish"), on="delivery_key")
    assert all(tp == f"00-{t}-{s}-01" for tp, t, s in heads.select("traceparent", "trace_id", "sid_publish").rows())
    ids.close()


def test_a_delivery_without_arrival_time_enters_at_the_watermark():
    d, ev = _chunk()
    d = d.with_columns(received_at=pl.lit(None, pl.Datetime("us", "UTC")))
    ids = SpanIds()
    r = ingest(d, ev.with_columns(received_at=pl.lit(None, pl.Datetime("us", "UTC"))), Deduplicator(), EmbeddedQueue(),
               ids, watermark_ns=123)
    ids.close()
    assert r.batches["t_enter"].to_list() == [123, 123]
    assert r.batches["invalid"].to_list() == [3, 2], "no plausible received_at: every event is rejected"
