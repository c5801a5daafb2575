"""Hostile input, each class with a test: quarantined with a reason, nothing else lost."""

import json

import pytest

from tests.conftest import assert_balanced, batch, event, write_lines

GOOD = event("good")


def _rejects(run):
    return run.sql("SELECT reason, batch_id FROM rejected_events ORDER BY reason")


@pytest.mark.parametrize("text", ['{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}'])
def test_nan_and_infinity_are_not_json(tmp_path, run_sample, text):
    raw = ('{"batch_id":"b-nan","received_at":"2026-11-20T10:00:05Z","events":[{"event_id":"n1","event_type":"view",'
           '"user_id":"u","timestamp":"2026-11-20T10:00:00Z","properties":' + text + "}]}")
    run = run_sample(write_lines(tmp_path / "s.ndjson", [raw, batch("b-ok", [GOOD])]))
    assert [r[0] for r in _rejects(run)] == ["malformed_json"]
    assert run.result.ledger.loaded == 1
    assert_balanced(run)


def test_the_words_nan_and_infinity_inside_strings_are_fine(tmp_path, run_sample):
    ok = event("s1", properties={"note": "NaN and Infinity are words"})
    run = run_sample(write_lines(tmp_path / "s.ndjson", [batch("b-1", [ok])]))
    assert run.result.ledger.loaded == 1


def test_deeply_nested_and_huge_properties(tmp_path, run_sample):
    deep: dict = {}
    cur = deep
    for _ in range(500):
        cur["a"] = {}
        cur = cur["a"]
    nested = event("deep", properties=deep)
    huge = event("huge", properties={"blob": "x" * 5_000_000})
    run = run_sample(write_lines(tmp_path / "s.ndjson", [batch("b-1", [nested, huge, GOOD])]))
    reasons = dict((r[1], r[0]) for r in run.sql("SELECT reason, event_id FROM rejected_events"))
    assert reasons == {"huge": "oversized_properties"}
    assert {r[0] for r in run.sql("SELECT event_id FROM events")} == {"deep", "good"}
    assert_balanced(run)


@pytest.mark.parametrize("megabytes", [20, pytest.param(100, marks=pytest.mark.slow)])
def test_a_huge_line(tmp_path, run_sample, megabytes):
    big = batch("b-big", [event(f"e{n}", properties={"blob": "y" * 1_000_000}) for n in range(megabytes)])
    run = run_sample(write_lines(tmp_path / "s.ndjson", [big, batch("b-ok", [GOOD])]))
    assert run.result.ledger.invalid == megabytes and run.result.ledger.loaded == 1
    assert {r[0] for r in _rejects(run)} == {"oversized_properties"}
    assert_balanced(run)


def test_table_names_that_collide_after_normalisation(tmp_path, run_sample):
    seg = {"batch": [{"type": "track", "event": n, "messageId": f"m{i}", "userId": "u", "timestamp": "2026-11-20T10:00:00Z"}
                     for i, n in enumerate(["Order Completed", "order completed", "Order-Completed", "ORDER_COMPLETED"])],
           "sentAt": "2026-11-20T10:00:02Z"}
    native = batch("b-n", [event("n1", etype="order_completed"), event("n2", etype="Order_Completed")])
    run = run_sample(write_lines(tmp_path / "s.ndjson", [seg, native]))
    tables = {r[0] for r in run.sql("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'events_%'")}
    assert tables == {"events_order_completed"}, "one table; native names are not rewritten, only validated"
    assert run.sql("SELECT count(*) FROM events_order_completed") == [(5,)]
    assert _rejects(run) == [("bad_event_type", "b-n")]
    assert_balanced(run)


def test_duplicate_batch_ids_with_different_content(tmp_path, run_sample):
    a = batch("b-same", [event("x1"), event("x2")])
    b = batch("b-same", [event("x3"), event("x2")], received="2026-11-20T10:05:00Z")
    run = run_sample(write_lines(tmp_path / "s.ndjson", [a, b]))
    assert run.sql("SELECT count(*), count(DISTINCT trace_id) FROM deliveries WHERE batch_id = 'b-same'") == [(2, 2)]
    assert (run.result.ledger.loaded, run.result.ledger.duplicate) == (3, 1)
    assert_balanced(run)


def test_missing_client_and_empty_batches(tmp_path, run_sample):
    no_client = {"batch_id": "b-nc", "received_at": "2026-11-20T10:00:05Z", "events": [event("c1")]}
    empty = batch("b-empty", [])
    run = run_sample(write_lines(tmp_path / "s.ndjson", [no_client, empty, json.dumps({"batch_id": "b-none", "events": []})]))
    assert run.sql("SELECT platform, app_version, sdk_version FROM events") == [("unknown", "unknown", "unknown")]
    assert run.sql("SELECT count(*) FROM deliveries") == [(3,)]
    assert_balanced(run)
