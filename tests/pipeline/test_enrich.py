"""Enrichment on hand-made frames: profiles, geo-IP and sessions as one step, counted per delivery."""

from datetime import date, timedelta

import polars as pl
import pytest

from dqkit.pipeline.enrich import STEPS, Enricher, EnrichResult
from dqkit.pipeline.faults import FaultPlan, parse_fault
from dqkit.pipeline.geoip import open_geoip
from dqkit.pipeline.profiles import ProfileStore
from dqkit.pipeline.sessions import SessionStitcher
from tests.pipeline.frames import T0, deliveries, raw_events

PROFILES = pl.DataFrame({"user_id": ["u_1", "u_2"], "user_country": ["US", "DE"], "user_segment": ["pro", "free"],
                         "signup_date": [date(2026, 1, 1), date(2025, 6, 30)]})


@pytest.fixture(scope="module")
def geo():
    return open_geoip()


def _consumed() -> pl.DataFrame:
    d = deliveries("k1", "k2")
    ev = raw_events([
        {"delivery_key": "k1", "event_id": "e1", "user_id": "u_1", "event_ts": T0},
        {"delivery_key": "k1", "event_id": "e2", "user_id": "u_1", "event_ts": T0 + timedelta(minutes=5),
         "event_type": "like"},
        {"delivery_key": "k1", "event_id": "e3", "user_id": "u_9", "client_ip": "10.0.0.1"},
        {"delivery_key": "k2", "event_id": "e4", "user_id": "u_2", "client_ip": "2a00:1450:4001:82a::200e"},
    ], d)
    return ev.with_columns(t_consumed=pl.col("received_at").dt.epoch("ns"))


def _enricher(geo, faults=None):
    return Enricher(ProfileStore(PROFILES), geo, SessionStitcher(), faults)


def test_profiles_geo_and_sessions_are_added_and_counted_per_delivery(geo):
    r = _enricher(geo).run(_consumed())
    rows = {e["event_id"]: e for e in r.events.iter_rows(named=True)}
    assert (rows["e1"]["user_country"], rows["e1"]["user_segment"], rows["e1"]["account_age_days"]) == ("US", "pro", 323)
    assert rows["e3"]["user_segment"] is None, "no profile: the event stays, with empty profile columns"
    assert (rows["e1"]["geo_country"], rows["e3"]["geo_country"], rows["e4"]["geo_country"]) == ("US", None, "IE")
    assert rows["e1"]["session_id"] == rows["e2"]["session_id"] and rows["e2"]["session_event_number"] == 2
    per = {p["delivery_key"]: p for p in r.per_delivery.iter_rows(named=True)}
    assert {k: per["k1"][k] for k in EnrichResult.COUNTS} == {
        "profile_hits": 1, "profile_misses": 2, "profile_missing": 1, "profile_errors": 0, "geo_resolved": 2,
        "geo_errors": 0, "sessions_new": 2}
    assert (per["k1"]["event_types"], per["k1"]["geo_country"]) == ("like,view", "US")
    assert (per["k2"]["geo_resolved"], per["k2"]["geo_country"]) == (1, "IE")
    assert sorted(r.session_changes["user_id"].to_list()) == ["u_1", "u_2", "u_9"]
    assert set(r.seconds) == set(STEPS) and all(s > 0 for s in r.seconds.values())


def test_outages_degrade_events_count_errors_apart_from_missing_profiles_and_keep_the_truth(geo):
    faults = FaultPlan([parse_fault("profile_outage"), parse_fault("geoip_outage:platform=ios")])
    r = _enricher(geo, faults).run(_consumed())
    assert r.events.height == 4, "an outage degrades events, it never drops them"
    assert r.events["geo_country"].null_count() == 4 and r.events["user_segment"].null_count() == 4
    assert r.per_delivery["profile_errors"].sum() == 4 and r.per_delivery["profile_missing"].sum() == 0
    truth = {t["name"]: t for t in faults.to_dicts()}
    assert (truth["profile_outage"]["events"], truth["profile_outage"]["users"]) == (4, 3)
    assert truth["geoip_outage"]["segment"] == {"platform": "ios"} and truth["geoip_outage"]["events"] == 4
