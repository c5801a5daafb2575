"""Scenarios for the days a DAU diagnosis finds hard: genuine growth, ids reused across batches,
bots that look like bots, two incidents at one stage, and a clean week's weekend dip. Every
truth entry is checked against the written NDJSON and the replayed warehouse, not against the
generator's own variables."""

import gzip
import json

import polars as pl
import pytest

from dqkit.errors import ConfigError
from dqkit.events.generator import SampleSpec, generate
from dqkit.events.scenarios import parse_scenario
from tests.conftest import assert_balanced
from tests.events.sample import day, read_events

QUIET = dict(events=6_000, users=400, days=2, seed=11, retry_rate=0.0, invalid_rate=0.0, offline_rate=0.0)
DAY2 = "2026-11-21"


def _gen(path, *specs, **kw):
    s = generate(path, SampleSpec(**{**QUIET, **kw}, scenarios=tuple(parse_scenario(x) for x in specs)))
    return s, json.loads(s.truth_path.read_text())


def _replay(s, truth, run_sample):
    run = run_sample(s.events_path, profiles=s.profiles_path)
    assert_balanced(run)
    lg, exp = run.result.ledger, truth["expected"]
    assert (lg.received, lg.invalid, lg.duplicate, lg.loaded) == (exp["received"], exp["invalid"], exp["duplicate"], exp["loaded"])
    return run


def _dau(run) -> dict[str, int]:
    return dict(run.sql("SELECT strftime(event_ts, '%Y-%m-%d'), count(DISTINCT user_id) FROM events GROUP BY 1"))


def _lost_user_days(sent: pl.DataFrame, run) -> dict[str, int]:
    """User-days in the NDJSON (valid timestamps or not: by the day the event happened) with no loaded row."""
    loaded = pl.DataFrame(run.sql("SELECT DISTINCT user_id, strftime(event_ts, '%Y-%m-%d') FROM events"),
                          schema=["user_id", "d"], orient="row")
    sent_days = sent.select("user_id", d=pl.coalesce(
        pl.col("timestamp").str.to_datetime("%d/%m/%Y %H:%M:%S", strict=False).dt.strftime("%Y-%m-%d"), day())).unique()
    gone = sent_days.join(loaded, on=["user_id", "d"], how="anti").group_by("d").len()
    return {d: n for d, n in gone.iter_rows()}


# -- real growth ------------------------------------------------------------------------------

def test_real_growth_adds_new_signups_that_look_like_real_users(tmp_path, run_sample):
    spec = f"real_growth:magnitude=0.25,start={DAY2}T00:00:00Z,duration=1d"
    s, truth = _gen(tmp_path / "g", spec)
    t = truth["scenarios"][0]
    assert (t["stage"], t["kind"], t["direction"], t["segment"], t["cause"]) == ("none", "real_change", "up", {}, "new users signed up")
    assert t["window"] == {"start": f"{DAY2}T00:00:00Z", "end": "2026-11-22T00:00:00Z"}
    run = _replay(s, truth, run_sample)

    profiles = pl.read_parquet(s.profiles_path)
    new_ids = profiles.filter(pl.col("signup_date") == pl.date(2026, 11, 21))["user_id"]
    sent = read_events(s.events_path)
    new = sent.filter(pl.col("user_id").is_in(new_ids.implode()))
    assert new["user_id"].n_unique() == t["users"] > 0 and new.height == t["events"]
    # Their first session starts in the window; in the warehouse they carry their profiles.
    assert new["timestamp"].min() >= f"{DAY2}T00:00:00" and new.group_by("user_id").agg(pl.col("timestamp").min())["timestamp"].max() < "2026-11-22"
    wh = pl.DataFrame(run.sql("SELECT user_id, user_country, account_age_days FROM events"), schema=["user_id", "c", "age"], orient="row")
    mine = wh.filter(pl.col("user_id").is_in(new_ids.implode()))
    assert mine.height == t["events"] and mine["c"].null_count() == 0 and mine["age"].max() <= 1

    # Spread like real users: many countries and networks, every platform, ordinary sessions.
    base, _ = _gen(tmp_path / "base")
    ordinary = read_events(base.events_path).filter(day() == DAY2)
    assert new["client_ip"].n_unique() == t["users"]
    assert new.select(pl.col("client_ip").str.extract(r"^(\d+\.\d+\.\d+)\.")).n_unique() > 0.9 * t["users"]
    assert new["platform"].n_unique() == 3 and new.join(profiles, on="user_id")["country"].n_unique() >= 5
    per_user, base_per_user = new.height / t["users"], ordinary.height / ordinary["user_id"].n_unique()
    assert 0.6 < per_user / base_per_user < 1.6, (per_user, base_per_user)
    shares = new.group_by("event_type").len().with_columns(pl.col("len") / new.height)
    assert shares.filter(pl.col("event_type") == "view")["len"][0] == pytest.approx(
        ordinary.filter(pl.col("event_type") == "view").height / ordinary.height, abs=0.08)

    # DAU rises by exactly the new users; the day before is untouched.
    base_dau = ordinary["user_id"].n_unique()
    assert _dau(run)[DAY2] - base_dau == t["users"]
    assert round(t["users"] / base_dau, 2) == pytest.approx(0.25, abs=0.02)


def test_real_growth_in_one_segment(tmp_path):
    s, truth = _gen(tmp_path / "g", f"real_growth:platform=android,country=BR,magnitude=0.5,start={DAY2}T12:00:00Z,duration=6h")
    t = truth["scenarios"][0]
    assert t["segment"] == {"platform": "android", "country": "BR"} and t["users"] > 0
    profiles = pl.read_parquet(s.profiles_path).filter(pl.col("signup_date") == pl.date(2026, 11, 21))
    new = read_events(s.events_path).join(profiles, on="user_id")
    assert new["user_id"].n_unique() == t["users"] and new.height == t["events"]
    assert set(new["platform"]) == {"android"} and set(new["country"]) == {"BR"} and set(new["app_version"]) == {"8.4.0"}
    firsts = new.group_by("user_id").agg(pl.col("timestamp").min())["timestamp"]
    assert firsts.min() >= f"{DAY2}T12:00:00" and firsts.max() < f"{DAY2}T18:00:00"


@pytest.mark.parametrize("bad,part", [("real_growth:magnitude=0", "above 0"), ("real_growth:magnitude=-1", "above 0"),
                                      ("id_reuse:platform=ios", "sdk_version=3.1.4"), ("id_reuse:sdk_version=3.1.4,magnitude=2", "takes no magnitude")])
def test_malformed_new_scenarios(bad, part):
    with pytest.raises(ConfigError, match=part):
        parse_scenario(bad)


def test_the_same_scenario_twice_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="given twice"):
        _gen(tmp_path, "bot_burst:magnitude=3", "bot_burst:magnitude=3")


# -- ids reused across batches versus retry storms ----------------------------------------------

def test_id_reuse_takes_ids_of_other_events_in_earlier_batches(tmp_path, run_sample):
    spec = "id_reuse:sdk_version=3.1.4,platform=ios,rate=0.3,start=2026-11-20T10:00:00Z,duration=8h"
    s, truth = _gen(tmp_path / "g", spec)
    t = truth["scenarios"][0]
    assert (t["stage"], t["kind"], t["segment"]) == ("dedup", "drop", {"sdk_version": "3.1.4", "platform": "ios"}) and t["events"] > 0
    sent = read_events(s.events_path)
    # Ids carried by more than one event; the first in file order keeps it, the others are lost.
    shared = sent.filter(pl.len().over("event_id") > 1).sort("line")
    later = shared.filter(pl.int_range(pl.len()).over("event_id") > 0)
    first = shared.group_by("event_id", maintain_order=True).first()
    pairs = later.join(first, on="event_id", suffix="_first")
    assert pairs.height == t["events"] and later["user_id"].n_unique() == t["users"]
    assert (pairs["batch_id"] != pairs["batch_id_first"]).all() and (pairs["event_type"] != pairs["event_type_first"]).all()
    assert (pairs["timestamp"] != pairs["timestamp_first"]).all() and set(pairs["sdk_version_first"]) == {"3.1.4"}
    assert set(later["platform"]) == {"ios"} and later["timestamp"].min() >= "2026-11-20T10" and later["timestamp"].max() < "2026-11-20T18"

    run = _replay(s, truth, run_sample)
    got = run.sql("SELECT count(*), count(DISTINCT user_id), count(DISTINCT duplicate_of_batch = batch_id) FROM rejected_events "
                  "WHERE stage = 'dedup' AND sdk_version = '3.1.4'")[0]
    assert got == (t["events"], t["users"], 1)
    assert run.sql("SELECT bool_and(duplicate_of_batch <> batch_id) FROM rejected_events WHERE stage = 'dedup'")[0][0]
    assert _lost_user_days(sent, run) == t["users_lost_by_day"] and t["users_lost"] == sum(t["users_lost_by_day"].values())


def test_retry_storm_resends_are_byte_identical_events(tmp_path, run_sample):
    s, truth = _gen(tmp_path / "g", "retry_storm:platform=web,magnitude=3,start=2026-11-20T12:00:00Z,duration=3h")
    t = truth["scenarios"][0]
    with gzip.open(s.events_path, "rt") as f:
        lines = [json.loads(x) for x in f]
    by_batch: dict[str, list] = {}
    for b in lines:
        by_batch.setdefault(b["batch_id"], []).append(json.dumps(b["events"]))
    resent = {k: v for k, v in by_batch.items() if len(v) > 1}
    assert resent and all(len(set(v)) == 1 for v in resent.values())  # same ids, types, times, properties
    assert sum((len(v) - 1) * len(json.loads(v[0])) for v in resent.values()) == t["events"]
    # The contrast with id_reuse: here no id is shared by two different events.
    sent = read_events(s.events_path)
    assert sent.select("event_id", "event_type", "timestamp", "properties", "user_id").unique().group_by("event_id").len()["len"].max() == 1
    run = _replay(s, truth, run_sample)
    assert run.result.ledger.duplicate == t["events"] and "users_lost" not in t


# -- bots -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,window", [
    ("bot_burst:magnitude=30,start=2026-11-20T20:00:00Z,duration=2h", ("2026-11-20T20:00:00Z", "2026-11-20T22:00:00Z")),
    ("bot_burst:magnitude=12", ("2026-11-20T14:00:00Z", "2026-11-20T17:00:00Z")),
])
def test_bot_burst_looks_like_bots(tmp_path, run_sample, spec, window):
    s, truth = _gen(tmp_path / "g", spec)
    t = truth["scenarios"][0]
    assert t["window"] == {"start": window[0], "end": window[1]}
    assert t["segment"] == {"platform": "web", "app_version": "2026.11.1", "sdk_version": "1.12.0", "country": "US"}
    nets = t["ip_networks"]
    assert 1 <= len(nets) <= 2 and all(n.endswith(".0/24") for n in nets)
    assert len(nets) == (2 if t["users"] > 16 else 1)
    sent = read_events(s.events_path).with_columns(net=pl.col("client_ip").str.replace(r"\.\d+$", ".0/24"))
    bots = sent.filter(pl.col("net").is_in(nets))
    assert bots.height == t["events"] and bots["user_id"].n_unique() == t["users"]
    assert bots["client_ip"].n_unique() <= 6 * len(nets) < t["users"]  # few addresses, shared
    # New ids without profiles, one client build, only inside the window.
    profiles = pl.read_parquet(s.profiles_path)
    assert bots.join(profiles, on="user_id").is_empty() and bots["user_id"].is_in(sent.filter(~pl.col("net").is_in(nets))["user_id"].implode()).sum() == 0
    assert bots.select("platform", "app_version", "sdk_version").unique().rows() == [("web", "2026.11.1", "1.12.0")]
    assert bots["timestamp"].min() >= window[0][:19] and bots["timestamp"].max() < window[1][:19]
    assert bots["properties"].n_unique() <= 3 * t["users"] and set(bots["event_type"]) <= {"session_start", "view", "tap"}

    run = _replay(s, truth, run_sample)
    wh = pl.DataFrame(run.sql("SELECT user_id, session_id, epoch(max(event_ts) - min(event_ts)), count(*), min(geo_country), "
                              "max(geo_country) FROM events GROUP BY ALL"), schema=["user_id", "session", "secs", "n", "g1", "g2"],
                      orient="row")
    mine = wh.filter(pl.col("user_id").is_in(bots["user_id"].unique().implode()))
    assert mine["n"].sum() == t["events"] and set(mine["g1"]) | set(mine["g2"]) == {"US"}
    assert mine["secs"].max() < 120 and mine["n"].max() <= 20 and mine.height >= 2 * t["users"]  # short sessions
    real = wh.filter(~pl.col("user_id").is_in(bots["user_id"].unique().implode()))
    assert real["secs"].median() > 3 * mine["secs"].median()
    assert run.sql("SELECT count(*) FROM events WHERE user_country IS NULL AND user_id IN "
                   f"({','.join(repr(u) for u in bots['user_id'].unique())})")[0][0] == t["events"]


# -- two incidents at one stage ---------------------------------------------------------------------

@pytest.mark.parametrize("name,reason", [("sdk_bad_timestamps:", "bad_timestamp"), ("clock_skew:magnitude=30,", "future_timestamp")])
def test_two_incidents_at_one_stage_keep_their_own_truth(tmp_path, run_sample, name, reason):
    a = f"{name}platform=android,start=2026-11-20T08:00:00Z,duration=4h"
    b = f"{name}platform=ios,start={DAY2}T15:00:00Z,duration=3h"
    s, truth = _gen(tmp_path / "g", a, b)
    ta, tb = truth["scenarios"]
    assert (ta["spec"], tb["spec"]) == (a, b) and ta["events"] > 0 and tb["events"] > 0
    assert ta["segment"] == {"platform": "android"} and tb["segment"] == {"platform": "ios"}
    assert ta["stage"] == tb["stage"] == "validate" and ta["window"]["end"] == "2026-11-20T12:00:00Z"
    run = _replay(s, truth, run_sample)
    got = {p: (n, u) for p, n, u in run.sql(
        "SELECT platform, count(*), count(DISTINCT user_id) FROM rejected_events "
        f"WHERE stage = 'validate' AND reason = '{reason}' GROUP BY platform")}
    assert got == {"android": (ta["events"], ta["users"]), "ios": (tb["events"], tb["users"])}
    lost = _lost_user_days(read_events(s.events_path), run) if reason == "bad_timestamp" else None
    if lost is not None:
        assert lost == {k: ta["users_lost_by_day"].get(k, 0) + tb["users_lost_by_day"].get(k, 0)
                        for k in set(ta["users_lost_by_day"]) | set(tb["users_lost_by_day"])}


# -- clean weeks and small products ---------------------------------------------------------------

def test_a_clean_week_dips_at_the_weekend(tmp_path):
    s, truth = _gen(tmp_path / "w", events=70_000, users=2_000, days=7, seed=4, retry_rate=0.01, invalid_rate=0.002,
                    offline_rate=0.005)  # 2026-11-20 is a Friday
    assert truth["scenarios"] == []
    sent = read_events(s.events_path).filter(pl.col("timestamp").str.contains(r"^2026-11-2[0-6]"))
    dau = dict(sent.group_by(day()).agg(pl.col("user_id").n_unique()).iter_rows())
    weekend = (dau["2026-11-21"] + dau["2026-11-22"]) / 2
    weekday = sum(dau[d] for d in ("2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26")) / 5
    assert 0.75 < weekend / weekday < 0.92, dau  # a believable weekend dip: 8-25% fewer users
    assert max(dau[d] for d in ("2026-11-21", "2026-11-22")) < min(dau[d] for d in ("2026-11-20", "2026-11-23", "2026-11-24"))


def test_a_small_product_of_300_users_is_sane(tmp_path, run_sample):
    # The number of events follows the users unless given: 8 per user and day.
    s, truth = _gen(tmp_path / "small", events=None, users=300, days=7, seed=5, retry_rate=0.01, invalid_rate=0.002,
                    offline_rate=0.005)
    assert truth["scenarios"] == [] and truth["users"] == 300
    sent = read_events(s.events_path)
    users = sent["user_id"].drop_nulls()
    assert users.n_unique() <= 300 and users.str.contains(r"^u_\d{7}$").all()
    valid = sent.filter(pl.col("timestamp").str.contains(r"^2026-11-2[0-6]"))  # the week, not what spills past it
    per_day = valid.group_by(day()).agg(pl.col("user_id").n_unique().alias("dau"), pl.len().alias("n"))
    assert per_day.height == 7 and per_day["dau"].min() >= 0.35 * 300 and per_day["dau"].max() <= 0.7 * 300
    user_days = valid.group_by("user_id", day()).len()
    assert 8 <= user_days["len"].mean() <= 30 and user_days["len"].max() < 300
    assert valid["platform"].n_unique() == 3 and pl.read_parquet(s.profiles_path).height >= 0.95 * 300
    assert 0.8 * 8 * 300 * 7 < valid.height < 1.2 * 8 * 300 * 7
    run = _replay(s, truth, run_sample)
    noise = truth["noise"]
    assert run.result.ledger.invalid == noise["invalid_events"] and run.result.ledger.duplicate > 0


def test_cli_generate_new_scenarios_and_refusals(tmp_path):
    import subprocess
    import sys

    def gen(*args):
        return subprocess.run([sys.executable, "-m", "dqkit.cli", "generate", "--events", "3000", "--users", "200", "--days", "2",
                               *args], capture_output=True, text=True, check=False)

    ok = gen("--out", str(tmp_path / "ok"), "--scenario", "real_growth:magnitude=0.3,start=2026-11-21T00:00:00Z",
             "--scenario", "id_reuse:sdk_version=2.9.0,rate=0.2", "--scenario", "bot_burst:magnitude=5,country=DE")
    assert ok.returncode == 0, ok.stderr
    names = [(t["name"], t["kind"], t["events"] > 0) for t in json.loads((tmp_path / "ok" / "truth.json").read_text())["scenarios"]]
    assert names == [("real_growth", "real_change", True), ("id_reuse", "drop", True), ("bot_burst", "inflated", True)]
    for args, part in [(["--scenario", "bot_burst:magnitude=2", "--scenario", "bot_burst:magnitude=2"], "given twice"),
                       (["--scenario", "bot_burst:country=XX"], "country='XX'"), (["--scenario", "id_reuse"], "sdk_version=")]:
        bad = gen("--out", str(tmp_path / "bad"), *args)
        assert bad.returncode == 2 and bad.stderr.startswith("dqkit: error: ") and part in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    help_text = gen("--help").stdout
    assert all(n in help_text for n in ("real_growth", "id_reuse", "/24"))


def test_same_seed_same_bytes_with_the_new_scenarios(tmp_path):
    specs = (f"real_growth:magnitude=0.2,start={DAY2}T00:00:00Z", "id_reuse:sdk_version=3.1.4,rate=0.2", "bot_burst:magnitude=20")
    a, _ = _gen(tmp_path / "a", *specs)
    b, _ = _gen(tmp_path / "b", *specs)
    for name in ("events.ndjson.gz", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert pl.read_parquet(a.profiles_path).equals(pl.read_parquet(b.profiles_path))
