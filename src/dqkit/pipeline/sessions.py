"""Session stitching: a session ends after 30 minutes without an event from the same user.

State (each user's last event time and open session) carries across chunks and runs, so a
session that spans a chunk boundary or two replays keeps one id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import polars as pl

STATE_SCHEMA = {
    "user_id": pl.String,
    "last_ts": pl.Datetime("us", "UTC"),
    "session_id": pl.String,
    "session_events": pl.Int64,
}


@dataclass(frozen=True)
class StitchResult:
    """Events with their sessions, and the session state that changed."""

    events: pl.DataFrame
    """The events with ``session_id``, ``session_event_number`` and ``session_is_new``, in their order."""
    changes: pl.DataFrame
    """Changed state rows (:data:`STATE_SCHEMA`), to persist with the chunk."""


@dataclass
class SessionStitcher:
    """Gives events session ids, carrying each user's open session across chunks and runs."""

    gap: timedelta = timedelta(minutes=30)
    state: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=STATE_SCHEMA))

    def stitch(self, events: pl.DataFrame) -> StitchResult:
        """Add ``session_id``, ``session_event_number``, ``session_is_new`` to ``events``."""
        gap_us = int(self.gap.total_seconds() * 1_000_000)
        prev = self.state.rename({"last_ts": "prev_ts", "session_id": "prev_sid", "session_events": "prev_n"})
        # Work on the few columns the rule needs; the wide event rows are never reordered.
        ev = (
            events.select("user_id", "event_ts", "line_no", "event_index").with_row_index("_row")
            .sort("user_id", "event_ts", "line_no", "event_index")
            .join(prev, on="user_id", how="left", maintain_order="left")
        )
        # Rows are sorted by user, so per-user windows are runs of rows: marks where a user or a
        # session starts, carried forward, stand in for group-bys over the user id text.
        first_of_user = pl.col("user_id").ne_missing(pl.col("user_id").shift(1))
        prev_time = pl.when(first_of_user).then(pl.col("prev_ts")).otherwise(pl.col("event_ts").shift(1))
        gap = (pl.col("event_ts") - prev_time).dt.total_microseconds().abs()
        ev = ev.with_columns(session_is_new=prev_time.is_null() | (gap > gap_us), _first=first_of_user)
        n_new = pl.col("session_is_new").cast(pl.Int64).cum_sum()
        starts = pl.col("_first") | pl.col("session_is_new")
        ev = ev.with_columns(
            # new sessions of this user so far: 0 while the session open from earlier chunks goes on
            _seq=n_new - pl.when("_first").then(n_new - pl.col("session_is_new").cast(pl.Int64)).forward_fill(),
            _start_ms=pl.when(starts).then(pl.col("event_ts")).forward_fill().dt.epoch("ms"),
            _start_row=pl.when(starts).then(pl.int_range(pl.len())).forward_fill(),
        )
        continuing = pl.col("_seq") == 0
        ev = ev.with_columns(
            session_id=pl.when(continuing).then(pl.col("prev_sid")).otherwise(pl.format("{}/{}", pl.col("user_id"), pl.col("_start_ms"))),
            session_event_number=(
                pl.int_range(1, pl.len() + 1) - pl.col("_start_row")
                + pl.when(continuing).then(pl.col("prev_n")).otherwise(0)
            ).cast(pl.Int64),
        )
        last = ev.filter(pl.col("user_id").ne_missing(pl.col("user_id").shift(-1))).select(
            "user_id", "prev_ts", last_ts=pl.col("event_ts"), session_id=pl.col("session_id"),
            session_events=pl.col("session_event_number"),
        )
        # A late event older than the user's last one must not move the session state back.
        changed = last.filter(pl.col("prev_ts").is_null() | (pl.col("last_ts") >= pl.col("prev_ts"))).select(list(STATE_SCHEMA))
        self.state = pl.concat([self.state.join(changed, on="user_id", how="anti"), changed])
        cols = ev.sort("_row").select("session_is_new", "session_id", "session_event_number")
        return StitchResult(events.hstack(cols), changed)
