"""The replay clock on hand-made per-batch frames: entry, amortized steps, delays, load cadence."""

import polars as pl

from dqkit.pipeline import clock

S = 1_000_000_000


def test_deliveries_enter_at_arrival_or_the_last_known_time():
    d = pl.DataFrame({"received_at": [None, 5_000_000, None, 2_000_000]}).with_columns(
        pl.col("received_at").cast(pl.Datetime("us", "UTC")))
    assert d.select(clock.entry_times(None))["t_enter"].to_list() == [5 * S, 5 * S, 5 * S, 2 * S]
    none = pl.DataFrame({"received_at": [None, None]}, schema={"received_at": pl.Datetime("us", "UTC")})
    assert none.select(clock.entry_times(7))["t_enter"].to_list() == [7, 7]


def test_ingest_steps_share_the_measured_seconds_by_events():
    d = pl.DataFrame({"t_enter": [0, 100 * S], "event_count": [3, 1]})
    out = clock.stamp_ingest(d, {"validate": 4.0, "dedup": 0.0, "publish": 8.0})
    assert out["t_validated"].to_list() == [3 * S, 101 * S]
    assert (out["t_deduped"] - out["t_validated"]).to_list() == [clock.MIN_STAGE_NS] * 2, "a step takes at least 1 us"
    assert (out["t_published"] - out["t_deduped"]).to_list() == [6 * S, 2 * S]


def test_enrich_steps_add_the_profile_delay_and_loads_follow_the_cadence():
    d = pl.DataFrame({"t_consumed": [10 * S, 70 * S], "published": [1, 1], "slow": [True, False]})
    delay = pl.when(pl.col("slow")).then(30 * S).otherwise(0)
    out = clock.stamp_enrich(d, {"enrich.user_profile": 2.0, "enrich.geo_ip": 2.0, "enrich.session": 2.0}, 2, delay, 60.0)
    assert out["t_profiled"].to_list() == [41 * S, 71 * S]
    assert out["t_enriched"].to_list() == [43 * S, 73 * S]
    assert out["t_load"].to_list() == [60 * S, 120 * S]
    assert out.select(clock.as_timestamp(pl.col("t_load")))["t_load"].dt.epoch("s").to_list() == [60, 120]
