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


@dataclass
class SessionStitcher:
    gap: timedelta = timedelta(minutes=30)
    state: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=STATE_SCHEMA))

    def stitch(self, events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Add ``session_id``, ``session_event_number``, ``session_is_new``.

        Returns the events and the changed state rows (to persist with the chunk).
        """
        gap_us = int(self.gap.total_seconds() * 1_000_000)
        prev = self.state.rename({"last_ts": "prev_ts", "session_id": "prev_sid", "session_events": "prev_n"})
        # Work on the few columns the rule needs; the wide event rows are never reordered.
        ev = (
            events.select("user_id", "event_ts", "line_no", "event_index").with_row_index("_row")
            .sort("user_id", "event_ts", "line_no", "event_index")
            .join(prev, on="user_id", how="left", maintain_order="left")
        )
        before = pl.col("event_ts").shift(1).over("user_id")
        first_of_user = pl.int_range(pl.len()).over("user_id") == 0
        prev_time = pl.when(first_of_user).then(pl.col("prev_ts")).otherwise(before)
        gap = (pl.col("event_ts") - prev_time).dt.total_microseconds().abs()
        ev = ev.with_columns(session_is_new=prev_time.is_null() | (gap > gap_us))
        ev = ev.with_columns(_seq=pl.col("session_is_new").cast(pl.Int32).cum_sum().over("user_id"))
        continuing = pl.col("_seq") == 0  # still in the session open from earlier chunks
        start_ms = pl.col("event_ts").first().over("user_id", "_seq").dt.epoch("ms")
        ev = ev.with_columns(
            session_id=pl.when(continuing).then(pl.col("prev_sid")).otherwise(pl.format("{}/{}", pl.col("user_id"), start_ms)),
            session_event_number=(
                pl.int_range(1, pl.len() + 1).over("user_id", "_seq")
                + pl.when(continuing).then(pl.col("prev_n")).otherwise(0)
            ).cast(pl.Int64),
        )
        last = ev.group_by("user_id").agg(
            pl.col("event_ts").last().alias("last_ts"),
            pl.col("session_id").last(),
            pl.col("session_event_number").last().alias("session_events"),
            pl.col("prev_ts").first(),
        )
        # A late event older than the user's last one must not move the session state back.
        changed = last.filter(pl.col("prev_ts").is_null() | (pl.col("last_ts") >= pl.col("prev_ts"))).select(list(STATE_SCHEMA))
        self.state = pl.concat([self.state.join(changed, on="user_id", how="anti"), changed])
        cols = ev.sort("_row").select("session_is_new", "session_id", "session_event_number")
        return events.hstack(cols), changed
