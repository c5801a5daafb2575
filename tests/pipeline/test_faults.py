"""Each pipeline fault does exactly what its ground truth says, seen from the warehouse and from
the spans alone, and every event stays accounted for."""

import json
import subprocess
import sys

import pytest

from dqkit.errors import ConfigError
from dqkit.investigate.ledger import batch_ledger
from dqkit.investigate.reconcile import reconcile
from dqkit.pipeline.faults import parse_fault
from dqkit.pipeline.run import ReplayConfig, replay
from tests.conftest import Run, assert_balanced


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from dqkit.events.generator import SampleSpec, generate

    return generate(tmp_path_factory.mktemp("gen"), SampleSpec(events=4_000, users=250, seed=5))


def _replay(tmp_path, sample, *specs):
    faults = tuple(parse_fault(s) for s in specs)
    truth = tmp_path / "truth.json"
    res = replay(sample.events_path, tmp_path / "wh.duckdb", tmp_path / "tel", profiles=sample.profiles_path,
                 config=ReplayConfig(faults=faults, truth_path=truth))
    run = Run(res, tmp_path / "wh.duckdb", tmp_path / "tel")
    assert_balanced(run)
    doc = json.loads(truth.read_text())["faults"]
    assert doc == res.faults
    return run, doc


def _one(run, q):
    return run.sql(q)[0][0]


def _span_sum(run, name, attr):
    return _one_spans(run, f"SELECT coalesce(sum(try_cast(attrs['{attr}'] AS BIGINT)), 0) FROM spans WHERE name = '{name}'")


def _one_spans(run, q):
    return run.spans().con.sql(q).fetchall()[0][0]


def test_insert_failure_dead_letters_exactly_the_truth(tmp_path, sample):
    run, (t,) = _replay(tmp_path, sample,
                        "insert_failure:table=events_view,start=2026-11-20T10:00:00Z,end=2026-11-20T14:00:00Z")
    assert (t["stage"], t["kind"], t["segment"]) == ("warehouse.insert", "drop", {"table": "events_view"})
    assert t["events"] > 0 and run.result.ledger.dead_lettered == t["events"]
    dead = run.sql("SELECT count(*), count(DISTINCT json_extract_string(raw, '$.user_id')), min(event_type), max(event_type) "
                   "FROM rejected_events WHERE stage = 'warehouse.insert'")[0]
    assert dead == (t["events"], t["users"], "view", "view")
    assert sum(batch_ledger(run.spans())["dead_lettered"]) == t["events"]
    assert reconcile(run.warehouse, run.telemetry).totals["dead_lettered"] == t["events"]
    assert _one(run, "SELECT count(*) FROM events_view WHERE loaded_at >= '2026-11-20 10:00:00+00' "
                     "AND loaded_at < '2026-11-20 14:00:00+00'") == 0


def test_geoip_outage_degrades_exactly_the_truth(tmp_path, sample):
    run, (t,) = _replay(tmp_path, sample, "geoip_outage:rate=0.5,start=2026-11-20T15:00:00Z,duration=2h")
    assert t["events"] > 0 and t["window"] == {"start": "2026-11-20T15:00:00Z", "end": "2026-11-20T17:00:00Z"}
    # Generated addresses all resolve, so every event without a country is the outage's.
    got = run.sql("SELECT count(*), count(DISTINCT user_id) FROM events WHERE geo_country IS NULL")[0]
    assert got == (t["events"], t["users"])
    assert _span_sum(run, "analytics.enrich.geo_ip", "geo.unresolved") == t["events"]
    assert run.result.ledger.loaded == run.result.ledger.received - run.result.ledger.invalid - run.result.ledger.duplicate


def test_profile_outage_counts_errors_not_missing_profiles(tmp_path, sample):
    run, (t,) = _replay(tmp_path, sample, "profile_outage:platform=ios,start=2026-11-20T08:00:00Z,end=2026-11-20T12:00:00Z")
    assert t["events"] > 0 and t["segment"] == {"platform": "ios"}
    errors = _span_sum(run, "analytics.enrich.user_profile", "profile.errors")
    missing = _span_sum(run, "analytics.enrich.user_profile", "profile.missing")
    assert errors == t["events"] and missing > 0, "an outage is not confused with users who have no profile"
    assert _one(run, "SELECT count(*) FROM events WHERE user_segment IS NULL") == missing + errors


@pytest.mark.parametrize("spec,stage", [
    ("queue_backlog:delay=3h,platform=android,start=2026-11-20T06:00:00Z,duration=2h", "queue"),
    ("profile_slow:delay=5h,start=2026-11-20T12:00:00Z,end=2026-11-20T13:00:00Z", "enrich.user_profile"),
])
def test_delay_faults_delay_exactly_the_truth(tmp_path, sample, spec, stage):
    run, (t,) = _replay(tmp_path, sample, spec)
    hours = 3 if stage == "queue" else 5
    assert (t["stage"], t["kind"]) == (stage, "delay") and t["events"] > 0
    # Without the fault nothing waits more than a load interval or so after it was received.
    late = run.sql(f"SELECT count(*), count(DISTINCT user_id) FROM events "
                   f"WHERE loaded_at - received_at >= INTERVAL {hours} HOUR")[0]
    assert late == (t["events"], t["users"])
    if stage == "queue":
        assert run.sql(f"SELECT DISTINCT platform FROM events WHERE loaded_at - received_at >= INTERVAL {hours} HOUR") == [("android",)]
        waited = _one_spans(run, """
            SELECT count(*) FROM spans e JOIN spans p ON e.trace_id = p.trace_id AND e.parent_span_id = p.span_id
            WHERE e.name = 'analytics.enrich' AND e.start_ns - p.end_ns >= 10800000000000""")
        assert waited == run.sql("SELECT count(DISTINCT trace_id) FROM events WHERE loaded_at - received_at >= INTERVAL 3 HOUR")[0][0]


def test_same_faults_same_outcome(tmp_path, sample):
    spec = "insert_failure:rate=0.3,start=2026-11-20T09:00:00Z,duration=6h"
    a, (ta,) = _replay(tmp_path / "a", sample, spec)
    b, (tb,) = _replay(tmp_path / "b", sample, spec)
    assert ta == tb and 0 < ta["events"] < a.result.ledger.received


@pytest.mark.parametrize("bad,part", [
    ("nope", "unknown name 'nope'"), ("geoip_outage:start=noon", "start='noon'"),
    ("geoip_outage:rate=1.5", "between 0 and 1"), ("queue_backlog:start=2026-11-20T00:00:00Z", "needs delay="),
    ("geoip_outage:color=red", "unknown key 'color'"), ("insert_failure:table=x;drop", "events_<type>"),
    ("geoip_outage:start=2026-11-20T02:00:00Z,end=2026-11-20T01:00:00Z", "after start"),
    ("geoip_outage:duration=2h", "duration needs start"), ("profile_slow:delay=soon", "delay='soon'"),
])
def test_malformed_fault_specs_name_the_bad_part(bad, part):
    with pytest.raises(ConfigError, match=part.replace("(", r"\(").replace("[", r"\[")):
        parse_fault(bad)


def test_cli_rejects_a_bad_fault_before_running(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dqkit.cli", "replay", str(tmp_path / "s.ndjson"), "-w", str(tmp_path / "w"),
                          "-t", str(tmp_path / "t"), "--fault", "geoip_outage:rate=abc"], capture_output=True, text=True)
    assert out.returncode == 2 and "rate='abc'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


def test_the_plan_marks_exactly_what_each_fault_reaches_on_hand_made_frames():
    import polars as pl

    from dqkit.pipeline.faults import FaultPlan

    plan = FaultPlan([parse_fault("queue_backlog:delay=5m,platform=ios,start=2026-11-20T10:00:00Z,end=2026-11-20T11:00:00Z"),
                      parse_fault("insert_failure:table=events_like")])
    t10 = 1_795_168_800_000_000_000
    batches = pl.DataFrame({"delivery_key": ["k1", "k2", "k3", "k4"], "trace_id": ["t1", "t2", "t3", "t4"],
                            "platform": ["ios", "ios", "android", "ios"], "published": [2, 0, 1, 1],
                            "t_published": [t10 + 1, t10 + 2, t10 + 3, t10 + 3_600_000_000_000]})
    published = pl.DataFrame({"delivery_key": ["k1", "k1", "k3", "k4"], "user_id": ["u1", "u2", "u3", "u4"]})
    delay = batches.select(plan.batch_delay(batches, "queue_backlog", "t_published", published))["literal"].to_list()
    # k2 published nothing, k3 is android, k4 is past the window's end.
    assert delay == [300_000_000_000, 0, 0, 0]
    rows = pl.DataFrame({"table": ["events_like", "events_view"], "t_load": [t10, t10], "batch_platform": ["ios", "ios"],
                         "user_id": ["u1", "u2"]})
    assert plan.mark_inserts(rows)["injected"].to_list() == [True, False]
    truth = {t["name"]: t for t in plan.to_dicts()}
    assert (truth["queue_backlog"]["events"], truth["queue_backlog"]["users"]) == (2, 2)
    assert truth["queue_backlog"]["window"] == {"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T11:00:00Z"}
    assert truth["insert_failure"]["events"] == 1 and truth["insert_failure"]["segment"] == {"table": "events_like"}
