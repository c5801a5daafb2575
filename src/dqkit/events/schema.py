"""The canonical event schema, validation limits and rejection reasons.

Every reader turns its input into the same two frames (see :mod:`dqkit.events.readers`):
one row per delivery (a client batch as it arrived) and one row per event, with each field
still raw (its JSON type and text), so that validation can say exactly what was wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

#: Event types become table names (``events_<type>``), so they must match this exactly.
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
_EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)

#: Segment message types dqkit understands; anything else is quarantined.
SEGMENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")


def is_valid_event_type(name: str) -> bool:
    """Whether ``name`` may become part of a warehouse table name."""
    return bool(_EVENT_TYPE_RE.match(name))


@dataclass(frozen=True)
class ValidationLimits:
    """What a plausible event looks like."""

    max_future_s: float = 24 * 3600
    """An event may be stamped at most this far after its batch was received (clock skew)."""
    max_age_s: float = 30 * 24 * 3600
    """An event may be stamped at most this far before its batch was received (offline clients)."""
    max_properties_bytes: int = 32 * 1024
    """Largest accepted ``properties`` object, as JSON text."""
    allowed_event_types: frozenset[str] | None = None
    """When set, only these event types are accepted (on top of the name pattern)."""


# Rejection reasons (the ``reason`` column of ``rejected_events``).
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
NOT_A_BATCH = "not_a_batch"
EVENT_NOT_OBJECT = "event_not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
ANCIENT_TIMESTAMP = "ancient_timestamp"
BAD_RECEIVED_AT = "bad_received_at"
BAD_EVENT_TYPE = "bad_event_type"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
UNKNOWN_SEGMENT_TYPE = "unknown_segment_type"
OVERSIZED_PROPERTIES = "oversized_properties"
DUPLICATE = "duplicate"
INSERT_FAILED = "insert_failed"

#: Event fields every event must carry as strings.
REQUIRED_STRING_FIELDS = ("event_id", "event_type", "user_id", "timestamp")

#: Columns of the per-event frame that readers produce.
RAW_EVENT_SCHEMA: dict[str, pl.DataType] = {
    "delivery_key": pl.String,
    "batch_id": pl.String,
    "line_no": pl.Int64,
    "event_index": pl.Int32,
    "received_at": pl.Datetime("us", "UTC"),
    "platform": pl.String,
    "app_version": pl.String,
    "sdk_version": pl.String,
    "line_error": pl.String,  # the whole delivery was unreadable
    "event_json_type": pl.String,
    "event_id": pl.String,
    "event_id_type": pl.String,
    "event_type": pl.String,
    "event_type_type": pl.String,
    "user_id": pl.String,
    "user_id_type": pl.String,
    "timestamp": pl.String,
    "timestamp_type": pl.String,
    "event_ts": pl.Datetime("us", "UTC"),
    "client_ip": pl.String,
    "properties": pl.String,
    "segment_type": pl.String,
    "raw": pl.String,
}

#: Columns of the per-delivery frame that readers produce.
DELIVERY_SCHEMA: dict[str, pl.DataType] = {
    "delivery_key": pl.String,
    "batch_id": pl.String,
    "line_no": pl.Int64,
    "received_at": pl.Datetime("us", "UTC"),
    "received_at_raw": pl.String,
    "platform": pl.String,
    "app_version": pl.String,
    "sdk_version": pl.String,
    "format": pl.String,
    "event_count": pl.Int64,
}
