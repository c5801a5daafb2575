"""Diagnosis on generated incidents: the top finding names the right stage, kind, segment and
window, the verdict is right, and the decomposition adds up."""

import json
import subprocess
import sys
from datetime import datetime

import pytest

from dqkit.events.generator import SampleSpec, generate
from dqkit.events.scenarios import parse_scenario
from dqkit.investigate.diagnose import diagnose
from dqkit.investigate.explain import explain
from dqkit.pipeline.faults import parse_fault
from dqkit.pipeline.run import ReplayConfig, replay

DAY = "2026-11-27"  # a Friday; the sample starts on the Friday a week before


def _case(tmp_path, scenarios=(), faults=()):
    s = generate(tmp_path / "gen", SampleSpec(events=40_000, users=1_500, days=8, seed=3,
                                               scenarios=tuple(parse_scenario(x) for x in scenarios)))
    replay(s.events_path, tmp_path / "wh.duckdb", tmp_path / "tel", profiles=s.profiles_path,
           config=ReplayConfig(faults=tuple(parse_fault(x) for x in faults)))
    d = diagnose(tmp_path / "wh.duckdb", tmp_path / "tel", DAY).to_dict()
    parts = d["decomposition"]
    assert sum(parts["parts"].values()) == parts["total_change"] and parts["adds_up"]
    assert d["baseline_day"] == "2026-11-20" and "week before" in d["baseline_reason"]
    return d


def _overlaps(window, start, end):
    t = lambda x: datetime.fromisoformat(x.replace("Z", "+00:00"))  # noqa: E731
    return t(window["start"]) < t(end) and t(start) < t(window["end"])


CASES = [
    # (scenarios, faults, stage, kind, segment that must be contained, injected window, verdict)
    ([f"sdk_bad_timestamps:app_version=8.4.0,start={DAY}T08:00:00Z,duration=8h"], [],
     "validate", "drop", {"app_version": "8.4.0"}, ("T08", "T16"), "pipeline"),
    ([f"clock_skew:platform=android,magnitude=30,start={DAY}T12:00:00Z,duration=6h"], [],
     "validate", "drop", {"platform": "android"}, ("T12", "T18"), "pipeline"),
    ([f"event_id_collision:sdk_version=3.1.4,rate=0.3,start={DAY}T00:00:00Z"], [],
     "dedup", "drop", {"sdk_version": "3.1.4"}, ("T00", "T23"), "pipeline"),
    ([], [f"insert_failure:table=events_view,start={DAY}T09:00:00Z,end={DAY}T15:00:00Z"],
     "warehouse.insert", "drop", {"event_type": "view"}, ("T09", "T15"), "pipeline"),
    ([], [f"geoip_outage:start={DAY}T10:00:00Z,duration=4h"],
     "enrich.geo_ip", "degraded", {}, ("T10", "T14"), "pipeline"),
    ([], [f"queue_backlog:delay=3h,platform=android,start={DAY}T08:00:00Z,duration=4h"],
     "queue", "delay", {"platform": "android"}, ("T08", "T12"), "pipeline"),
    ([], [f"profile_slow:delay=2h,start={DAY}T12:00:00Z,duration=3h"],
     "enrich.user_profile", "delay", {}, ("T12", "T15"), "pipeline"),
    ([f"late_delivery:platform=ios,magnitude=6,start={DAY}T06:00:00Z,duration=6h"], [],
     "client", "delay", {"platform": "ios"}, ("T06", "T12"), "none"),
    ([f"retry_storm:platform=web,magnitude=6,start={DAY}T12:00:00Z,duration=3h"], [],
     "dedup", "inflated", {"platform": "web"}, ("T12", "T15"), "none"),
    ([], [f"profile_outage:platform=ios,start={DAY}T08:00:00Z,duration=6h"],
     "enrich.user_profile", "degraded", {"platform": "ios"}, ("T08", "T14"), "pipeline"),
    ([f"bot_burst:magnitude=80,start={DAY}T18:00:00Z,duration=2h"], [],
     "client", "inflated", {"country": "US"}, ("T18", "T20"), "inflated"),
]


@pytest.mark.parametrize("scenarios,faults,stage,kind,segment,window,verdict", CASES,
                         ids=[c[2] + "-" + c[3] + "-" + (c[0] or c[1])[0].split(":")[0] for c in CASES])
def test_top_finding_names_the_injected_incident(tmp_path, scenarios, faults, stage, kind, segment, window, verdict):
    d = _case(tmp_path, scenarios, faults)
    top = d["findings"][0]
    assert (top["stage"], top["kind"]) == (stage, kind), d["findings"]
    assert segment.items() <= top["segment"].items(), top["segment"]
    assert _overlaps(top["window"], DAY + window[0] + ":00:00Z", DAY + window[1] + ":00:00Z"), top["window"]
    assert d["verdict"] == verdict
    if kind == "degraded":
        degraded = d["decomposition"]["degraded_users"][stage]
        assert degraded["day"] > degraded["baseline"] and degraded["day"] >= top["users"] > 0
    assert set(top) >= {"stage", "kind", "segment", "window", "events", "users", "dau_impact_pct", "confidence", "evidence"}


def test_clean_sample_is_none(tmp_path):
    d = _case(tmp_path)
    assert d["verdict"] == "none"
    assert all(f["confidence"] < 0.3 for f in d["findings"]), d["findings"]


def test_a_real_drop_in_one_country_is_real_and_blames_no_stage(tmp_path):
    d = _case(tmp_path, [f"real_drop:country=US,rate=0.8,start={DAY}T00:00:00Z"])
    assert d["verdict"] == "real" and d["dau"]["change_pct"] < -10
    top = d["findings"][0]
    assert (top["stage"], top["kind"], top["segment"]) == ("none", "real_change", {"country": "US"})
    assert not [f for f in d["findings"] if f["stage"] not in ("none", "client") and f["confidence"] >= 0.5]
    assert d["decomposition"]["parts"]["real_change"] < 0


def test_explain_follows_an_event_through_every_decision(tmp_path):
    s = generate(tmp_path / "gen", SampleSpec(events=3_000, users=200, seed=2, retry_rate=0.05))
    replay(s.events_path, tmp_path / "wh.duckdb", tmp_path / "tel", profiles=s.profiles_path)
    import duckdb

    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    dup = con.execute("SELECT event_id, user_id FROM rejected_events WHERE stage = 'dedup' LIMIT 1").fetchall()[0]
    con.close()
    rows = explain(tmp_path / "wh.duckdb", event_id=dup[0])
    assert [r["outcome"] for r in rows] == ["loaded", "rejected"]
    assert rows[0]["decisions"][-1].startswith("loaded into events_")
    assert f"first seen in batch {rows[0]['batch_id']}" in rows[1]["decisions"][-1]
    assert rows[1]["duplicate_of_trace"] == rows[0]["trace_id"]
    day = rows[0]["event_ts"][:10]
    assert any(r["event_id"] == dup[0] for r in explain(tmp_path / "wh.duckdb", user_id=dup[1], day=day))


def test_cli_diagnose_json_contract(tmp_path):
    s = generate(tmp_path / "gen", SampleSpec(events=4_000, users=300, days=2, seed=2))
    replay(s.events_path, tmp_path / "wh.duckdb", tmp_path / "tel", profiles=s.profiles_path)
    out = subprocess.run([sys.executable, "-m", "dqkit.cli", "diagnose", "-w", str(tmp_path / "wh.duckdb"),
                          "-s", str(tmp_path / "tel"), "--day", "2026-11-21", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) >= {"day", "baseline_day", "verdict", "dau", "findings"}
    assert doc["baseline_day"] == "2026-11-20" and "previous day" in doc["baseline_reason"]
    assert set(doc["dau"]) >= {"warehouse", "received", "baseline", "change_pct", "expected_late"}  # additions allowed
    assert doc["verdict"] in {"pipeline", "real", "mixed", "none"}
    bad = subprocess.run([sys.executable, "-m", "dqkit.cli", "diagnose", "-w", str(tmp_path / "wh.duckdb"), "--day", "Friday"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "2026-11-20" in bad.stderr
