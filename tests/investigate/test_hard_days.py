"""Diagnosis on hard days: several incidents at one stage, real growth against bots, ids reused
across batches, rows deleted after load, a backlog still in flight at the as-of time, empty and
partial days, and the false alarms that must stay quiet (a weekend dip, a small product)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dqkit.events.generator import SampleSpec, generate
from dqkit.events.scenarios import parse_scenario
from dqkit.investigate.diagnose import diagnose
from dqkit.pipeline.cleanup import delete_rows
from dqkit.pipeline.faults import parse_fault
from dqkit.pipeline.run import ReplayConfig, replay

DAY = "2026-11-27"  # a Friday; the samples start on the Friday a week before


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _near(window: dict, start: str, end: str, slack_h: float = 1.0) -> bool:
    """Each end of a found window within ``slack_h`` hours of the truth's."""
    return (abs((_t(window["start"]) - _t(start)).total_seconds()) <= slack_h * 3600
            and abs((_t(window["end"]) - _t(end)).total_seconds()) <= slack_h * 3600)


def _build(tmp_path, scenarios=(), faults=(), users=1_500, events=40_000, days=8, seed=3):
    s = generate(tmp_path / "gen", SampleSpec(events=events, users=users, days=days, seed=seed,
                                               scenarios=tuple(parse_scenario(x) for x in scenarios)))
    replay(s.events_path, tmp_path / "wh.duckdb", tmp_path / "tel", profiles=s.profiles_path,
           config=ReplayConfig(faults=tuple(parse_fault(x) for x in faults)))
    truth = json.loads(s.truth_path.read_text())
    return tmp_path / "wh.duckdb", tmp_path / "tel", truth


def _adds_up(d: dict) -> None:
    parts = d["decomposition"]
    assert sum(parts["parts"].values()) == parts["total_change"] and parts["adds_up"], parts
    assert d["reason"], "every verdict says why"


def test_two_incidents_at_one_stage_are_two_findings(tmp_path):
    wh, tel, _ = _build(tmp_path, [f"sdk_bad_timestamps:platform=android,start={DAY}T02:00:00Z,duration=4h",
                                   f"sdk_bad_timestamps:platform=ios,start={DAY}T14:00:00Z,duration=4h"])
    d = diagnose(wh, tel, DAY).to_dict()
    _adds_up(d)
    val = [f for f in d["findings"] if f["stage"] == "validate"]
    by_platform = {f["segment"].get("platform"): f for f in val}
    assert {"android", "ios"} <= set(by_platform), val
    assert _near(by_platform["android"]["window"], f"{DAY}T02:00:00Z", f"{DAY}T06:00:00Z")
    assert _near(by_platform["ios"]["window"], f"{DAY}T14:00:00Z", f"{DAY}T18:00:00Z")
    assert d["verdict"] == "pipeline"


def test_real_growth_is_real_and_a_bot_burst_is_inflated(tmp_path):
    wh, tel, _ = _build(tmp_path / "g", [f"real_growth:magnitude=0.3,start={DAY}T00:00:00Z,duration=1d"])
    d = diagnose(wh, tel, DAY).to_dict()
    _adds_up(d)
    assert d["verdict"] == "real", d["reason"]
    top = d["findings"][0]
    assert (top["stage"], top["kind"], top.get("direction")) == ("none", "real_change", "up")

    wh, tel, truth = _build(tmp_path / "b", [f"bot_burst:magnitude=150,start={DAY}T14:00:00Z,duration=4h"])
    d = diagnose(wh, tel, DAY).to_dict()
    _adds_up(d)
    assert d["verdict"] == "inflated", d["reason"]
    bots = next(f for f in d["findings"] if f["kind"] == "inflated")
    assert bots["stage"] == "client" and _near(bots["window"], f"{DAY}T14:00:00Z", f"{DAY}T18:00:00Z"), bots["window"]
    # The bots' missing profiles are theirs, not a degraded profile store.
    assert not [f for f in d["findings"] if f["stage"] == "enrich.user_profile" and f["kind"] == "degraded"]


def test_a_bot_burst_within_the_days_noise_is_still_bots_not_a_profile_outage(tmp_path):
    # 50 bots on a ~460-DAU product whose organic users fell a little: the day's total moves +36,
    # within its noise (±14%), but the ids are identified, so they are bots, not users, not a
    # degraded profile store and not a delay.
    wh, tel, _ = _build(tmp_path, [f"bot_burst:magnitude=50,start={DAY}T18:00:00Z,duration=2h"], seed=4)
    d = diagnose(wh, tel, DAY).to_dict()
    _adds_up(d)
    assert d["verdict"] == "inflated", d["reason"]
    bots = next(f for f in d["findings"] if f["kind"] == "inflated")
    assert 45 <= bots["users"] <= 55 and d["decomposition"]["parts"]["inflated"] == bots["users"]
    assert _near(bots["window"], f"{DAY}T18:00:00Z", f"{DAY}T20:00:00Z"), bots["window"]
    assert not [f for f in d["findings"] if f["stage"] == "enrich.user_profile" and f["kind"] == "degraded"]


def test_bots_arriving_while_users_leave_are_mixed(tmp_path):
    # Bots hide a real fall: DAU barely moves, yet US users left and bots took their place.
    wh, tel, _ = _build(tmp_path, [f"real_drop:country=US,rate=0.6,start={DAY}T00:00:00Z",
                                   f"bot_burst:magnitude=150,start={DAY}T14:00:00Z,duration=3h"])
    d = diagnose(wh, tel, DAY).to_dict()
    _adds_up(d)
    assert d["verdict"] == "mixed" and "bot-like burst" in d["reason"] and "really moved" in d["reason"], d["reason"]
    parts = d["decomposition"]["parts"]
    assert parts["inflated"] >= 140 and parts["real_change"] < 0, parts
    real = next(f for f in d["findings"] if f["kind"] == "real_change")
    assert real["direction"] == "down" and real["segment"].get("country") == "US", real


def test_ids_reused_for_other_events_are_a_drop_and_resends_are_not(tmp_path):
    wh, tel, _ = _build(tmp_path / "r", [f"id_reuse:sdk_version=3.1.4,rate=0.6,start={DAY}T06:00:00Z,duration=10h"])
    d = diagnose(wh, tel, DAY).to_dict()
    _adds_up(d)
    dd = next(f for f in d["findings"] if f["stage"] == "dedup")
    assert dd["kind"] == "drop" and dd["segment"].get("sdk_version") == "3.1.4" and "collision" in dd["cause"], dd

    wh, tel, _ = _build(tmp_path / "s", [f"retry_storm:platform=web,magnitude=6,start={DAY}T12:00:00Z,duration=3h"])
    d = diagnose(wh, tel, DAY).to_dict()
    dd = next(f for f in d["findings"] if f["stage"] == "dedup")
    assert dd["kind"] == "inflated" and "resent" in dd["cause"], dd


def test_rows_deleted_after_load_are_a_warehouse_drop_not_users_leaving(tmp_path):
    wh, tel, _ = _build(tmp_path)
    truth = delete_rows(wh, _t(f"{DAY}T09:00:00Z"), _t(f"{DAY}T15:00:00Z"), platform="ios")
    d = diagnose(wh, tel, DAY).to_dict()
    _adds_up(d)
    gone = next(f for f in d["findings"] if f["stage"] == "warehouse")
    assert gone["kind"] == "drop" and gone["segment"].get("platform") == "ios", gone
    assert _near(gone["window"], f"{DAY}T09:00:00Z", f"{DAY}T15:00:00Z", 1.5), gone["window"]
    assert gone["events"] <= truth["events"] and gone["events"] >= 0.8 * truth["events"]
    assert d["verdict"] in ("pipeline", "mixed"), d["reason"]
    assert d["decomposition"]["parts"]["warehouse"] < 0


def test_a_backlog_in_flight_at_the_as_of_time_is_delay_and_provisional(tmp_path):
    wh, tel, _ = _build(tmp_path, faults=[f"queue_backlog:delay=10h,start={DAY}T16:00:00Z,end={DAY}T23:59:00Z"])
    morning = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    d = diagnose(wh, tel, DAY, as_of=morning).to_dict()
    _adds_up(d)
    assert d["status"] == "provisional" and d["as_of"] == "2026-11-28T01:00:00Z"
    flight = next(f for f in d["findings"] if f.get("cause") == "in flight")
    assert flight["kind"] == "delay" and flight["events"] > 0 and _t(flight["window"]["start"]).hour >= 15, flight
    assert d["verdict"] != "real", "users still in flight are not a real drop"
    assert d["dau"]["band"]["low"] <= d["dau"]["warehouse"] + d["dau"]["expected_late"] <= d["dau"]["band"]["high"]
    later = diagnose(wh, tel, DAY).to_dict()  # as of the last load: everything has landed
    assert later["status"] == "final" and not [f for f in later["findings"] if f.get("cause") == "in flight"]


def test_empty_and_partial_days_are_no_data(tmp_path):
    wh, tel, _ = _build(tmp_path, days=8)
    d = diagnose(wh, tel, "2026-11-30").to_dict()  # after the data
    assert d["verdict"] == "no_data" and "data covers" in d["reason"]
    partial = diagnose(wh, tel, DAY, as_of=datetime(2026, 11, 27, 6, tzinfo=UTC)).to_dict()
    assert partial["verdict"] == "no_data" and partial["status"] == "provisional", partial["reason"]
    hours = next(f for f in partial["findings"] if f["kind"] == "no_data")["hours"]
    assert min(hours) >= 6 and 23 in hours
    with pytest.raises(ValueError, match="outside the data"):
        diagnose(wh, tel, DAY, baseline_day="2026-10-01")
    with pytest.raises(ValueError, match="not before"):
        diagnose(wh, tel, "2026-11-25", baseline_day="2026-11-26")


@pytest.mark.parametrize("users,events,day", [(1_500, 40_000, "2026-11-22"), (300, 6_000, DAY)],
                         ids=["weekend-dip", "small-product"])
def test_quiet_days_are_none(tmp_path, users, events, day):
    wh, tel, _ = _build(tmp_path, users=users, events=events)
    d = diagnose(wh, tel, day).to_dict()
    _adds_up(d)
    assert d["verdict"] == "none", (d["reason"], d["findings"])
    assert d["reason"].startswith("within noise")
