"""The queue adapters and the record parser, without HTTP: the embedded log's segments, its
recovery from a crash mid-write, committed offsets; records to the pipeline's frames."""

from __future__ import annotations

import asyncio
import json

import polars as pl

from dqkit.live.envelope import delivery_key, native_batch, receive_span_id, traceparent
from dqkit.live.lines import LineParser, Record
from dqkit.live.queues import LogSink, LogSource, read_committed
from dqkit.pipeline.span_writer import delivery_trace_id


def deliveries(n: int, start: int = 0):
    return [native_batch({"batch_id": f"b{i}", "events": [{"event_id": f"e{i}", "event_type": "view", "user_id": "u",
                                                           "timestamp": "2026-12-01T10:00:00Z"}]}, 1_800_000_000_000_000 + i)
            for i in range(start, start + n)]


def send_all(sink: LogSink, ds) -> list:
    async def go():
        return [await sink.send(d) for d in ds]  # one at a time: one write each
    return asyncio.run(go())


def test_log_rolls_segments_resumes_from_the_commit_and_deletes_what_is_done(tmp_path):
    sink = LogSink(tmp_path / "q", segment_bytes=1000)
    ds = deliveries(30)
    sent = send_all(sink, ds)
    assert [s.offset for s in sent] == sorted(s.offset for s in sent)
    assert len(list((tmp_path / "q").glob("segment-*"))) > 3
    src = LogSource(tmp_path / "q")
    got = []
    while len(got) < 12:  # a poll stays within one segment
        got += src.poll(12 - len(got), 0)
    assert [r.value for r in got] == [d.line for d in ds[:12]]
    src.commit(got)
    assert read_committed(tmp_path / "q") == got[-1].end
    # A new consumer starts at the committed offset, across segment boundaries.
    rest = []
    src2 = LogSource(tmp_path / "q")
    while batch := src2.poll(7, 0):
        rest += batch
    assert [r.value for r in rest] == [d.line for d in ds[12:]]
    assert src2.drained()
    src2.commit(rest)
    assert len(list((tmp_path / "q").glob("segment-*"))) == 1, "consumed segments are deleted, the last one kept"
    sink.close()


def test_a_line_cut_by_a_crash_is_never_read_and_is_cut_on_restart(tmp_path):
    sink = LogSink(tmp_path / "q")
    ds = deliveries(3)
    send_all(sink, ds[:2])
    sink.close()
    (seg,) = (tmp_path / "q").glob("segment-*")
    with open(seg, "ab") as fh:  # the server died halfway through writing a line
        fh.write(ds[2].line[:40])
    src = LogSource(tmp_path / "q")
    assert [r.value for r in src.poll(10, 0)] == [d.line for d in ds[:2]]
    assert src.drained(), "a partial line was never acknowledged: nothing is left to read"
    sink = LogSink(tmp_path / "q")  # the restarted server cuts it off, then appends
    send_all(sink, ds[2:])
    sink.close()
    assert [r.value for r in LogSource(tmp_path / "q").poll(10, 0)] == [d.line for d in ds]


def test_records_to_frames_with_their_receiving_span(tmp_path):
    ds = deliveries(4)
    parser = LineParser()
    recs = [Record(ds[0].line, 0, 0, traceparent=ds[0].traceparent),
            Record(ds[1].line, 0, 1, traceparent="00-" + "f" * 32 + "-" + "a" * 16 + "-01"),  # another trace: ignored
            Record(ds[2].line, 1, 0, traceparent="garbage"),
            Record(ds[3].line, 1, 1),
            Record(ds[3].line, 1, 1)]  # the same record twice in one poll is one delivery
    chunk = parser.parse(recs)
    d = chunk.deliveries.sort("line_no")
    assert d.get_column("batch_id").to_list() == ["b0", "b1", "b2", "b3"]
    assert d.get_column("parent_span_id").to_list() == [ds[0].span_id, None, None, None]
    assert chunk.events.height == 4
    # From the embedded log (no headers) the receiving span is derived from the line.
    derived = parser.parse([Record(ds[3].line, 0, 0)], derive_context=True).deliveries
    key = delivery_key(ds[3].line)
    assert derived.get_column("parent_span_id").to_list() == [receive_span_id(key)]
    assert ds[3].traceparent == traceparent(delivery_trace_id(key), receive_span_id(key))
    assert json.loads(ds[3].line)["received_at"] == "2027-01-15T08:00:00.000003Z"


def test_live_clock_enters_at_arrival_and_shows_the_queue_wait(tmp_path):
    """A live consumer's spans start each batch at its request's arrival, so the time it sat in
    the queue is the ``queue`` stage (publish to enrich), and ``loaded_at`` is the real load time."""
    import threading
    import time

    import duckdb

    from dqkit.investigate.lag import stage_lag
    from dqkit.investigate.spans import load_spans
    from dqkit.live.consumer import ConsumerConfig, consume
    from dqkit.live.queues import parse_queue

    waited_s = 30
    arrived_us = (time.time_ns() // 1000) - waited_s * 1_000_000  # requests that arrived 30 s ago
    ds = [native_batch({"batch_id": f"b{i}", "events": [{"event_id": f"e{i}", "event_type": "view", "user_id": f"u{i}",
                                                         "timestamp": "2026-12-01T10:00:00Z"}]}, arrived_us + i)
          for i in range(5)]
    sink = LogSink(tmp_path / "q")
    send_all(sink, ds)
    sink.close()
    stop = threading.Event()
    stop.set()  # drain what is there, then stop
    out = consume(parse_queue(f"embedded:{tmp_path / 'q'}", tmp_path / "wh.duckdb"), tmp_path / "wh.duckdb",
                  tmp_path / "tel", config=ConsumerConfig(poll_s=0.05, linger_s=0), stop=stop)
    assert out.records == 5 and out.ledger is not None and out.ledger.loaded == 5

    sd = load_spans(tmp_path / "tel")
    starts = sd.con.sql("SELECT start_ns // 1000 FROM spans WHERE name = 'analytics.ingest_batch' ORDER BY 1").fetchall()
    assert [s for (s,) in starts] == [arrived_us + i for i in range(5)], "ingest starts at the request's arrival"
    lag = stage_lag(sd).filter(pl.col("stage") == "queue")
    assert lag.height == 1 and lag["batches"][0] == 5
    assert waited_s - 1 < lag["p50_s"][0] < waited_s + 30, lag
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    (low,), = con.sql("SELECT min(epoch_us(loaded_at) - epoch_us(received_at)) FROM events").fetchall()
    con.close()
    assert low >= waited_s * 1_000_000, "loaded_at is when the row really loaded"


def test_live_clock_enters_a_record_without_an_arrival_stamp_when_it_is_read(tmp_path):
    """A record another producer wrote, with no ``received_at``, enters when the consumer reads it
    (not at the epoch, nor at an earlier batch's time)."""
    import time

    from dqkit.pipeline.run import Replay, ReplayConfig

    line = json.dumps({"batch_id": "foreign", "events": [{"event_id": "f1", "event_type": "view", "user_id": "u",
                                                          "timestamp": "2026-12-01T10:00:00Z"}]}).encode()
    chunk = LineParser().parse([Record(line, 0, 0)])
    run = Replay(tmp_path / "wh.duckdb", tmp_path / "tel", config=ReplayConfig(clock="live"))
    try:
        before = time.time_ns()
        ingested = run.ingest(chunk)
        assert ingested is not None
        (entered,) = ingested.batches.get_column("t_enter").to_list()
        assert before <= entered <= time.time_ns()
        run.consume(ingested)
    finally:
        result = run.close("test")
    assert result.ledger.received == 1 and result.ledger.unaccounted == 0  # accounted for, whatever validation said
