"""Load OTLP/JSON span exports into DuckDB tables (and Polars frames on request).

Reads what the OTLP specification lets writers produce, not only dqkit's own files:

* one ``ExportTraceServiceRequest`` per line (the Collector's file exporter), or whole
  pretty-printed requests, several files at once;
* trace and span ids as hex in any case, or as base64 (protobuf's generic JSON mapping);
  empty, all-zero or malformed ids (not 16 or 8 bytes either way) become NULL;
* int64 fields as strings or as bare numbers (exact beyond 2^53);
* enums as integers or names (``SPAN_KIND_SERVER``, ``STATUS_CODE_ERROR``);
* unknown fields are ignored; attribute values of every type are kept as text.

Tables: ``spans`` (ids, name, kind, start/end ns as BIGINT, status, ``attrs`` MAP(VARCHAR,
VARCHAR), ``resource_id``), ``span_events``, ``span_links`` and ``span_resources`` (the
resources that carry spans: a resource with none has nothing to join to). Spans seen
twice (the same trace and span id, e.g. a file exported again) are kept once, as first read.
All the work happens in DuckDB, so millions of spans never become Python objects.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from dqkit.errors import DqkitError, InputError
from dqkit.readahead import ReadAhead

_MACROS = """
-- An id is hex, or base64 (protobuf's generic JSON mapping) that decodes to exactly nbytes; anything
-- else is no id. The base64 branch is guarded by a pattern, not try(): an error caught row by row
-- made a file of malformed ids load five times slower.
CREATE OR REPLACE MACRO otlp_id(x, nbytes) AS (
    CASE WHEN x IS NULL OR x = '' THEN NULL
         WHEN length(x) = 2 * nbytes AND regexp_full_match(x, '[0-9A-Fa-f]+') THEN nullif(lower(x), repeat('0', 2 * nbytes))
         WHEN length(x) = 4 * ((nbytes + 2) // 3) AND regexp_full_match(x, '[A-Za-z0-9+/]+={0,2}') THEN
             CASE WHEN octet_length(from_base64(x)) = nbytes THEN nullif(lower(hex(from_base64(x))), repeat('0', 2 * nbytes)) END
         END);
CREATE OR REPLACE MACRO otlp_kind(x) AS (
    CASE WHEN x IS NULL THEN 0
         WHEN regexp_full_match(x, '[0-9]+') THEN x::INTEGER
         ELSE CASE upper(x) WHEN 'SPAN_KIND_INTERNAL' THEN 1 WHEN 'SPAN_KIND_SERVER' THEN 2 WHEN 'SPAN_KIND_CLIENT' THEN 3
                            WHEN 'SPAN_KIND_PRODUCER' THEN 4 WHEN 'SPAN_KIND_CONSUMER' THEN 5 ELSE 0 END END);
CREATE OR REPLACE MACRO otlp_status(x) AS (
    CASE WHEN x IS NULL THEN 0
         WHEN regexp_full_match(x, '[0-9]+') THEN x::INTEGER
         ELSE CASE upper(x) WHEN 'STATUS_CODE_OK' THEN 1 WHEN 'STATUS_CODE_ERROR' THEN 2 ELSE 0 END END);
CREATE OR REPLACE MACRO otlp_value(a) AS (
    coalesce(a.value.stringValue, a.value.intValue, a.value.boolValue, a.value.doubleValue, a.value.bytesValue,
             a.value.arrayValue::VARCHAR, a.value.kvlistValue::VARCHAR));
"""

# Attribute lists become MAPs. Valid OTLP has unique, non-null keys: map(keys, values) takes them
# as they are (filtering every list first cost ~15% of a load). DuckDB refuses a MAP with a
# repeated or missing key, and then the whole load runs again with the careful form, which drops
# keyless attributes and keeps the first value of a repeated key (as the Collector's pdata
# ``Map.Get`` reads it), so one odd span never makes an export unreadable.
# (Lambda parameters have names no caller uses: a macro's lambdas see the caller's names.)
_ATTRS_FAST = """
CREATE OR REPLACE MACRO otlp_attrs(otlp_list) AS (
    map(list_transform(coalesce(otlp_list, []), lambda otlp_kv: otlp_kv.key),
        list_transform(coalesce(otlp_list, []), lambda otlp_kv: otlp_value(otlp_kv))));
"""
_ATTRS_CAREFUL = """
CREATE OR REPLACE MACRO otlp_attrs(otlp_list) AS (
    map_from_entries(list_filter(
        list_transform(coalesce(otlp_list, []), lambda otlp_kv: {'key': otlp_kv.key, 'value': otlp_value(otlp_kv)}),
        lambda otlp_entry, otlp_pos: otlp_entry.key IS NOT NULL
            AND list_position(list_transform(coalesce(otlp_list, []), lambda otlp_kv: otlp_kv.key), otlp_entry.key) = otlp_pos)));
"""


_MAP_KEYS = "Map keys"  # DuckDB's "Map keys must be unique" / "Map keys can not be NULL"


class _IrregularAttributes(Exception):
    """An attribute list with a repeated or missing key: the load must run again with care."""


# Each request is parsed once, into typed structs, by ``from_json`` with this structure: values
# of any JSON type are read as text (numbers keep every digit, enums may be names or numbers) and
# unknown fields are skipped. A field of the wrong shape becomes NULL rather than an error.
_ATTRS = [{"key": "VARCHAR", "value": {
    **dict.fromkeys(["stringValue", "intValue", "boolValue", "doubleValue", "bytesValue"], "VARCHAR"),
    "arrayValue": "JSON", "kvlistValue": "JSON"}}]
_SPAN = {
    **dict.fromkeys(["traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano"], "VARCHAR"),
    "status": {"code": "VARCHAR", "message": "VARCHAR"},
    "attributes": _ATTRS,
    "events": [{"timeUnixNano": "VARCHAR", "name": "VARCHAR", "attributes": _ATTRS}],
    "links": [{"traceId": "VARCHAR", "spanId": "VARCHAR", "attributes": _ATTRS}],
}
_REQUEST = json.dumps({"resourceSpans": [{"resource": {"attributes": _ATTRS},
                                           "scopeSpans": [{"scope": {"name": "VARCHAR"}, "spans": [_SPAN]}]}]})

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # largest single export request (one JSON document); the reader buffers a few of these


def _struct_type(structure: object) -> str:
    """DuckDB type of a ``from_json`` structure."""
    if isinstance(structure, str):
        return structure
    if isinstance(structure, list):
        return _struct_type(structure[0]) + "[]"
    assert isinstance(structure, dict), structure
    return "STRUCT(" + ", ".join(f'"{k}" {_struct_type(v)}' for k, v in structure.items()) + ")"


def _files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    files: list[Path] = []
    for p in items:
        if p.is_dir():
            found = sorted(f for f in p.glob("traces*") if f.suffix in (".json", ".jsonl"))
            if not found:
                raise InputError(f"no traces*.json or traces*.jsonl files in {str(p)!r}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"span export {str(p)!r} not found; pass OTLP/JSON files or a telemetry folder")
    return files


@dataclass
class SpanData:
    """Loaded spans: DuckDB tables on ``con``, Polars frames on demand."""

    con: duckdb.DuckDBPyConnection
    unusable_spans: int = 0
    """Spans without a valid trace or span id (not joinable to anything; counted, not kept)."""
    files: tuple[Path, ...] = ()
    """The files the spans were read from (metrics exports beside them are found from these)."""

    def frame(self, table: str) -> pl.DataFrame:
        """A span table (``spans``, ``span_events``, ``span_links``, ``span_resources``) as a Polars frame."""
        return self.con.sql(f"SELECT * FROM {table}").pl()

    @property
    def spans(self) -> pl.DataFrame:
        """One row per span; ``attrs`` as a list of key/value structs."""
        return self.frame("spans")

    @property
    def events(self) -> pl.DataFrame:
        """One row per span event."""
        return self.frame("span_events")

    @property
    def links(self) -> pl.DataFrame:
        """One row per span link."""
        return self.frame("span_links")

    @property
    def resources(self) -> pl.DataFrame:
        """The resources that carry spans."""
        return self.frame("span_resources")

    def flat(self, name: str | None = None) -> pl.DataFrame:
        """Spans (optionally of one name) with each attribute as its own text column."""
        where = "" if name is None else " WHERE name = '" + name.replace("'", "''") + "'"
        base = self.con.sql(
            "SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, "
            f"map_keys(attrs) AS k, map_values(attrs) AS v FROM spans{where}"
        ).pl()
        if base.is_empty():
            return base.drop("k", "v")
        keyed = base.with_row_index("_r").explode("k", "v")
        wide = keyed.filter(pl.col("k").is_not_null()).pivot(on="k", index="_r", values="v", aggregate_function="first")
        return base.with_row_index("_r").drop("k", "v").join(wide, on="_r", how="left").drop("_r")


def _document_batches(path: Path) -> Iterator[pa.Table]:
    """Export requests of ``path`` as Arrow tables (``json``, ``doc``: the request's number
    in the table) of at most ~``MAX_REQUEST_BYTES`` of JSON.

    JSON-lines files (the Collector's file exporter) are read block by block, so memory stays
    bounded however large the file; other files (pretty-printed requests) go through DuckDB's
    JSON reader whole.
    """
    with open(path, "rb") as fh:
        first = next((line for line in fh if line.strip()), b"")
    try:
        json.loads(first)
        lines_format = True
    except ValueError:
        lines_format = False
    if not lines_format:
        quoted = "'" + str(path).replace("'", "''") + "'"
        try:
            with duckdb.connect() as reader:  # its own connection: this runs on the read-ahead thread
                whole = reader.sql(f"SELECT json::VARCHAR AS json, (row_number() OVER () - 1)::BIGINT AS doc FROM read_json_objects("
                                   f"{quoted}, format = 'auto', maximum_object_size = {MAX_REQUEST_BYTES})").to_arrow_table()
        except duckdb.Error as exc:
            raise InputError(f"span export {str(path)!r} is not OTLP/JSON: {str(exc).splitlines()[0]}") from exc
        yield whole
        return
    with open(path, "rb") as fh:
        while block := fh.read(MAX_REQUEST_BYTES):
            if len(block) == MAX_REQUEST_BYTES:  # not the end: stop at the last whole request
                cut = block.rfind(b"\n") + 1
                if cut:
                    fh.seek(cut - len(block), os.SEEK_CUR)
                else:  # one request longer than a block
                    block += fh.readline()
                    cut = len(block)
            else:
                cut = len(block)
            yield _lines_table(block, cut)


def _lines_table(buf: bytes, size: int) -> pa.Table:
    """The non-blank lines of ``buf[:size]`` as an Arrow table, in pieces of a few MB.

    The strings are views into ``buf`` (each keeps its newline, which JSON ignores), so a
    block is never copied into Python strings. DuckDB parses each piece on its own thread; a
    dozen large requests in one piece would all fall to one thread.
    """
    ends = []
    pos = buf.find(b"\n", 0, size)
    while pos >= 0:
        ends.append(pos + 1)
        pos = buf.find(b"\n", pos + 1, size)
    if not ends or ends[-1] != size:
        ends.append(size)
    offsets = np.array([0, *ends], np.int64)
    lines = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(buf)])
    lengths = np.diff(offsets)
    short = np.flatnonzero(lengths <= 8)  # only short lines can be blank; look at just those
    blank = np.zeros(len(ends), bool)
    blank[short] = [not buf[offsets[i]:offsets[i + 1]].strip() for i in short]
    if blank.any():
        lines = lines.filter(pa.array(~blank))
    try:
        text = lines.cast(pa.large_string())  # checks UTF-8
    except pa.ArrowInvalid:  # bad bytes become U+FFFD, as a JSON reader would show them
        text = pa.array([b.decode("utf-8", errors="replace") for b in lines.to_pylist()], pa.large_string())
    table = pa.table({"json": text, "doc": pa.array(np.arange(len(text), dtype=np.int64))})
    rows = max(1, len(text) * 4 * 1024 * 1024 // max(size, 1))
    return pa.Table.from_batches(table.to_batches(max_chunksize=rows), schema=table.schema)


_DOCS = pa.schema([("json", pa.large_string()), ("doc", pa.int64())])


def _request_stream(files: list[Path], failure: list[BaseException]) -> pa.RecordBatchReader:
    """Every export request of ``files`` as one Arrow stream, numbered across files.

    Blocks are read ahead on a thread. The stream feeds a single ``INSERT``: DuckDB's threads
    then parse from one block to the next without stopping, where a statement per block left one
    core idle at the end of each (1.09M spans: 6 s instead of 9.7 s). An error while reading is
    kept in ``failure`` so the caller raises it as it was, not as DuckDB's wrapping of it.
    """
    def batches() -> Iterator[pa.RecordBatch]:
        doc = 0
        try:
            with ReadAhead(t for f in files for t in _document_batches(f)) as tables:
                for table in tables:
                    table = table.set_column(1, "doc", pa.array(np.arange(doc, doc + table.num_rows, dtype=np.int64))).cast(_DOCS)
                    doc += table.num_rows
                    yield from table.to_batches()
        except BaseException as exc:
            failure.append(exc)
            raise

    return pa.RecordBatchReader.from_batches(_DOCS, batches())


def _take_apart(con: duckdb.DuckDBPyConnection) -> None:
    """Append the spans of the requests in ``_docs`` to ``_raw``.

    One statement goes from request text to rows: DuckDB parses and unnests the pieces of
    ``_docs`` in parallel, where a materialised table of a few huge requests would unnest on
    one thread (three times slower). Each scope's first span also carries its resource's
    attributes (``resource_attrs``), so resources need no second parse of the text.
    """
    resource_id = "doc * 1000000 + generate_subscripts(r.resourceSpans, 1)"
    con.execute(f"""
        INSERT INTO _raw
        SELECT otlp_id(span.traceId, 16), otlp_id(span.spanId, 8), otlp_id(span.parentSpanId, 8), span.name,
               otlp_kind(span.kind), try_cast(span.startTimeUnixNano AS BIGINT), try_cast(span.endTimeUnixNano AS BIGINT),
               otlp_status(span.status.code), span.status.message, otlp_attrs(span.attributes), scope_name, resource_id,
               span.events, span.links, CASE WHEN span_index = 1 THEN otlp_attrs(resource_attrs) END
        FROM (SELECT resource_id, resource_attrs, ss.scope.name AS scope_name,
                     generate_subscripts(ss.spans, 1) AS span_index, unnest(ss.spans) AS span
              FROM (SELECT resource_id, rs.resource.attributes AS resource_attrs, unnest(rs.scopeSpans) AS ss
                    FROM (SELECT {resource_id} AS resource_id, unnest(r.resourceSpans) AS rs
                          FROM (SELECT doc, from_json(json, '{_REQUEST}') AS r FROM _docs))))
    """)


def _bad_file(con: duckdb.DuckDBPyConnection, files: list[Path]) -> Path | None:
    """The first of ``files`` holding a request that is not JSON (only looked for after a failed load)."""
    for f in files:
        for block in _document_batches(f):
            if con.sql("SELECT bool_or(NOT json_valid(json)) FROM block").fetchall()[0][0]:
                return f
    return None


def load_spans(
    paths: str | Path | Sequence[str | Path],
    con: duckdb.DuckDBPyConnection | None = None,
    memory_limit: str = "2GB",
) -> SpanData:
    """Read OTLP/JSON span exports into ``spans``, ``span_events``, ``span_links`` and
    ``span_resources`` tables of ``con`` (a new in-memory database by default).

    A new database is capped at ``memory_limit`` and spills to a temporary folder beyond it, so
    exports larger than memory load too (slower).
    """
    files = _files(paths)
    scratch = None
    if con is None:
        # In memory, with a spill folder: past the limit DuckDB moves blocks there, so the limit
        # holds (an on-disk scratch file holds it too, but compressing every block costs a third more).
        scratch = tempfile.mkdtemp(prefix="dqkit-spans-")
        con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": False, "temp_directory": scratch})
        weakref.finalize(con, shutil.rmtree, scratch, True)
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error:
        pass  # inside Jupyter DuckDB may refuse to touch its progress bar; it is only cosmetic
    con.execute(_MACROS)
    try:
        unusable = _load(con, files, memory_limit, _ATTRS_FAST)
    except _IrregularAttributes:
        unusable = _load(con, files, memory_limit, _ATTRS_CAREFUL)
    return SpanData(con, unusable, tuple(files))


def _load(con: duckdb.DuckDBPyConnection, files: list[Path], memory_limit: str, attrs_macro: str) -> int:
    """Fill the span tables of ``con`` from ``files``; the number of unusable spans."""
    con.execute(attrs_macro)
    con.execute(f"""
        CREATE OR REPLACE TABLE _raw (
            trace_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR, name VARCHAR, kind INTEGER, start_ns BIGINT,
            end_ns BIGINT, status_code INTEGER, status_message VARCHAR, attrs MAP(VARCHAR, VARCHAR), scope_name VARCHAR,
            resource_id BIGINT, events {_struct_type(_SPAN["events"])}, links {_struct_type(_SPAN["links"])},
            resource_attrs MAP(VARCHAR, VARCHAR))
    """)
    failure: list[BaseException] = []
    con.register("_docs", _request_stream(files, failure))
    try:
        _take_apart(con)
    except duckdb.OutOfMemoryException as exc:
        raise DqkitError(f"not enough memory to load the spans (limit {memory_limit}); pass a larger memory_limit") from exc
    except duckdb.Error as exc:
        if failure:
            raise failure[0] from None
        if _MAP_KEYS in str(exc):
            raise _IrregularAttributes from exc
        bad = _bad_file(con, files) if len(files) > 1 else files[0]
        raise InputError(f"{bad or files[0]}: not OTLP/JSON: {str(exc).splitlines()[0]}") from exc
    finally:
        con.unregister("_docs")
    con.execute("""
        CREATE OR REPLACE TABLE span_resources AS
        SELECT resource_id, any_value(resource_attrs) AS attrs FROM _raw WHERE resource_attrs IS NOT NULL GROUP BY resource_id
    """)
    con.execute("ALTER TABLE _raw DROP COLUMN resource_attrs")
    # Distinct hashes of the ids, half the work of distinct pairs: as many as there are spans
    # proves no span repeats; fewer (a repeat, or very rarely a collision) takes the slower path.
    unusable, usable, distinct = con.sql(
        "SELECT count(*) FILTER (WHERE trace_id IS NULL OR span_id IS NULL), count(*) FILTER (WHERE trace_id IS NOT NULL "
        "AND span_id IS NOT NULL), count(DISTINCT hash(trace_id, span_id)) FILTER (WHERE trace_id IS NOT NULL AND span_id IS NOT NULL) "
        "FROM _raw").fetchall()[0]
    if usable == distinct:  # the usual case: no span was exported twice, so _raw becomes spans as it is
        if unusable:
            con.execute("DELETE FROM _raw WHERE trace_id IS NULL OR span_id IS NULL")
        con.execute("DROP TABLE IF EXISTS spans")
        con.execute("ALTER TABLE _raw RENAME TO spans")
    else:  # a span exported twice (same trace and span id) is kept once: the copy from the earliest request
        con.execute("""
            CREATE OR REPLACE TABLE spans AS
            SELECT * EXCLUDE (_copy)
            FROM (SELECT *, row_number() OVER (PARTITION BY trace_id, span_id ORDER BY resource_id) AS _copy
                  FROM _raw WHERE trace_id IS NOT NULL AND span_id IS NOT NULL)
            WHERE _copy = 1
        """)
        con.execute("DROP TABLE _raw")
    try:
        _unnest_events_and_links(con)
    except duckdb.InvalidInputException as exc:
        if _MAP_KEYS in str(exc):
            raise _IrregularAttributes from exc
        raise
    return unusable


def _unnest_events_and_links(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE OR REPLACE TABLE span_events AS
        SELECT trace_id, span_id, name AS span_name, e.name AS name, try_cast(e.timeUnixNano AS BIGINT) AS time_ns,
               otlp_attrs(e.attributes) AS attrs
        FROM (SELECT trace_id, span_id, name, unnest(events) AS e FROM spans WHERE len(events) > 0)
    """)
    con.execute("""
        CREATE OR REPLACE TABLE span_links AS
        SELECT trace_id, span_id, name,
               otlp_id(l.traceId, 16) AS link_trace_id, otlp_id(l.spanId, 8) AS link_span_id,
               otlp_attrs(l.attributes) AS attrs
        FROM (SELECT trace_id, span_id, name, unnest(links) AS l FROM spans WHERE len(links) > 0)
    """)
    con.execute("ALTER TABLE spans DROP COLUMN events")
    con.execute("ALTER TABLE spans DROP COLUMN links")
