"""Each class of bad input lands in rejected_events with its reason; nothing else is lost."""

import gzip
import json
import zlib

import pytest

from tests.conftest import assert_balanced, batch, event, write_lines

GOOD = event("good-1")

CASES = {
    "malformed_json": b'{"batch_id": "b-x", "events": [',
    "invalid_utf8": b'{"batch_id": "b-x", "events": [], "note": "\xff\xfe"}',
    "not_a_batch": b'{"hello": "world"}',
    "missing_field": batch("b-x", [{k: v for k, v in event("e-x").items() if k != "user_id"}]),
    "wrong_type": batch("b-x", [event("e-x", user=12345)]),
    "bad_timestamp": batch("b-x", [event("e-x", ts="yesterday-ish")]),
    "future_timestamp": batch("b-x", [event("e-x", ts="9999-12-31T23:59:59Z")]),
    "ancient_timestamp": batch("b-x", [event("e-x", ts="0001-01-01T00:00:00Z")]),
    "bad_event_type": batch("b-x", [event("e-x", etype="x; DROP TABLE events_view --")]),
    "oversized_properties": batch("b-x", [event("e-x", properties={"blob": "x" * 40_000})]),
    "event_not_object": batch("b-x", [42]),
    "bad_received_at": batch("b-x", [event("e-x")], received="not a time"),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_bad_input_is_quarantined(tmp_path, run_sample, reason):
    sample = write_lines(tmp_path / "s.ndjson", [batch("b-good", [GOOD]), CASES[reason], batch("b-good2", [event("good-2")])])
    run = run_sample(sample)
    rows = run.sql("SELECT stage, reason, raw FROM rejected_events")
    assert [(r[0], r[1]) for r in rows] == [("validate", reason)]
    assert rows[0][2], "the raw payload is kept"
    assert sorted(r[0] for r in run.sql("SELECT event_id FROM events")) == ["good-1", "good-2"]
    assert run.result.ledger.invalid == 1 and run.result.ledger.loaded == 2
    assert_balanced(run)


def test_hostile_event_type_creates_no_table(tmp_path, run_sample):
    hostile = ['x"; DROP TABLE events; --', "Événement", "a" * 10_000, "events_view", "../etc"]
    sample = write_lines(tmp_path / "s.ndjson", [batch("b-1", [event(f"e{n}", etype=t) for n, t in enumerate(hostile)])])
    run = run_sample(sample)
    tables = {r[0] for r in run.sql("SELECT table_name FROM information_schema.tables")}
    assert "events_events_view" in tables  # a legal name, quoted as such
    assert not any("DROP" in t or "É" in t or ".." in t for t in tables)
    assert run.result.ledger.invalid == 4 and run.result.ledger.loaded == 1
    assert_balanced(run)


def test_truncated_gzip_keeps_what_was_read(tmp_path, run_sample):
    p = tmp_path / "s.ndjson.gz"
    data = gzip.compress(b"".join(json.dumps(batch(f"b-{n}", [event(f"e{n}")])).encode() + b"\n" for n in range(200)))
    cut = data[: len(data) * 2 // 3]
    p.write_bytes(cut)
    whole_lines = zlib.decompressobj(31).decompress(cut).count(b"\n")  # all that arrived intact
    run = run_sample(p)
    assert run.sql("SELECT reason FROM rejected_events") == [("truncated_input",)]
    assert run.result.ledger.loaded == whole_lines > 0
    assert_balanced(run)


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z"])
def test_implausible_arrival_times_are_quarantined(tmp_path, run_sample, when):
    sample = write_lines(tmp_path / "s.ndjson", [batch("b-odd", [event("e-odd")], received=when), batch("b-ok", [GOOD])])
    run = run_sample(sample)
    assert run.sql("SELECT batch_id, reason FROM rejected_events") == [("b-odd", "bad_received_at")]
    assert_balanced(run)


def test_properties_that_are_not_an_object_are_quarantined(tmp_path, run_sample):
    bad = {"str": "color=red", "num": 3.5, "list": ["a", "b"], "bool": True}
    segment = {"batch": [{"messageId": "seg-traits", "type": "identify", "userId": "u_9", "traits": "vip",
                          "timestamp": "2026-11-20T10:00:00Z", "context": {"os": {"name": "iOS"}}}],
               "sentAt": "2026-11-20T10:00:02Z"}
    sample = write_lines(tmp_path / "s.ndjson", [
        batch("b-1", [GOOD, *(event(f"p-{k}", properties=v) for k, v in bad.items()),
                      event("no-props", properties=None), {k: v for k, v in event("absent").items() if k != "properties"}]),
        segment,
    ])
    run = run_sample(sample)
    rows = run.sql("SELECT event_id, stage, reason, detail FROM rejected_events ORDER BY event_id")
    assert rows == [
        ("p-bool", "validate", "wrong_type", "properties must be a JSON object, got boolean"),
        ("p-list", "validate", "wrong_type", "properties must be a JSON object, got array"),
        ("p-num", "validate", "wrong_type", "properties must be a JSON object, got number"),
        ("p-str", "validate", "wrong_type", "properties must be a JSON object, got string"),
        ("seg-traits", "validate", "wrong_type", "properties must be a JSON object, got string"),
    ]
    assert sorted(r[0] for r in run.sql("SELECT event_id FROM events")) == ["absent", "good-1", "no-props"]
    assert run.result.ledger.invalid == 5 and run.result.ledger.loaded == 3
    assert_balanced(run)
