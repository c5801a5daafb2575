"""What the ingestion endpoint hands to the queue: one *delivery line* per accepted request.

A delivery line is a batch in a shape :mod:`dqkit.events.readers` understands (a Segment batch
or a native batch), as one line of compact JSON, stamped with the moment the request arrived
(``receivedAt`` / ``received_at``). So the queue's contents are an ordinary dqkit sample: the
embedded log can be replayed with ``dqkit replay`` as it stands.

The line's bytes are the delivery's identity: its key (and so its trace id) is a hash of them.
A record the queue delivers twice is the same line, which the pipeline recognises and skips; a
client's retry is a new request (a new arrival stamp), whose events dedup removes by event id.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from dqkit.pipeline.span_writer import delivery_trace_id

SEGMENT_KINDS = ("track", "identify", "page", "screen", "group", "alias")


class BadRequest(ValueError):
    """A request body that cannot become a delivery (answered with 400 and this reason)."""


@dataclass(frozen=True)
class Delivery:
    """One accepted request, ready for the queue."""

    line: bytes
    """The delivery line (compact JSON, no newline)."""
    key: str
    """Its delivery key: the pipeline's identity for it."""
    record_key: str
    """The queue record's key: the first event's user, else the batch id (keeps a user's
    batches in one partition, in order)."""
    events: int
    """Events in the batch (before validation)."""
    received_ns: int
    """Arrival time, nanoseconds since the epoch."""
    trace_id: str
    """The delivery's trace: the id the pipeline's spans for it will carry."""
    span_id: str
    """The ingestion endpoint's span that received it (the parent of the pipeline's ingest span)."""

    @property
    def traceparent(self) -> str:
        """W3C ``traceparent`` of the receiving span, for the queue record's headers."""
        return traceparent(self.trace_id, self.span_id)


def delivery_key(line: bytes) -> str:
    """A delivery line's key, as the pipeline computes it (dqkit.events.readers: blake2b of the line)."""
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def receive_span_id(key: str) -> str:
    """The span id of the endpoint's send span for delivery ``key``: derived from the key, so a
    queue that keeps only the line (the embedded log) still names the parent of the ingest span."""
    return hashlib.sha256(f"dqkit.receive:{key}".encode()).hexdigest()[:16]


def traceparent(trace_id: str, span_id: str) -> str:
    """The W3C ``traceparent`` header value (version 00, sampled) for a span in a trace."""
    return f"00-{trace_id}-{span_id}-01"


def parse_traceparent(value: str | bytes | None) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of a W3C ``traceparent``, or ``None`` when it is not one."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    parts = text.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    if set(parts[1]) == {"0"} or set(parts[2]) == {"0"}:
        return None
    return parts[1], parts[2]


class ArrivalClock:
    """Arrival stamps from the real clock, strictly increasing (a stamp is never reused, so two
    identical bodies arriving together still make two different delivery lines)."""

    def __init__(self) -> None:
        self._last_us = 0
        self._lock = threading.Lock()

    def now_us(self) -> int:
        """The current time in microseconds since the epoch, at least 1 µs after the last stamp handed out."""
        with self._lock:
            self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
            return self._last_us


def iso_us(us: int) -> str:
    """Microseconds since the epoch as an ISO 8601 UTC timestamp with microseconds, as in ``receivedAt``."""
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _no_constants(name: str) -> None:
    raise BadRequest(f"the body is not valid JSON: {name} is not a JSON value")


def loads(body: bytes) -> object:
    """The body as JSON (RFC 8259: no NaN or Infinity), or :class:`BadRequest` saying why not."""
    try:
        return json.loads(body, parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the body is not usable JSON: nested too deeply") from None


def _user_of(event: object) -> str | None:
    if isinstance(event, dict):
        for k in ("userId", "anonymousId", "user_id"):
            v = event.get(k)
            if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
                return str(v)
    return None


def _finish(doc: dict, events: list, received_us: int, fallback_key: str) -> Delivery:
    line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    key = delivery_key(line)
    span_id = receive_span_id(key)
    return Delivery(
        line=line, key=key, record_key=_user_of(events[0]) if events and _user_of(events[0]) else fallback_key,
        events=len(events), received_ns=received_us * 1000, trace_id=delivery_trace_id(key), span_id=span_id,
    )


def segment_batch(body: object, received_us: int) -> Delivery:
    """``POST /v1/batch``: ``{"batch": [...], "sentAt": ...}`` as Segment's SDKs send it.

    The write key, if sent in the body (analytics.js does), is dropped: it is a credential."""
    if not isinstance(body, dict):
        raise BadRequest("a Segment batch must be a JSON object with a \"batch\" array")
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise BadRequest("a Segment batch must have a \"batch\" array of messages")
    doc = {k: v for k, v in body.items() if k not in ("writeKey", "receivedAt")}
    doc["receivedAt"] = iso_us(received_us)
    return _finish(doc, batch, received_us, f"seg-{received_us}")


def segment_message(kind: str, body: object, received_us: int) -> Delivery:
    """``POST /v1/track`` (identify, page, screen, ...): one message, its type from the path."""
    if not isinstance(body, dict):
        raise BadRequest(f"a Segment {kind} call must be a JSON object")
    msg = {k: v for k, v in body.items() if k != "writeKey"}
    msg.setdefault("type", kind)
    doc = {"batch": [msg], "sentAt": body.get("sentAt"), "receivedAt": iso_us(received_us)}
    if doc["sentAt"] is None:
        del doc["sentAt"]
    return _finish(doc, [msg], received_us, f"seg-{received_us}")


def native_batch(body: object, received_us: int) -> Delivery:
    """``POST /batch``: dqkit's native client batch (``batch_id``, ``client``, ``events``)."""
    if not isinstance(body, dict):
        raise BadRequest("a native batch must be a JSON object with an \"events\" array")
    events = body.get("events")
    if not isinstance(events, list):
        raise BadRequest("a native batch must have an \"events\" array")
    doc = dict(body)
    doc["received_at"] = iso_us(received_us)
    bid = body.get("batch_id")
    return _finish(doc, events, received_us, str(bid) if isinstance(bid, (str, int)) else f"batch-{received_us}")
