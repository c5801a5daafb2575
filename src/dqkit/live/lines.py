"""Queue records to the pipeline's raw frames, with the readers' own line parser.

A record is one delivery line (see :mod:`dqkit.live.envelope`). The lines of a poll are parsed
together, exactly as the lines of a sample file are, and each delivery keeps the span that
received it (from the record's ``traceparent``), so the pipeline's ingest span continues the
trace the ingestion endpoint started.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from dqkit.events import readers
from dqkit.live.envelope import delivery_key, parse_traceparent, receive_span_id
from dqkit.pipeline.span_writer import delivery_trace_id


@dataclass(frozen=True)
class Record:
    """One queue record as a consumer received it."""

    value: bytes
    """The delivery line."""
    partition: int
    offset: int
    """Position in its partition (the embedded log: the byte offset of the line)."""
    traceparent: str | None = None
    """The ``traceparent`` header, when the record has one."""
    end: int = 0
    """The embedded log: the byte offset after the line (where a consumer resumes)."""


class LineParser:
    """Parses records into :class:`dqkit.events.readers.RawChunk` s (one DuckDB query per poll)."""

    def __init__(self) -> None:
        self._parser = readers.Parser()

    def parse(self, records: list[Record], derive_context: bool = False) -> readers.RawChunk:
        """The records' deliveries and events. Line numbers are the order of arrival in this poll
        (the order dedup keeps the first copy of an event in). ``derive_context``: records
        without a ``traceparent`` were written by the endpoint (the embedded log), so their
        receiving span is derived from the delivery key."""
        # A record delivered twice in one poll is one delivery (its line, so its key, is the same).
        seen: set[str] = set()
        bodies, keys, kept = [], [], []
        for r in records:
            body = r.value.rstrip(b"\r\n")
            key = delivery_key(body)
            if key not in seen:
                seen.add(key)
                bodies.append(body)
                keys.append(key)
                kept.append(r)
        records = kept
        deliveries, events = self._parser.parse_bodies(bodies, keys)
        # The receiving span, where the record names one in this delivery's own trace (a record
        # from another producer keeps the pipeline's root ingest span).
        parents = []
        for key, rec in zip(keys, records, strict=True):
            ctx = parse_traceparent(rec.traceparent)
            if ctx is None and derive_context:
                ctx = delivery_trace_id(key), receive_span_id(key)
            parents.append(ctx[1] if ctx and ctx[0] == delivery_trace_id(key) else None)
        parent = pl.DataFrame({"delivery_key": keys, "parent_span_id": parents},
                              schema={"delivery_key": pl.String, "parent_span_id": pl.String})
        deliveries = deliveries.join(parent, on="delivery_key", how="left", maintain_order="left")
        return readers.RawChunk(deliveries, events, sum(len(b) for b in bodies))
