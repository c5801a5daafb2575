from datetime import UTC, datetime, timedelta

import polars as pl

from dqkit.pipeline.sessions import SessionStitcher

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _events(rows):
    """rows: (user, minutes after T0); line numbers follow the order given."""
    return pl.DataFrame({
        "user_id": [u for u, _ in rows],
        "event_ts": [T0 + timedelta(minutes=m) for _, m in rows],
        "line_no": list(range(1, len(rows) + 1)),
        "event_index": [0] * len(rows),
    }, schema_overrides={"event_ts": pl.Datetime("us", "UTC"), "event_index": pl.Int32})


def _sid(user, minutes):
    return f"{user}/{int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)}"


def test_sessions_split_on_a_30_minute_gap_and_rows_keep_their_order():
    st = SessionStitcher()
    # given out of order: b first, a's events shuffled
    r = st.stitch(_events([("b", 5), ("a", 40), ("a", 0), ("a", 10), ("a", 75), ("b", 6)]))
    out, changed = r.events, r.changes
    assert out["session_id"].to_list() == [_sid("b", 5), _sid("a", 0), _sid("a", 0), _sid("a", 0), _sid("a", 75), _sid("b", 5)]
    assert out["session_event_number"].to_list() == [1, 3, 1, 2, 1, 2]
    assert out["session_is_new"].to_list() == [True, False, True, False, True, False]
    assert sorted(changed.select("user_id", "session_id", "session_events").rows()) == [
        ("a", _sid("a", 75), 1), ("b", _sid("b", 5), 2)]


def test_a_session_continues_into_the_next_chunk_and_late_events_do_not_move_state_back():
    st = SessionStitcher()
    st.stitch(_events([("a", 0), ("a", 20), ("c", 0)]))
    r = st.stitch(_events([("a", 45), ("a", 50), ("c", 100), ("c", 101)]))
    out, changed = r.events, r.changes
    # a: 25 minutes after its last event, so the open session goes on, numbering included
    assert out["session_id"].to_list() == [_sid("a", 0), _sid("a", 0), _sid("c", 100), _sid("c", 100)]
    assert out["session_event_number"].to_list() == [3, 4, 1, 2]
    assert out["session_is_new"].to_list() == [False, False, True, False]
    # a late event for c, older than c's last: it gets a session, the state stays at c's latest
    r = st.stitch(_events([("c", 30)]))
    out, changed = r.events, r.changes
    assert out["session_is_new"].to_list() == [True]
    assert changed.is_empty()
    state = dict(zip(st.state["user_id"], st.state["session_id"]))
    assert state == {"a": _sid("a", 0), "c": _sid("c", 100)}
