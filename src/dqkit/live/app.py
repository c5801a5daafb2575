"""The HTTP ingestion endpoint (Starlette): Segment's HTTP API and dqkit's native batch.

* ``POST /v1/batch`` and ``/v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen`` (also
  ``/v1/group``, ``/v1/alias``): Segment's tracking API, as its SDKs and RudderStack's send it;
* ``POST /batch``: a native client batch (DESIGN section 3);
* ``GET /health``: ``200 {"status": "ok", ...}``, or 503 while shutting down.

A request is answered 200 only once its delivery line is durably in the queue. Otherwise:
400 with the reason (not JSON, not a batch, corrupt gzip), 401 (write key), 411/413 (size),
415 (an encoding other than gzip), 503 with ``Retry-After`` (queue full, shutting down, or the
queue failed). Events inside an accepted batch are the pipeline's to validate: a bad event is
quarantined, not a 400.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
import zlib
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dqkit.live import envelope
from dqkit.live.envelope import ArrivalClock, BadRequest
from dqkit.live.queues import QueueFull, RecordTooLarge, Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointConfig:
    """Settings of the ingestion endpoint."""

    write_key: str | None = None
    """When set, requests must carry it as HTTP Basic username (Segment's SDKs do) or as
    ``writeKey`` in the body; others get 401."""
    max_body_bytes: int = 1 << 20
    """Largest request body, after gzip decompression (Segment allows 500 KB per batch)."""
    retry_after_s: int = 1
    """``Retry-After`` of a 503 while shutting down."""


@dataclass
class EndpointStats:
    """Requests by outcome (``GET /health`` shows them)."""

    accepted: int = 0
    events: int = 0
    rejected: dict[int, int] = field(default_factory=dict)


class _Reject(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def _key_from_auth(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, _ = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed, refused past ``limit`` bytes before or after decompression."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise _Reject(413, f"the body is {int(length):,} bytes; the limit is {limit:,}")
        except ValueError:
            raise _Reject(400, f"Content-Length {length!r} is not a number") from None
    parts, size = [], 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise _Reject(413, f"the body is over the limit of {limit:,} bytes")
        parts.append(piece)
    body = b"".join(parts)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise _Reject(415, f"Content-Encoding {encoding!r} is not supported; send gzip or an uncompressed body")
    # Decompressed with a cap, so a small gzip bomb cannot fill memory; member by member (a
    # gzip stream may hold several).
    out, data = b"", body
    while True:
        z = zlib.decompressobj(31)
        try:
            out += z.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise _Reject(400, f"the body is not valid gzip: {exc}") from None
        if len(out) > limit:
            raise _Reject(413, f"the body is over the limit of {limit:,} bytes once decompressed")
        if not z.eof:
            raise _Reject(400, "the body is not valid gzip: the compressed data ends early")
        data = z.unused_data
        if not data.strip(b"\x00"):
            return out


def build_app(sink: Sink, config: EndpointConfig | None = None, spans=None) -> Starlette:
    """The ingestion endpoint over ``sink``. ``spans``: a :class:`dqkit.live.trace.RequestSpans`
    (or ``None`` for no server spans). ``app.state.draining = True`` makes it refuse new requests."""
    cfg = config or EndpointConfig()
    clock = ArrivalClock()
    stats = EndpointStats()

    def reject(exc: _Reject) -> JSONResponse:
        stats.rejected[exc.status] = stats.rejected.get(exc.status, 0) + 1
        return JSONResponse({"success": False, "error": exc.reason}, status_code=exc.status, headers=exc.headers)

    def handler(route: str, make):
        async def endpoint(request: Request) -> JSONResponse:
            t_start = time.time_ns()
            received_us = clock.now_us()
            try:
                if request.app.state.draining:
                    raise _Reject(503, "the endpoint is shutting down; retry shortly",
                                  {"Retry-After": str(cfg.retry_after_s)})
                header_key = _key_from_auth(request.headers.get("authorization"))
                if cfg.write_key is not None and header_key is not None and not hmac.compare_digest(header_key, cfg.write_key):
                    raise _Reject(401, "the write key is not valid", {"WWW-Authenticate": 'Basic realm="dqkit"'})
                try:
                    raw = await _read_body(request, cfg.max_body_bytes)
                except ClientDisconnect:
                    raise _Reject(400, "the client closed the connection before the body ended") from None
                try:
                    body = envelope.loads(raw)
                except BadRequest as exc:
                    raise _Reject(400, str(exc)) from None
                if cfg.write_key is not None and header_key is None:
                    body_key = body.get("writeKey") if isinstance(body, dict) else None
                    if not isinstance(body_key, str) or not hmac.compare_digest(body_key, cfg.write_key):
                        raise _Reject(401, "a write key is required: send it as the HTTP Basic username",
                                      {"WWW-Authenticate": 'Basic realm="dqkit"'})
                try:
                    delivery = make(body, received_us)
                except BadRequest as exc:
                    raise _Reject(400, str(exc)) from None
                try:
                    sent = await sink.send(delivery)
                except QueueFull as exc:
                    raise _Reject(503, str(exc), {"Retry-After": str(exc.retry_after_s)}) from None
                except RecordTooLarge as exc:
                    raise _Reject(413, str(exc)) from None
                except OSError as exc:
                    log.error("queue write failed: %s", exc)
                    raise _Reject(503, "the queue could not store the request; retry shortly", {"Retry-After": "5"}) from None
            except _Reject as exc:
                return reject(exc)
            t_sent = time.time_ns()
            stats.accepted += 1
            stats.events += delivery.events
            if spans is not None:
                spans.add(delivery.trace_id, delivery.span_id, route, 200, len(raw), delivery.events, t_start, t_sent,
                          time.time_ns(), sent.partition, sent.offset)
            return JSONResponse({"success": True})

        return endpoint

    def segment(kind: str):
        return lambda body, us: envelope.segment_message(kind, body, us)

    async def health(request: Request) -> JSONResponse:
        doc = {"status": "draining" if request.app.state.draining else "ok", "queue": sink.system, "topic": sink.topic,
               "accepted": stats.accepted, "events": stats.events,
               "rejected": {str(k): v for k, v in sorted(stats.rejected.items())}}
        if hasattr(sink, "backlog_bytes"):
            doc["backlog_bytes"] = sink.backlog_bytes()
        consumers = getattr(request.app.state, "consumers", None)
        if consumers is not None:
            doc["consumer_pids"], doc["consumer_restarts"] = consumers.pids, consumers.restarts
        return JSONResponse(doc, status_code=503 if request.app.state.draining else 200)

    routes = [Route("/v1/batch", handler("/v1/batch", envelope.segment_batch), methods=["POST"]),
              Route("/batch", handler("/batch", envelope.native_batch), methods=["POST"]),
              Route("/health", health, methods=["GET"])]
    routes += [Route(f"/v1/{k}", handler(f"/v1/{k}", segment(k)), methods=["POST"]) for k in envelope.SEGMENT_KINDS]
    app = Starlette(routes=routes)
    app.state.draining = False
    app.state.stats = stats
    return app
