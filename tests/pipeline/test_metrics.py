"""Metrics from hand-made chunk frames: counters and histograms under the design's names."""

from datetime import UTC, datetime

import polars as pl

from dqkit import names as n
from dqkit.pipeline.metrics import LAG_BOUNDS_S, PipelineMetrics, StageTimer, record_chunk

TS = pl.Datetime("us", "UTC")


def _chunk():
    batches = pl.DataFrame({"t_enter": [5, 9], "platform": ["ios", "web"], "received": [3, 1], "published": [2, 1],
                            "t_consumed": [0, 0], "t_enriched": [2_000_000, 500_000]})
    at = datetime(2026, 11, 20, 10, tzinfo=UTC)
    rows = pl.DataFrame({"landed": [True, True, False], "event_type": ["view", "view", "like"],
                         "event_ts": [at, at, at], "loaded_at": [datetime(2026, 11, 20, 10, 0, 30, tzinfo=UTC),
                                                                 datetime(2026, 11, 20, 10, 2, tzinfo=UTC), at]},
                        schema_overrides={"event_ts": TS, "loaded_at": TS})
    rejected = pl.DataFrame({"platform": ["ios"], "reason": ["bad_timestamp"]})
    duplicates = pl.DataFrame({"platform": ["web", "web"]})
    return batches, rows, rejected, duplicates


def test_a_chunk_adds_counters_and_histograms_by_the_designs_names_and_keys():
    m = PipelineMetrics()
    record_chunk(m, *_chunk())
    record_chunk(m, *_chunk())  # cumulative
    assert m.start_ns == 5
    assert m.counters[n.M_INGESTED] == {((n.CLIENT_PLATFORM, "ios"),): 4, ((n.CLIENT_PLATFORM, "web"),): 2}
    assert m.counters[n.M_REJECTED] == {
        ((n.CLIENT_PLATFORM, "ios"), (n.REJECTION_STAGE, "validate"), (n.REJECTION_REASON, "bad_timestamp")): 2,
        ((n.CLIENT_PLATFORM, "web"), (n.REJECTION_STAGE, "dedup"), (n.REJECTION_REASON, "duplicate")): 4}
    lag = m.hists[n.M_LAG][((n.EVENT_TYPE, "view"),)]
    assert (lag.count, lag.total, lag.lo, lag.hi) == (4, 300.0, 30.0, 120.0), "only rows that landed have a lag"
    assert lag.buckets[LAG_BOUNDS_S.index(30)] == 2 and lag.buckets[LAG_BOUNDS_S.index(120)] == 2
    enrich = m.hists[n.M_ENRICH_LATENCY][()]
    # 2 ms over 2 events and 0.5 ms over 1, twice: each event counted once, at its batch's per-event time.
    assert (enrich.count, enrich.total, enrich.lo, enrich.hi) == (6, 5.0, 0.5, 1.0)
    data = m.snapshot(100, {n.SERVICE_NAME: "dqkit"}, ("dqkit.pipeline", "0"))
    names = {x.name for x in data.resource_metrics[0].scope_metrics[0].metrics}
    assert names == set(n.METRICS)


def test_the_stage_timer_keeps_totals_and_the_chunk_in_hand():
    t = StageTimer()
    t.add({"validate": 1.0})
    with t("dedup"):
        pass
    t.last = {}
    t.add({"validate": 0.5})
    assert t.total["validate"] == 1.5 and t.last == {"validate": 0.5} and t.total["dedup"] > 0
