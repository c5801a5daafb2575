"""Read event samples in bounded chunks into the canonical raw frames.

Three shapes are understood, and may be mixed line by line in one NDJSON file (plain or gzip):

* native client batches: ``{"batch_id", "received_at", "client": {...}, "events": [...]}``;
* Segment batches as SDKs send them: ``{"batch": [...], "sentAt": ...}``;
* flat events, one per line (or one per row of a Parquet file).

Each line is one *delivery*: the unit that arrived, keyed by a hash of its bytes so that a
replay of the same sample is recognised. JSON is taken apart by DuckDB's JSON functions, a
whole chunk at a time; Python only splits lines and hashes them. Nothing is dropped here: an
unreadable line becomes one event row with ``line_error`` set, for validation to quarantine.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from dqkit.errors import InputError
from dqkit.events import schema

DEFAULT_CHUNK_LINES = 10_000
CHUNK_BYTES = 32 * 1024 * 1024  # a chunk also ends after this much input text
_PARQUET_BATCH_ROWS = 100


@dataclass
class RawChunk:
    """One bounded piece of a sample, as read."""

    deliveries: pl.DataFrame
    """One row per delivery (see :data:`dqkit.events.schema.DELIVERY_SCHEMA`)."""
    events: pl.DataFrame
    """One row per event (see :data:`dqkit.events.schema.RAW_EVENT_SCHEMA`)."""
    position: int
    """Bytes of the input consumed so far (for progress)."""


# Each line is parsed once with ``from_json`` against a structure that covers every shape read
# here; leaves are kept as JSON text so that validation still sees each field's JSON type. Events
# are parsed a second time on their own (small) text, which also keeps their raw JSON for
# quarantine rows. Both passes run over the whole chunk, on every core.
_CONTEXT = {"ip": "JSON", "os": {"name": "JSON"}, "app": {"version": "JSON"}, "library": {"version": "JSON"}}
_EVENT_STRUCTURE = json.dumps({
    **dict.fromkeys(["event_id", "event_type", "user_id", "timestamp", "client_ip", "properties"], "JSON"),
    **dict.fromkeys(["messageId", "type", "event", "userId", "anonymousId", "traits", "receivedAt", "sentAt",
                     "originalTimestamp"], "JSON"),
    "context": _CONTEXT,
}, separators=(",", ":"))
_LINE_STRUCTURE = json.dumps({
    **dict.fromkeys(["batch_id", "received_at", "receivedAt", "sentAt"], "JSON"),
    "context": _CONTEXT,  # a Segment batch's own context (the Go SDKs send it there)
    "client": {"platform": "JSON", "app_version": "JSON", "sdk_version": "JSON"},
    "events": ["JSON"], "batch": ["JSON"],
    # a flat event: the line is the event
    **dict.fromkeys(["event_id", "event_type", "platform", "app_version", "sdk_version"], "JSON"),
}, separators=(",", ":"))

# A JSON leaf's string value (NULL when absent or not a string) and its JSON type, from its text.
_MACROS = r"""
CREATE OR REPLACE MACRO jstr(f) AS CASE WHEN starts_with(f, '"') THEN
    CASE WHEN contains(f, '\') THEN json_extract_string(f, '$') ELSE f[2:-2] END END;
CREATE OR REPLACE MACRO jtype(f) AS CASE WHEN f IS NULL THEN NULL WHEN starts_with(f, '"') THEN 'VARCHAR'
    WHEN starts_with(f, '{') THEN 'OBJECT' ELSE json_type(f) END;
"""

_SEG_NAME = "lower(trim(regexp_replace(jstr(q.event), '[^A-Za-z0-9]+', '_', 'g'), '_'))"

_PARSE_SQL = f"""
WITH parts AS MATERIALIZED (
    -- Each line is parsed once (materialized: a filter on the parse would parse it again). A
    -- line that is not JSON fails the parse and is told apart from other unusable lines below.
    SELECT line_no, delivery_key, line, decode_error,
           CASE WHEN decode_error IS NULL AND starts_with(ltrim(line), '{{')
                THEN try(from_json(line, '{_LINE_STRUCTURE}')) END AS p
    FROM lines
),
typed AS (
    SELECT *,
        CASE WHEN p.events IS NOT NULL THEN 'native'
             WHEN p.batch IS NOT NULL THEN 'segment'
             WHEN p.event_id IS NOT NULL OR p.event_type IS NOT NULL THEN 'flat'
        END AS format,
        coalesce(p.events, p.batch) AS evs
    FROM parts
),
firsts AS (
    -- A Segment batch's client is read from its first message.
    SELECT *, CASE WHEN format = 'segment' THEN from_json(evs[1], '{_EVENT_STRUCTURE}') END AS first
    FROM typed WHERE format IS NOT NULL
),
deliveries AS MATERIALIZED (
    SELECT *, try_cast(received_at_raw AS TIMESTAMPTZ) AS received_at FROM (
    SELECT delivery_key, line_no, format, line, evs,
        CASE format
            WHEN 'segment' THEN 'seg-' || left(delivery_key, 16)
            ELSE coalesce(jstr(p.batch_id), 'anon-' || left(delivery_key, 16))
        END AS batch_id,
        CASE format
            -- A batch without receivedAt (a file of what SDKs sent) arrived when it was sent:
            -- the batch's sentAt, else its first message's (the RudderStack Go SDK sends it there).
            WHEN 'segment' THEN coalesce(jstr(p.receivedAt), jstr(first.receivedAt), jstr(p.sentAt), jstr(first.sentAt))
            ELSE jstr(p.received_at)
        END AS received_at_raw,
        -- Segment: a message's own context wins over the batch's, key by key.
        CASE format WHEN 'flat' THEN coalesce(jstr(p.platform), jstr(p.client.platform))
                    WHEN 'segment' THEN lower(coalesce(jstr(first.context.os.name), jstr(p.context.os.name)))
                    ELSE jstr(p.client.platform) END AS platform,
        CASE format WHEN 'flat' THEN coalesce(jstr(p.app_version), jstr(p.client.app_version))
                    WHEN 'segment' THEN coalesce(jstr(first.context.app.version), jstr(p.context.app.version))
                    ELSE jstr(p.client.app_version) END AS app_version,
        CASE format WHEN 'flat' THEN coalesce(jstr(p.sdk_version), jstr(p.client.sdk_version))
                    WHEN 'segment' THEN coalesce(jstr(first.context.library.version), jstr(p.context.library.version))
                    ELSE jstr(p.client.sdk_version) END AS sdk_version,
        CASE WHEN format = 'segment' THEN jstr(p.context.ip) END AS batch_ip,
        CASE WHEN format = 'segment' THEN struct_pack(os := lower(jstr(p.context.os.name)), app := jstr(p.context.app.version),
                                                      lib := jstr(p.context.library.version)) END AS batch_client,
        CASE WHEN format = 'segment' THEN jstr(p.sentAt) END AS batch_sent_at,
        CASE WHEN format = 'segment' THEN jstr(p.receivedAt) END AS batch_received_at,
        CASE WHEN format = 'flat' THEN 1 ELSE len(evs) END AS event_count
    FROM firsts)
),
unreadable AS (
    SELECT delivery_key, line_no, line,
           coalesce(decode_error, CASE WHEN json_valid(line) THEN '{schema.NOT_A_BATCH}' ELSE '{schema.MALFORMED_JSON}' END) AS line_error
    FROM typed WHERE format IS NULL
),
raw_events AS (
    -- The delivery's fields ride along the unnest, so events need no join back to deliveries.
    SELECT delivery_key, batch_id, line_no, received_at_raw, received_at, platform, app_version, sdk_version, format,
           batch_ip, batch_client, batch_sent_at, batch_received_at, ev, event_index, from_json(ev, '{_EVENT_STRUCTURE}') AS q
    FROM (SELECT delivery_key, batch_id, line_no, received_at_raw, received_at, platform, app_version, sdk_version, format,
                 batch_ip, batch_client, batch_sent_at, batch_received_at,
                 coalesce(unnest(evs)::VARCHAR, 'null') AS ev,  -- a JSON null comes back as NULL
                 generate_subscripts(evs, 1) - 1 AS event_index
          FROM deliveries WHERE format <> 'flat')
    UNION ALL
    SELECT delivery_key, batch_id, line_no, received_at_raw, received_at, platform, app_version, sdk_version, format,
           NULL, NULL, NULL, NULL, line, 0, from_json(line, '{_EVENT_STRUCTURE}') FROM deliveries WHERE format = 'flat'
),
segment_times AS (
    -- Segment's rule for a message without `timestamp` (https://segment.com/docs/connections/spec/common/#timestamps):
    -- timestamp = receivedAt - (sentAt - originalTimestamp), which cancels the device clock's skew
    -- (sentAt and originalTimestamp come from the same clock). Without a receivedAt there is
    -- nothing to correct against, so originalTimestamp stands (it was stamped when the call was
    -- made). A `timestamp` the sender set is kept as it is.
    SELECT *,
        CASE WHEN jtype(q.timestamp) IS NULL AND jtype(q.originalTimestamp) = 'VARCHAR' THEN
            try_cast(jstr(q.originalTimestamp) AS TIMESTAMPTZ)
            + coalesce(try_cast(coalesce(jstr(q.receivedAt), batch_received_at) AS TIMESTAMPTZ)
                       - try_cast(coalesce(jstr(q.sentAt), batch_sent_at) AS TIMESTAMPTZ), INTERVAL 0 SECOND)
        END AS ts_corrected
    FROM raw_events WHERE format = 'segment'
),
events AS (
    SELECT delivery_key, batch_id, line_no, received_at_raw, received_at, platform, app_version, sdk_version, format,
        event_index, jtype(ev) AS event_json_type,
        jstr(q.event_id) AS event_id, jtype(q.event_id) AS event_id_type,
        jstr(q.event_type) AS event_type, jtype(q.event_type) AS event_type_type,
        jstr(q.user_id) AS user_id, jtype(q.user_id) AS user_id_type,
        jstr(q.timestamp) AS timestamp, jtype(q.timestamp) AS timestamp_type,
        jstr(q.client_ip) AS client_ip, q.properties::VARCHAR AS properties,
        NULL::VARCHAR AS segment_type, NULL::TIMESTAMPTZ AS ts_corrected,
        NULL::VARCHAR AS ev_platform, NULL::VARCHAR AS ev_app_version, NULL::VARCHAR AS ev_sdk_version,
        ev AS raw
    FROM raw_events WHERE format <> 'segment'
    UNION ALL
    SELECT delivery_key, batch_id, line_no, received_at_raw, received_at, platform, app_version, sdk_version, format,
        event_index, jtype(ev),
        jstr(q.messageId), jtype(q.messageId),
        CASE WHEN jstr(q.type) = 'track'
             THEN CASE WHEN jtype(q.event) = 'VARCHAR' THEN {_SEG_NAME} END
             ELSE jstr(q.type) END,
        CASE WHEN jstr(q.type) = 'track' THEN jtype(q.event) ELSE jtype(q.type) END,
        jstr(coalesce(q.userId, q.anonymousId)), jtype(coalesce(q.userId, q.anonymousId)),
        jstr(coalesce(q.timestamp, q.originalTimestamp)), jtype(coalesce(q.timestamp, q.originalTimestamp)),
        coalesce(jstr(q.context.ip), batch_ip),
        coalesce(q.properties, q.traits)::VARCHAR,
        coalesce(jstr(q.type), 'missing'), ts_corrected,
        coalesce(lower(jstr(q.context.os.name)), batch_client.os), coalesce(jstr(q.context.app.version), batch_client.app),
        coalesce(jstr(q.context.library.version), batch_client.lib),
        ev
    FROM segment_times
)
SELECT 'D' AS part, d.delivery_key, d.batch_id, d.line_no, NULL::INTEGER AS event_index,
       d.received_at_raw, d.received_at, NULL::TIMESTAMPTZ AS event_ts, d.platform, d.app_version, d.sdk_version, d.format, d.event_count,
       NULL::VARCHAR AS line_error, NULL AS event_json_type,
       NULL AS event_id, NULL AS event_id_type, NULL AS event_type, NULL AS event_type_type,
       NULL AS user_id, NULL AS user_id_type, NULL AS timestamp, NULL AS timestamp_type,
       NULL AS client_ip, NULL AS properties, NULL AS segment_type, NULL AS raw
FROM deliveries d
UNION ALL
SELECT 'U', u.delivery_key, 'bad-' || left(u.delivery_key, 16), u.line_no, 0,
       NULL, NULL, NULL, NULL, NULL, NULL, 'unreadable', 1, u.line_error, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, u.line
FROM unreadable u
UNION ALL
SELECT 'E', e.delivery_key, e.batch_id, e.line_no, e.event_index,
       e.received_at_raw, e.received_at,
       CASE WHEN e.timestamp_type = 'VARCHAR' THEN coalesce(e.ts_corrected, try_cast(e.timestamp AS TIMESTAMPTZ)) END,
       coalesce(e.ev_platform, e.platform),
       coalesce(e.ev_app_version, e.app_version), coalesce(e.ev_sdk_version, e.sdk_version), e.format, NULL, NULL, e.event_json_type,
       e.event_id, e.event_id_type, e.event_type, e.event_type_type, e.user_id, e.user_id_type,
       e.timestamp, e.timestamp_type, e.client_ip, e.properties, e.segment_type, e.raw
FROM events e
"""


class Parser:
    """Turns a list of lines into the raw frames with one DuckDB query: the readers below use it
    for a sample's lines, :mod:`dqkit.live.lines` for the lines a queue delivers."""

    def __init__(self) -> None:
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute(_MACROS)

    piece_lines = 5_000
    """Lines per query. Each query costs ~45 ms to plan whatever its size, so fewer, bigger ones
    save CPU, but working memory grows with the piece: a 200k-event read took 2.1 s of CPU with
    2.5k lines, 1.8 s with 5k and 1.6 s with 10k; 10k lines took a 10M-event replay's peak to
    2.02 million kB, 5k lines (with the lines handed over as one Arrow buffer) to 1.89 million."""

    def parse_bodies(self, bodies: list[bytes], keys: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The deliveries and events of ``bodies`` (lines without their newline, numbered from 1
        in order) under delivery ``keys``; bad UTF-8 and NaN/Infinity make unreadable deliveries."""
        texts, errors = _decode(bodies, [None] * len(bodies))
        return self.parse(list(range(1, len(bodies) + 1)), keys, texts, errors)

    def parse(self, line_nos: list[int], keys: list[str], texts: pa.Array | list[str],
              errors: list[str | None]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The deliveries and events of decoded lines ``texts`` (numbered ``line_nos``, keyed
        ``keys``); a line with an entry in ``errors`` becomes an unreadable delivery."""
        lines = pa.table(
            {
                "line_no": pa.array(line_nos, pa.int64()),
                "delivery_key": pa.array(keys, pa.string()),
                "line": texts if isinstance(texts, pa.Array) else pa.array(texts, pa.large_string()),
                "decode_error": pa.array(errors, pa.string()),
            }
        )
        outs = []
        for start in range(0, max(lines.num_rows, 1), self.piece_lines):
            self._con.register("lines", lines.slice(start, self.piece_lines))
            try:
                outs.append(self._con.sql(_PARSE_SQL).pl())
            finally:
                self._con.unregister("lines")
        return _split(pl.concat(outs, rechunk=False) if len(outs) > 1 else outs[0])


# An arrival time outside this range is not a real one (and would overflow the replay clock).
_RECEIVED_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def _split(out: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    lo, hi = _RECEIVED_RANGE
    out = out.with_columns(
        received_at=pl.when(pl.col("received_at").is_between(lo, hi, closed="left")).then(pl.col("received_at")),
    ).with_columns(
        pl.col("platform").fill_null("unknown"),
        pl.col("app_version").fill_null("unknown"),
        pl.col("sdk_version").fill_null("unknown"),
    )
    deliveries = out.filter(pl.col("part") != "E").select(
        [pl.col(c).cast(t) for c, t in schema.DELIVERY_SCHEMA.items()]
    )
    events = out.filter(pl.col("part") != "D").select([pl.col(c).cast(t) for c, t in schema.RAW_EVENT_SCHEMA.items()])
    return deliveries, events


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _strict_json_error(body: bytes) -> str | None:
    """DuckDB's parser accepts NaN and Infinity, which JSON (RFC 8259) does not: lines that
    might hold them (rare) get a strict check here."""
    if b"NaN" not in body and b"Infinity" not in body:
        return None
    try:
        json.loads(body, parse_constant=_reject_constant)
    except ValueError:
        return schema.MALFORMED_JSON
    return None


_READ_BLOCK = 1024 * 1024  # compressed (or plain) bytes read at a time


class _Truncated(Exception):
    """The input stops inside a gzip member, or its compressed data is corrupt."""


def _blocks(raw: io.BufferedReader) -> Iterator[bytes]:
    """The bytes of a plain or gzip (possibly multi-member) stream, block by block.

    Decompression is done here, not by :mod:`gzip`, so that a truncated or corrupt stream
    still yields everything it could decompress before :class:`_Truncated` is raised.
    """
    if raw.peek(2)[:2] != b"\x1f\x8b":
        while block := raw.read(_READ_BLOCK):
            yield block
        return
    member, started = zlib.decompressobj(31), False
    while True:
        data = raw.read(_READ_BLOCK)
        if not data:
            if started:
                raise _Truncated("compressed file ended before the end-of-stream marker was reached")
            return
        while data:
            try:
                out = member.decompress(data)
            except zlib.error as exc:
                raise _Truncated(f"corrupt gzip data: {exc}") from exc
            started = True
            if out:
                yield out
            if not member.eof:
                break
            data = member.unused_data.lstrip(b"\x00")  # another member may follow (zero padding is allowed)
            member, started = zlib.decompressobj(31), False


class _DeliveryKeys:
    """Content keys for lines; the n-th identical copy of a line gets its own key.

    Lines already seen are remembered as the first 64 bits of their digest, in a few sorted
    arrays (8 bytes a line; a dict of digests cost ~90). Only lines that repeat go to a dict,
    which counts their copies. A 64-bit clash would only give a line a copy's key, which is
    still its own."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []
        self._copies: dict[bytes, int] = {}

    def keys(self, bodies: list[bytes]) -> list[str]:
        raws = [hashlib.blake2b(b, digest_size=16).digest() for b in bodies]
        keys = [r.hex() for r in raws]
        if not raws:
            return keys
        h = np.frombuffer(b"".join(raws), dtype=np.uint64)[::2].copy()
        repeat = np.zeros(len(h), bool)
        for run in self._runs:
            at = np.searchsorted(run, h).clip(max=len(run) - 1)
            repeat |= run[at] == h
        order = np.argsort(h, kind="stable")  # later copies within these lines
        repeat[order[1:]] |= h[order[1:]] == h[order[:-1]]
        for i in np.flatnonzero(repeat):
            n = self._copies.get(raws[i], 0) + 1
            self._copies[raws[i]] = n
            keys[i] = hashlib.blake2b(f"{keys[i]}#{n}".encode(), digest_size=16).hexdigest()
        if not repeat.all():
            self._runs.append(np.sort(h[~repeat]))
        while len(self._runs) > 1 and self._runs[-2].size <= 2 * self._runs[-1].size:
            newer, older = self._runs.pop(), self._runs.pop()
            self._runs.append(np.sort(np.concatenate([older, newer])))
        return keys


def iter_ndjson(path: Path, chunk_lines: int = DEFAULT_CHUNK_LINES) -> Iterator[RawChunk]:
    """Read an NDJSON sample (plain or gzip) in chunks of ``chunk_lines`` deliveries.

    Input is split into lines a block at a time; per line, Python only hashes it (its delivery
    key). Decoding and the NaN/Infinity check run over whole blocks, and per line only in the
    rare block that needs it.
    """
    parser = Parser()
    keys = _DeliveryKeys()
    nos: list[int] = []
    bodies: list[bytes] = []
    errors: list[str | None] = []
    size = 0
    line_no = 0
    tail = b""

    def flush(n: int) -> RawChunk:
        nonlocal size
        texts, errs = _decode(bodies[:n], errors[:n])
        d, e = parser.parse(nos[:n], keys.keys(bodies[:n]), texts, errs)
        del nos[:n], bodies[:n], errors[:n]
        size = sum(map(len, bodies))
        return RawChunk(d, e, raw.tell())

    def add(lines: list[bytes]) -> None:
        nonlocal line_no, size
        for i, body in enumerate(lines, start=line_no + 1):
            if body.strip():
                nos.append(i)
                bodies.append(body)
                errors.append(None)
                size += len(body)
        line_no += len(lines)

    with open(path, "rb") as raw:
        try:
            for block in _blocks(raw):
                lines = (tail + block).split(b"\n")
                tail = lines.pop()
                add([b.removesuffix(b"\r") for b in lines])
                while len(nos) >= chunk_lines or size >= CHUNK_BYTES:
                    yield flush(min(len(nos), chunk_lines) if len(nos) >= chunk_lines else _lines_within(bodies, CHUNK_BYTES))
            if tail:
                add([tail.removesuffix(b"\r")])
        except _Truncated as exc:
            # Keep every whole line; the cut one is quarantined with whatever of it arrived.
            line_no += 1
            nos.append(line_no)
            bodies.append(f"<input truncated in line {line_no}: {exc}> ".encode() + tail)
            errors.append("truncated_input")
        while nos:
            yield flush(min(len(nos), chunk_lines))


def _lines_within(bodies: list[bytes], limit: int) -> int:
    """How many leading lines fit in ``limit`` bytes (at least one)."""
    total = 0
    for n, b in enumerate(bodies):
        total += len(b)
        if total >= limit:
            return n + 1
    return len(bodies)


def _decode(bodies: list[bytes], errors: list[str | None]) -> tuple[pa.Array | list[str], list[str | None]]:
    """Lines as text with their read errors: bad UTF-8, or NaN/Infinity (which JSON does not allow).

    Usually every line is good: the lines become one Arrow array over their joined bytes, checked
    as UTF-8 by Arrow, with no Python string per line. Otherwise each line is looked at."""
    joined = b"".join(bodies)
    if b"NaN" not in joined and b"Infinity" not in joined:
        offsets = np.zeros(len(bodies) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, bodies), np.int64, len(bodies)), out=offsets[1:])
        texts = pa.LargeStringArray.from_buffers(len(bodies), pa.py_buffer(offsets), pa.py_buffer(joined))
        try:
            texts.validate(full=True)
            return texts, errors
        except pa.ArrowInvalid:
            pass  # bad UTF-8 somewhere
    out_t: list[str] = []
    out_e: list[str | None] = []
    for body, err in zip(bodies, errors):
        try:
            out_t.append(body.decode("utf-8"))
            out_e.append(err or _strict_json_error(body))
        except UnicodeDecodeError:
            out_t.append(body.decode("utf-8", errors="backslashreplace"))
            out_e.append(err or schema.INVALID_UTF8)
    return out_t, out_e


_PARQUET_TO_LINES = """
SELECT to_json({
    'batch_id': coalesce(batch_id, 'pq-' || (row_block)::VARCHAR),
    'received_at': received_at, 'client': {'platform': platform, 'app_version': app_version, 'sdk_version': sdk_version},
    'events': events}) AS line
FROM (
    SELECT batch_id, row_block, any_value(received_at) AS received_at, any_value(platform) AS platform,
           any_value(app_version) AS app_version, any_value(sdk_version) AS sdk_version,
           list({'event_id': event_id, 'event_type': event_type, 'user_id': user_id, 'timestamp': timestamp,
                 'client_ip': client_ip, 'properties': properties} ORDER BY rn) AS events, min(rn) AS first_row
    FROM rows GROUP BY batch_id, row_block
) ORDER BY first_row
"""

_PARQUET_COLUMNS = ("event_id", "event_type", "user_id", "timestamp", "client_ip", "properties",
                    "batch_id", "received_at", "platform", "app_version", "sdk_version")


def iter_parquet(path: Path, chunk_lines: int = DEFAULT_CHUNK_LINES) -> Iterator[RawChunk]:
    """Read a flat one-event-per-row Parquet file in bounded row groups.

    Rows are regrouped into deliveries by their ``batch_id`` column (or blocks of 100 rows when
    it is absent), so the rest of the pipeline sees ordinary client batches.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    missing = {"event_id", "event_type", "user_id", "timestamp"} - names
    if missing:
        raise InputError(f"{path}: a flat Parquet sample needs columns {sorted(missing)}; it has {sorted(names)}")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    parser = Parser()
    keys = _DeliveryKeys()
    offset = 0
    for batch in pf.iter_batches(batch_size=chunk_lines * _PARQUET_BATCH_ROWS):
        tbl = pa.Table.from_batches([batch])
        cols = {}
        for c in _PARQUET_COLUMNS:
            if c in names:
                col = tbl.column(c)
                cols[c] = col if c == "properties" else col.cast(pa.string())
            else:
                cols[c] = pa.nulls(tbl.num_rows, pa.string())
        rn = np.arange(offset, offset + tbl.num_rows, dtype=np.int64)
        cols["rn"] = pa.array(rn)
        cols["row_block"] = pa.array(rn // _PARQUET_BATCH_ROWS)
        rows = pa.table(cols)  # noqa: F841 - read by name in the SQL
        lines = con.sql(_PARQUET_TO_LINES).fetchall()
        texts = [t for (t,) in lines]
        nos = list(range(offset + 1, offset + 1 + len(texts)))
        d, e = parser.parse(nos, keys.keys([t.encode() for t in texts]), texts, [None] * len(texts))
        offset += tbl.num_rows
        yield RawChunk(d, e, offset)


_SNIFF_BYTES = 64 * 1024
_SNIFF_LINES = 20
_TABULAR_SUFFIXES = {".csv", ".tsv", ".tab", ".xlsx", ".xls"}
_PARQUET_MAGIC = b"PAR1"


def _head(path: Path) -> bytes:
    """The first few kB of ``path``, decompressed when it is gzip (b"" when that fails at once:
    the reader then quarantines the cut data as it would anyway)."""
    with open(path, "rb") as raw:
        out = b""
        try:
            for block in _blocks(raw):
                out += block
                if len(out) >= _SNIFF_BYTES:
                    break
        except _Truncated:
            pass
    return out[:_SNIFF_BYTES]


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _not_ndjson(path: Path) -> str | None:
    """Why ``path`` is clearly not an NDJSON sample, or None when it may be one.

    A sample is refused only when it is of another kind as a whole: a tabular suffix, or none
    of its first lines even starts like a JSON object. A real NDJSON file with stray bad lines
    has good lines among its first ones, and those bad lines are quarantined as usual."""
    suffixes = [x.lower() for x in path.suffixes[-2:]]
    tabular = next((x for x in suffixes if x in _TABULAR_SUFFIXES), None)
    if tabular:
        return f"a {tabular} file is not NDJSON"
    head = _head(path)
    lines = [ln.strip() for ln in head.removeprefix(b"\xef\xbb\xbf").split(b"\n")]
    if len(head) == _SNIFF_BYTES and len(lines) > 1:
        lines.pop()  # cut off by the sniff window
    lines = [ln for ln in lines if ln][:_SNIFF_LINES]
    if lines and lines[0] in (b"{", b"[") and not any(_is_object(ln) for ln in lines):
        # A lone bracket first, and not one whole object among the first lines.
        return "it is one JSON document spread over many lines (pretty-printed), not one JSON object per line"
    if not lines or any(ln.startswith(b"{") for ln in lines):
        return None
    if b"\x00" in head:
        return "it is binary, not NDJSON text"
    for sep, name in ((b",", "CSV"), (b"\t", "TSV"), (b";", "CSV"), (b"|", "pipe-separated text")):
        counts = {ln.count(sep) for ln in lines}
        if len(counts) == 1 and counts != {0}:
            return f"its first lines look like {name}, not NDJSON"
    return "none of its first lines is a JSON object"


def iter_sample(path: str | Path, chunk_lines: int = DEFAULT_CHUNK_LINES) -> Iterator[RawChunk]:
    """Read any supported sample file in bounded chunks.

    Raises:
        InputError: ``path`` is missing, or clearly not a sample (CSV, other text, binary):
            refused before anything is read into the pipeline.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"sample {str(p)!r} does not exist or is not a file; pass an NDJSON(.gz) or Parquet file")
    with open(p, "rb") as f:
        parquet = f.read(4) == _PARQUET_MAGIC
    if p.suffix == ".parquet" or parquet:
        return iter_parquet(p, chunk_lines)
    why = _not_ndjson(p)
    if why:
        raise InputError(f"sample {str(p)!r} cannot be replayed: {why}. Pass NDJSON (plain or .gz) with one batch or "
                         "event as a JSON object per line, or a flat Parquet file")
    return iter_ndjson(p, chunk_lines)


def sample_size(path: str | Path) -> int:
    """Units in which :attr:`RawChunk.position` counts progress for ``path``."""
    p = Path(path)
    with open(p, "rb") as f:
        parquet = f.read(4) == _PARQUET_MAGIC
    if p.suffix == ".parquet" or parquet:
        import pyarrow.parquet as pq

        return pq.ParquetFile(p).metadata.num_rows
    return p.stat().st_size
