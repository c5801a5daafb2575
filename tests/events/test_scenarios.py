"""Each data scenario: the replay's warehouse and span ledger show exactly truth.json's numbers,
and the accounting identity holds."""

import json

import pytest

from dqkit.errors import ConfigError
from dqkit.events.generator import SampleSpec, generate
from dqkit.events.scenarios import parse_scenario
from dqkit.investigate.ledger import batch_ledger
from tests.conftest import assert_balanced

QUIET = dict(events=4_000, users=300, days=2, seed=9, retry_rate=0.0, invalid_rate=0.0, offline_rate=0.0)


def _run(tmp_path, run_sample, *specs, **kw):
    s = generate(tmp_path / "gen", SampleSpec(**{**QUIET, **kw}, scenarios=tuple(parse_scenario(x) for x in specs)))
    truth = json.loads(s.truth_path.read_text())
    run = run_sample(s.events_path, profiles=s.profiles_path)
    assert_balanced(run)
    lg = run.result.ledger
    exp = truth["expected"]
    assert (lg.received, lg.invalid, lg.duplicate, lg.loaded) == (exp["received"], exp["invalid"], exp["duplicate"], exp["loaded"])
    return run, truth, (truth["scenarios"][0] if truth["scenarios"] else None)


def test_clean_sample_has_only_the_stated_noise(tmp_path, run_sample):
    run, truth, _ = _run(tmp_path, run_sample, retry_rate=0.02, invalid_rate=0.01, offline_rate=0.01)
    assert run.result.ledger.invalid == truth["noise"]["invalid_events"] > 0
    assert truth["noise"]["retried_batches"] > 0 and run.result.ledger.duplicate > 0


def test_sdk_bad_timestamps(tmp_path, run_sample):
    run, _, t = _run(tmp_path, run_sample, "sdk_bad_timestamps:app_version=8.4.0,start=2026-11-20T08:00:00Z,duration=6h")
    assert (t["stage"], t["kind"]) == ("validate", "drop") and t["events"] > 0
    got = run.sql("SELECT count(*), count(DISTINCT json_extract_string(raw, '$.user_id')), min(app_version), max(app_version) "
                  "FROM rejected_events WHERE reason = 'bad_timestamp'")[0]
    assert got == (t["events"], t["users"], "8.4.0", "8.4.0")
    assert sum(batch_ledger(run.spans())["invalid"]) == t["events"]


def test_retry_storm(tmp_path, run_sample):
    run, _, t = _run(tmp_path, run_sample, "retry_storm:platform=web,magnitude=4,start=2026-11-20T12:00:00Z,duration=3h")
    assert (t["stage"], t["kind"]) == ("dedup", "inflated") and t["events"] > 0
    assert run.result.ledger.duplicate == t["events"]
    assert run.sql("SELECT DISTINCT platform FROM rejected_events WHERE stage = 'dedup'") == [("web",)]


def test_event_id_collision_loses_real_events(tmp_path, run_sample):
    run, _, t = _run(tmp_path, run_sample, "event_id_collision:sdk_version=3.1.4,rate=0.3")
    assert (t["stage"], t["kind"]) == ("dedup", "drop") and t["events"] > 0
    same_batch = run.sql("SELECT count(*), count(DISTINCT json_extract_string(raw, '$.user_id')) FROM rejected_events "
                         "WHERE stage = 'dedup' AND duplicate_of_trace = trace_id AND sdk_version = '3.1.4'")[0]
    assert same_batch == (t["events"], t["users"])


@pytest.mark.parametrize("hours,rejected", [(30, True), (-3, False)])
def test_clock_skew(tmp_path, run_sample, hours, rejected):
    run, _, t = _run(tmp_path, run_sample, f"clock_skew:platform=android,magnitude={hours},start=2026-11-20T16:00:00Z,duration=3h")
    assert t["events"] > 0
    if rejected:
        assert (t["stage"], t["kind"]) == ("validate", "drop")
        assert run.sql("SELECT count(*) FROM rejected_events WHERE reason = 'future_timestamp'")[0][0] == t["events"]
    else:
        assert (t["stage"], t["kind"]) == ("client", "degraded") and run.result.ledger.invalid == 0
        assert run.sql("SELECT count(*) FROM events WHERE received_at - event_ts >= INTERVAL 3 HOUR")[0][0] == t["events"]


def test_bot_burst(tmp_path, run_sample):
    run, _, t = _run(tmp_path, run_sample, "bot_burst:magnitude=12,start=2026-11-20T20:00:00Z,duration=1h")
    assert (t["events"], t["users"]) == (480, 12) and t["window"] == {"start": "2026-11-20T20:00:00Z", "end": "2026-11-20T21:00:00Z"}
    # Bots are the only users without a profile whose ids the sample had never seen before.
    got = run.sql("SELECT count(*), count(DISTINCT user_id), min(event_ts) >= '2026-11-20 20:00:00+00', "
                  "max(event_ts) < '2026-11-20 21:00:00+00', min(platform), max(platform) FROM events "
                  f"WHERE user_id >= 'u_{QUIET['users']:07d}'")[0]
    assert got == (480, 12, True, True, "web", "web")


def test_late_delivery(tmp_path, run_sample):
    run, _, t = _run(tmp_path, run_sample, "late_delivery:platform=ios,magnitude=8,start=2026-11-20T06:00:00Z,duration=4h")
    assert (t["stage"], t["kind"]) == ("client", "delay") and t["events"] > 0
    got = run.sql("SELECT count(*), count(DISTINCT user_id), min(platform), max(platform) FROM events "
                  "WHERE loaded_at - event_ts >= INTERVAL 8 HOUR")[0]
    assert got == (t["events"], t["users"], "ios", "ios")


def test_real_drop_against_the_same_sample_without_it(tmp_path, run_sample):
    spec = "real_drop:country=DE,rate=0.5,start=2026-11-20T12:00:00Z,end=2026-11-21T12:00:00Z"
    run, _, t = _run(tmp_path / "drop", run_sample, spec)
    assert (t["stage"], t["kind"]) == ("none", "real_change") and t["events"] > 0
    base = generate(tmp_path / "base", SampleSpec(**QUIET))
    assert json.loads(base.truth_path.read_text())["expected"]["received"] - run.result.ledger.received == t["events"]
    assert run.result.ledger.invalid == 0 and run.result.ledger.duplicate == 0


@pytest.mark.parametrize("bad,part", [
    ("flood", "unknown name 'flood'"), ("real_drop:magnitude=3", "takes no magnitude"),
    ("bot_burst:magnitude=0", "at least 1"), ("late_delivery:start=tomorrow", "start='tomorrow'"),
    ("retry_storm:magnitude=lots", "magnitude='lots'"), ("clock_skew:region=EU", "unknown key 'region'"),
])
def test_malformed_scenarios_name_the_bad_part(bad, part):
    with pytest.raises(ConfigError, match=part):
        parse_scenario(bad)


def test_weekly_cycle_and_version_rollout(tmp_path):
    import gzip

    import polars as pl

    s = generate(tmp_path / "week", SampleSpec(events=30_000, users=800, days=7, seed=4))  # 2026-11-20 is a Friday
    lines = [json.loads(x) for x in gzip.open(s.events_path, "rt")]
    ev = pl.DataFrame([{"day": e["timestamp"][:10], "app": b["client"]["app_version"], "platform": b["client"]["platform"]}
                       for b in lines for e in b["events"] if e["timestamp"][:4] == "2026"])
    per_day = dict(ev.group_by("day").len().iter_rows())
    weekend = (per_day["2026-11-21"] + per_day["2026-11-22"]) / 2
    weekday = (per_day["2026-11-24"] + per_day["2026-11-25"]) / 2
    assert weekend < 0.9 * weekday
    android = ev.filter((pl.col("platform") == "android") & (pl.col("day") <= "2026-11-26"))
    share = android.group_by("day").agg((pl.col("app") == "8.4.0").mean().alias("new")).sort("day")["new"].to_list()
    assert share[0] < share[-1] and share[-1] > 0.6


def test_cli_generate_with_scenario(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dqkit.cli", "generate", "--out", str(tmp_path), "--events", "2000",
                          "--users", "100", "--profiles-csv", "--scenario", "bot_burst:magnitude=3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["scenarios"][0]["users"] == 3 and (tmp_path / "profiles.csv").is_file()
    bad = subprocess.run([sys.executable, "-m", "dqkit.cli", "generate", "--out", str(tmp_path / "x"), "--scenario", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown name 'nope'" in bad.stderr
