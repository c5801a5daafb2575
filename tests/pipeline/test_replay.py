"""End to end: accounting per batch from spans and warehouse, idempotence, dedup across runs,
retry then dead-letter, session and profile enrichment."""

from datetime import date, timedelta

import polars as pl
import pytest

from dqkit.pipeline.run import ReplayConfig, replay
from tests.conftest import Run, assert_balanced, batch, event, write_lines


def _mixed(tmp_path):
    items = [
        batch("b-1", [event("e1", user="u_1"), event("e2", user="u_2", ts="garbage"), event("e3", user="u_9")]),
        batch("b-2", [event("e4", user="u_1", ts="2026-11-20T10:10:00Z"), event("e4", user="u_1", ts="2026-11-20T10:10:00Z")],
              received="2026-11-20T10:10:05Z"),
        # A client retry of b-1 arrives later: its events are duplicates across batches.
        batch("b-1", [event("e1", user="u_1"), event("e2", user="u_2", ts="garbage"), event("e3", user="u_9")],
              received="2026-11-20T10:20:00Z"),
        b"{not json",
        batch("b-3", [event("e5", user="u_1", ts="2026-11-20T11:00:00Z", ip="2a00:1450:4001:82a::200e")],
              received="2026-11-20T11:00:02Z", platform="android"),
    ]
    profiles = pl.DataFrame({"user_id": ["u_1", "u_2"], "country": ["US", "DE"], "segment": ["pro", "free"],
                             "signup_date": ["2024-01-01", "2025-06-30"]})
    p = tmp_path / "profiles.csv"
    profiles.write_csv(p)
    return write_lines(tmp_path / "mixed.ndjson", items), p


def test_accounting_identity_per_batch(tmp_path, run_sample):
    sample, profiles = _mixed(tmp_path)
    run = run_sample(sample, profiles=profiles)
    lg = run.result.ledger
    assert (lg.received, lg.loaded, lg.invalid, lg.duplicate, lg.dead_lettered) == (10, 4, 3, 3, 0)
    spans_ledger, _ = assert_balanced(run)
    retry = spans_ledger.filter((pl.col("batch_id") == "b-1") & (pl.col("duplicate") == 2))
    assert retry.height == 1 and retry["invalid"][0] == 1


def test_enrichment_columns(tmp_path, run_sample):
    sample, profiles = _mixed(tmp_path)
    run = run_sample(sample, profiles=profiles)
    rows = {r[0]: r[1:] for r in run.sql(
        "SELECT event_id, user_country, user_segment, geo_country, session_id, session_event_number, account_age_days, loaded_at > event_ts FROM events")}
    assert rows["e1"][:3] == ("US", "pro", "US")
    assert rows["e3"][:2] == (None, None), "a user without profile loads with empty profile columns"
    assert rows["e5"][2] == "IE", "IPv6 resolves"
    # e1 (10:00) and e4 (10:10) are one session of u_1; e5 (11:00) is a new one.
    assert rows["e1"][3] == rows["e4"][3] and rows["e4"][4] == 2
    assert rows["e5"][3] != rows["e1"][3] and rows["e5"][4] == 1
    assert rows["e1"][5] == (date(2026, 11, 20) - date(2024, 1, 1)).days
    assert all(r[6] for r in rows.values())


def test_rerun_changes_no_count(tmp_path, run_sample):
    sample, profiles = _mixed(tmp_path)
    first = run_sample(sample, profiles=profiles)
    counts = lambda: first.sql(  # noqa: E731
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM rejected_events), (SELECT count(*) FROM deliveries),"
        " (SELECT count(*) FROM load_audit)")
    before = counts()
    again = replay(sample, first.warehouse, first.telemetry, profiles=profiles)
    assert counts() == before
    assert again.ledger.received == 0 and again.skipped_deliveries == 5
    assert_balanced(Run(first.result, first.warehouse, first.telemetry))


def test_dedup_state_survives_between_runs(tmp_path, run_sample):
    a = write_lines(tmp_path / "a.ndjson", [batch("b-1", [event("e1"), event("e2")])])
    b = write_lines(tmp_path / "b.ndjson", [batch("b-9", [event("e2"), event("e3")], received="2026-11-20T12:00:00Z")])
    run = run_sample(a)
    second = replay(b, run.warehouse, run.telemetry)
    assert (second.ledger.loaded, second.ledger.duplicate) == (1, 1)
    dup = run.sql("SELECT event_id, batch_id, duplicate_of_batch FROM rejected_events WHERE stage = 'dedup'")
    assert dup == [("e2", "b-9", "b-1")]


def test_dedup_remembers_dead_lettered_ids_and_forgets_past_the_window(tmp_path, run_sample):
    # e1 loads, e2 is dead-lettered by a failed insert: a later run still knows both.
    a = write_lines(tmp_path / "a.ndjson", [batch("b-1", [event("e1"), event("e2", etype="tap")],
                                                   received="2026-11-20T10:00:00Z")])
    run = run_sample(a, config=ReplayConfig(insert_fault=lambda t, n: "disk full" if t == "events_tap" else None))
    assert (run.result.ledger.loaded, run.result.ledger.dead_lettered) == (1, 1)
    b = write_lines(tmp_path / "b.ndjson", [batch("b-2", [event("e1"), event("e2", etype="tap")],
                                                   received="2026-11-20T11:00:00Z"),
                                             batch("b-4", [event("e4")], received="2026-11-20T13:00:00Z")])
    second = replay(b, run.warehouse, run.telemetry, config=ReplayConfig(dedup_window=timedelta(hours=2)))
    assert (second.ledger.loaded, second.ledger.duplicate) == (1, 2)
    # The latest arrival on record is now 13:00, so a 2-hour window starts after e1 (10:00).
    c = write_lines(tmp_path / "c.ndjson", [batch("b-3", [event("e1")], received="2026-11-20T14:00:00Z")])
    third = replay(c, run.warehouse, run.telemetry, config=ReplayConfig(dedup_window=timedelta(hours=2)))
    assert (third.ledger.loaded, third.ledger.duplicate) == (1, 0)
    assert run.sql("SELECT count(*) FROM events WHERE event_id = 'e1'") == [(2,)]


def test_a_warehouse_with_a_stored_dedup_table_is_migrated(tmp_path, run_sample):
    import duckdb

    a = write_lines(tmp_path / "a.ndjson", [batch("b-1", [event("e1")])])
    run = run_sample(a)
    con = duckdb.connect(str(run.warehouse))  # as older dqkit versions left it: the ids in a table
    con.execute("DROP VIEW dedup_state")
    con.execute("CREATE TABLE dedup_state AS SELECT event_id, batch_id, trace_id, received_at FROM events")
    con.close()
    b = write_lines(tmp_path / "b.ndjson", [batch("b-2", [event("e1"), event("e5")], received="2026-11-20T10:30:00Z")])
    second = replay(b, run.warehouse, run.telemetry)
    assert (second.ledger.loaded, second.ledger.duplicate) == (1, 1)
    assert run.sql("SELECT table_type FROM information_schema.tables WHERE table_name = 'dedup_state'") == [("VIEW",)]
    assert run.sql("SELECT event_id FROM dedup_state ORDER BY event_id") == [("e1",), ("e5",)]


def test_sessions_continue_across_chunks_and_runs(tmp_path, run_sample):
    a = write_lines(tmp_path / "a.ndjson", [batch(f"b-{n}", [event(f"e{n}", ts=f"2026-11-20T10:{n:02d}:00Z")],
                                                   received=f"2026-11-20T10:{n:02d}:01Z") for n in range(0, 50, 10)])
    run = run_sample(a, config=ReplayConfig(chunk_lines=2))
    b = write_lines(tmp_path / "b.ndjson", [batch("b-late", [event("e-late", ts="2026-11-20T11:05:00Z")], received="2026-11-20T11:05:01Z")])
    replay(b, run.warehouse, run.telemetry)
    rows = run.sql("SELECT event_id, session_id, session_event_number FROM events ORDER BY event_ts")
    assert len({r[1] for r in rows}) == 1
    assert [r[2] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_failed_insert_is_retried_then_dead_lettered(tmp_path, run_sample):
    sample, profiles = _mixed(tmp_path)
    calls = []

    def fault(table, attempt):
        calls.append((table, attempt))
        return "injected: disk full" if table == "events_view" else None

    run = run_sample(sample, profiles=profiles, config=ReplayConfig(insert_fault=fault, insert_attempts=3))
    assert [a for t, a in calls if t == "events_view"] == [1, 2, 3]
    lg = run.result.ledger
    assert lg.dead_lettered == 4 and lg.loaded == 0
    dead = run.sql("SELECT reason, detail, raw IS NOT NULL FROM rejected_events WHERE stage = 'warehouse.insert'")
    assert len(dead) == 4 and all(r == ("insert_failed", "injected: disk full", True) for r in dead)
    audit = run.sql("SELECT success, attempts, error FROM load_audit")
    assert audit and all(r == (False, 3, "injected: disk full") for r in audit)
    assert_balanced(run)


def test_transient_insert_failure_recovers(tmp_path, run_sample):
    sample, _ = _mixed(tmp_path)
    run = run_sample(sample, config=ReplayConfig(insert_fault=lambda t, a: "timeout" if a == 1 else None))
    assert run.result.ledger.loaded == 4 and run.result.ledger.dead_lettered == 0
    assert {r for r in run.sql("SELECT success, attempts FROM load_audit")} == {(True, 2)}
    assert_balanced(run)


def test_generated_sample_balances(tmp_path, run_sample):
    from dqkit.events.generator import SampleSpec, generate

    s = generate(tmp_path / "gen", SampleSpec(events=5_000, users=300, seed=3))
    run = run_sample(s.events_path, profiles=s.profiles_path, config=ReplayConfig(chunk_lines=150))
    lg = run.result.ledger
    assert lg.received == s.events and lg.duplicate > 0 and lg.invalid > 0
    assert_balanced(run)


def test_segment_and_parquet_samples_balance(tmp_path, run_sample):
    seg = {"batch": [
        {"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "u1", "timestamp": "2026-11-20T10:00:00Z",
         "context": {"ip": "8.8.8.8", "os": {"name": "Android"}, "app": {"version": "8.4.0"}, "library": {"name": "analytics-android", "version": "4.0"}}},
        {"type": "alien", "messageId": "m-2", "userId": "u1", "timestamp": "2026-11-20T10:00:00Z"},
        {"type": "screen", "messageId": "m-1", "userId": "u1", "timestamp": "2026-11-20T10:00:01Z"},
    ], "sentAt": "2026-11-20T10:00:02Z"}
    run = run_sample(write_lines(tmp_path / "seg.ndjson", [seg]))
    assert (run.result.ledger.loaded, run.result.ledger.invalid, run.result.ledger.duplicate) == (1, 1, 1)
    assert run.sql("SELECT event_type, platform, app_version FROM events") == [("order_completed", "android", "8.4.0")]
    assert_balanced(run)

    pq = tmp_path / "flat.parquet"
    pl.DataFrame({"event_id": [f"p{n}" for n in range(250)], "event_type": ["view"] * 249 + ["Bad Type"],
                  "user_id": ["u1"] * 250, "timestamp": ["2026-11-20T10:00:00Z"] * 250,
                  "received_at": ["2026-11-20T10:00:01Z"] * 250}).write_parquet(pq)
    other = replay(pq, tmp_path / "pq.duckdb", tmp_path / "pqtel")
    assert (other.ledger.received, other.ledger.loaded, other.ledger.invalid) == (250, 249, 1)
    assert_balanced(Run(other, tmp_path / "pq.duckdb", tmp_path / "pqtel"))


def test_sample_with_nothing_loadable(tmp_path, run_sample):
    run = run_sample(write_lines(tmp_path / "s.ndjson", [batch("b-empty", []), b"not json"]))
    assert (run.result.ledger.received, run.result.ledger.invalid, run.result.ledger.loaded) == (1, 1, 0)
    assert_balanced(run)


def test_real_database_error_rolls_back_retries_and_dead_letters(tmp_path):
    import duckdb

    wh = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(wh))  # a table someone broke: event_ts cannot take a timestamp
    con.execute("CREATE TABLE events_view (event_id VARCHAR, event_ts INTEGER)")
    con.close()
    sample = write_lines(tmp_path / "s.ndjson", [batch("b-1", [event("e1"), event("e2", etype="tap")])])
    res = replay(sample, wh, tmp_path / "tel")
    assert (res.ledger.loaded, res.ledger.dead_lettered) == (1, 1)
    run = Run(res, wh, tmp_path / "tel")
    assert run.sql("SELECT event_id FROM events_tap") == [("e2",)]
    (dead,) = run.sql("SELECT event_id, reason FROM rejected_events WHERE stage = 'warehouse.insert'")
    assert dead == ("e1", "insert_failed")
    assert run.sql("SELECT table_name, success, attempts FROM load_audit ORDER BY table_name") == [
        ("events_tap", True, 1), ("events_view", False, 3)]
    assert_balanced(run)


def _state(wh):
    import duckdb

    con = duckdb.connect(str(wh), read_only=True)
    try:
        return [con.execute(q).fetchall() for q in (
            "SELECT event_id, batch_id, trace_id, event_type, session_id, session_event_number FROM events ORDER BY ALL",
            "SELECT event_id, batch_id, trace_id, stage, reason FROM rejected_events ORDER BY ALL",
            "SELECT delivery_key, trace_id, received, invalid, duplicate, loaded, dead_lettered FROM deliveries ORDER BY ALL")]
    finally:
        con.close()


def test_an_interrupted_replay_resumes_to_the_same_warehouse_and_spans(tmp_path):
    # Twelve batches of three chunks; the replay stops while the third chunk is in hand.
    items = [batch(f"b-{n}", [event(f"e{n}", user=f"u_{n % 4}", ts=f"2026-11-20T10:{n:02d}:00Z"), event(f"x{n}", ts="bad"),
                              event(f"e{max(n - 1, 0)}", user=f"u_{n % 4}")], received=f"2026-11-20T10:{n:02d}:30Z")
             for n in range(12)]
    sample = write_lines(tmp_path / "s.ndjson", items)
    cfg = ReplayConfig(chunk_lines=4)
    replay(sample, tmp_path / "clean.duckdb", tmp_path / "clean-tel", config=cfg)

    class Interrupted(Exception):
        pass

    def stop(position, counts):
        if counts.received >= 8 * 3:  # two chunks committed; the third is uncommitted
            raise Interrupted

    wh, tel = tmp_path / "wh.duckdb", tmp_path / "tel"
    with pytest.raises(Interrupted):
        replay(sample, wh, tel, config=cfg, progress=stop)
    assert (tel / "traces.jsonl.uncommitted").exists(), "the chunk in hand had its spans staged, not committed"
    assert len(_state(wh)[2]) == 8
    resumed = replay(sample, wh, tel, config=cfg)
    assert resumed.skipped_deliveries == 8 and resumed.ledger.received == 4 * 3
    assert _state(wh) == _state(tmp_path / "clean.duckdb")
    assert not (tel / "traces.jsonl.uncommitted").exists()
    assert_balanced(Run(None, wh, tel))


def test_the_two_halves_run_apart_as_process_does(tmp_path):
    from dqkit.events.readers import iter_sample
    from dqkit.pipeline.run import Replay

    sample, profiles = _mixed(tmp_path)
    run = Replay(tmp_path / "wh.duckdb", tmp_path / "tel", profiles=profiles, config=ReplayConfig(chunk_lines=2))
    results = []
    for chunk in iter_sample(sample, 2):
        ingested = run.ingest(chunk)
        assert ingested is not None
        b = ingested.batches
        # Per delivery, what ingest accounted for is what it was given.
        assert (b["received"] == b["invalid"] + b["duplicate"] + b["published"]).all()
        assert (b["t_enter"] <= b["t_validated"]).all() and (b["t_deduped"] <= b["t_published"]).all()
        results.append(run.consume(ingested))
    res = run.close(str(sample))
    assert sum(r.received for r in results) == res.ledger.received == 10
    assert (res.ledger.loaded, res.ledger.invalid, res.ledger.duplicate) == (4, 3, 3)
    assert_balanced(Run(res, tmp_path / "wh.duckdb", tmp_path / "tel"))


def test_a_stage_that_breaks_is_named_with_its_chunk_and_run(tmp_path, monkeypatch):
    from dqkit.errors import StageError
    from dqkit.pipeline.enrich import Enricher

    def broken(self, events):
        raise RuntimeError("profile service exploded")

    monkeypatch.setattr(Enricher, "run", broken)
    sample, _ = _mixed(tmp_path)
    with pytest.raises(StageError, match=r"^stage enrich failed on chunk 1 of run [0-9a-f]{16}: RuntimeError: "
                                         r"profile service exploded; the chunk was not committed") as info:
        replay(sample, tmp_path / "wh.duckdb", tmp_path / "tel")
    assert isinstance(info.value.__cause__, RuntimeError) and info.value.stage == "enrich" and info.value.chunk == 1
    monkeypatch.undo()
    again = replay(sample, tmp_path / "wh.duckdb", tmp_path / "tel")  # nothing was committed: all of it loads now
    assert again.skipped_deliveries == 0 and again.ledger.received == 10
