"""Property-based: arbitrary mixes of valid, malformed and hostile batches never crash the
replay, every batch balances from spans and from the warehouse, and every rejected event keeps
its reason and raw payload. The default run tries a few dozen samples; ``-m slow`` many more."""

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqkit.errors import InputError
from dqkit.pipeline.run import ReplayConfig, replay
from tests.conftest import Run, assert_balanced

TS = st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20T10:00:00.123+02:00", "garbage", "0001-01-01T00:00:00Z",
                      "9999-12-31T23:59:59Z", "", "2026-02-30T10:00:00Z", "1795168800"])
TYPES = st.one_of(st.sampled_from(["view", "tap", "like", "x; DROP TABLE events --", "Événement", "VIEW", "a" * 60, ""]),
                  st.text(max_size=12))
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                       max_leaves=10)


@st.composite
def an_event(draw):
    e = {"event_id": draw(st.one_of(st.sampled_from(["e1", "e2", "e3", "e4"]), st.text(max_size=6), st.integers())),
         "event_type": draw(TYPES), "user_id": draw(st.one_of(st.sampled_from(["u1", "u2"]), st.integers(), st.none())),
         "timestamp": draw(TS), "client_ip": draw(st.sampled_from(["8.8.8.8", "::1", "nope", "2a00:1450::1"])),
         "properties": draw(JSONISH)}
    for k in draw(st.lists(st.sampled_from(list(e)), max_size=2)):
        e.pop(k, None)
    return e


@st.composite
def a_line(draw):
    kind = draw(st.sampled_from(["batch", "batch", "batch", "segment", "garbage", "bytes", "empty"]))
    if kind == "garbage":
        return draw(st.text(max_size=30)).replace("\n", " ").encode()
    if kind == "bytes":
        return draw(st.binary(max_size=30)).replace(b"\n", b" ")
    if kind == "empty":
        return json.dumps({"batch_id": "b-empty", "received_at": "2026-11-20T10:00:05Z", "events": []}).encode()
    events = draw(st.lists(st.one_of(an_event(), JSONISH), max_size=5))
    if kind == "segment":
        msgs = [{"type": draw(st.sampled_from(["track", "page", "weird"])), "event": "Order Done",
                 "messageId": str(i), "userId": "u1", "timestamp": "2026-11-20T10:00:00Z"} for i in range(len(events))]
        return json.dumps({"batch": msgs, "sentAt": "2026-11-20T10:00:01Z"}).encode()
    b = {"batch_id": draw(st.sampled_from(["b-1", "b-2", "b-3"])), "received_at": draw(TS),
         "client": draw(st.one_of(st.none(), st.just({"platform": "ios", "app_version": "1", "sdk_version": "2"}))),
         "events": events}
    if b["client"] is None:
        del b["client"]
    return json.dumps(b).encode()


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _check(lines: list[bytes], chunk_lines: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.ndjson"
        p.write_bytes(b"\n".join(lines) + b"\n")
        try:
            res = replay(p, Path(d) / "wh.duckdb", Path(d) / "tel", config=ReplayConfig(chunk_lines=chunk_lines))
        except InputError as exc:
            # Refused as a whole only when no line is a JSON object (none starts like one, or the
            # file opens like a pretty-printed document); then nothing is written.
            assert "cannot be replayed" in str(exc)
            assert not any(_is_object(ln) for ln in lines), lines
            assert not (Path(d) / "wh.duckdb").exists()
            return
        run = Run(res, Path(d) / "wh.duckdb", Path(d) / "tel")
        if res.ledger.received:
            assert_balanced(run)
        bad = run.sql("SELECT count(*) FROM rejected_events WHERE reason IS NULL OR raw IS NULL OR stage IS NULL")
        assert bad == [(0,)]


FAST = settings(max_examples=int(os.environ.get("DQKIT_HYPOTHESIS_EXAMPLES", "12")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(st.lists(a_line(), min_size=1, max_size=8), st.integers(1, 4))
def test_any_mix_of_input_balances(lines, chunk_lines):
    _check(lines, chunk_lines)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(a_line(), min_size=1, max_size=20), st.integers(1, 6))
def test_any_mix_of_input_balances_many(lines, chunk_lines):
    _check(lines, chunk_lines)
