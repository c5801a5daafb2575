"""Load OTLP/JSON span exports into DuckDB tables (and Polars frames on request).

Reads what the OTLP specification lets writers produce, not only dqkit's own files:

* one ``ExportTraceServiceRequest`` per line (the Collector's file exporter), or whole
  pretty-printed requests, several files at once;
* trace and span ids as hex in any case, or as base64 (protobuf's generic JSON mapping);
  empty or all-zero ids become NULL;
* int64 fields as strings or as bare numbers (exact beyond 2^53);
* enums as integers or names (``SPAN_KIND_SERVER``, ``STATUS_CODE_ERROR``);
* unknown fields are ignored; attribute values of every type are kept as text.

Tables: ``spans`` (ids, name, kind, start/end ns as BIGINT, status, ``attrs`` MAP(VARCHAR,
VARCHAR), ``resource_id``), ``span_events``, ``span_links`` and ``span_resources``. Spans seen
twice (the same trace and span id, e.g. a file exported again) are kept once. All the work
happens in DuckDB, so millions of spans never become Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
import json
import shutil
import tempfile
import weakref
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from dqkit.errors import DqkitError, InputError

_MACROS = """
CREATE OR REPLACE MACRO otlp_id(x, nbytes) AS (
    CASE WHEN x IS NULL OR x = '' THEN NULL
         WHEN length(x) = 2 * nbytes AND regexp_full_match(x, '[0-9A-Fa-f]+') THEN nullif(lower(x), repeat('0', 2 * nbytes))
         ELSE nullif(lower(hex(try(from_base64(x)))), repeat('0', 2 * nbytes)) END);
CREATE OR REPLACE MACRO otlp_kind(x) AS (
    CASE WHEN x IS NULL THEN 0
         WHEN regexp_full_match(x, '[0-9]+') THEN x::INTEGER
         ELSE CASE upper(x) WHEN 'SPAN_KIND_INTERNAL' THEN 1 WHEN 'SPAN_KIND_SERVER' THEN 2 WHEN 'SPAN_KIND_CLIENT' THEN 3
                            WHEN 'SPAN_KIND_PRODUCER' THEN 4 WHEN 'SPAN_KIND_CONSUMER' THEN 5 ELSE 0 END END);
CREATE OR REPLACE MACRO otlp_status(x) AS (
    CASE WHEN x IS NULL THEN 0
         WHEN regexp_full_match(x, '[0-9]+') THEN x::INTEGER
         ELSE CASE upper(x) WHEN 'STATUS_CODE_OK' THEN 1 WHEN 'STATUS_CODE_ERROR' THEN 2 ELSE 0 END END);
CREATE OR REPLACE MACRO otlp_attrs(list_json) AS (
    map_from_entries(list_transform(
        list_filter(coalesce(list_json, []), lambda a: json_extract_string(a, '$.key') IS NOT NULL),
        lambda a: struct_pack(
            k := json_extract_string(a, '$.key'),
            v := coalesce(
                json_extract_string(a, '$.value.stringValue'), json_extract_string(a, '$.value.intValue'),
                json_extract_string(a, '$.value.boolValue'), json_extract_string(a, '$.value.doubleValue'),
                json_extract_string(a, '$.value.bytesValue'),
                json_extract(a, '$.value.arrayValue')::VARCHAR, json_extract(a, '$.value.kvlistValue')::VARCHAR)))));
"""


MAX_REQUEST_BYTES = 64 * 1024 * 1024  # largest single export request (one JSON document); the reader buffers a few of these


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

    def frame(self, table: str) -> pl.DataFrame:
        return self.con.sql(f"SELECT * FROM {table}").pl()

    @property
    def spans(self) -> pl.DataFrame:
        """One row per span; ``attrs`` as a list of key/value structs."""
        return self.frame("spans")

    @property
    def events(self) -> pl.DataFrame:
        return self.frame("span_events")

    @property
    def links(self) -> pl.DataFrame:
        return self.frame("span_links")

    @property
    def resources(self) -> pl.DataFrame:
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


def _document_batches(path: Path, con: duckdb.DuckDBPyConnection) -> Iterator[pa.Table]:
    """Export requests of ``path`` as Arrow tables of at most ~``MAX_REQUEST_BYTES`` of JSON.

    JSON-lines files (the Collector's file exporter) are batched line by line, so memory stays
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
            whole = con.sql(f"SELECT json::VARCHAR AS json FROM read_json_objects({quoted}, format = 'auto', "
                            f"maximum_object_size = {MAX_REQUEST_BYTES})").to_arrow_table()
        except duckdb.Error as exc:
            raise InputError(f"span export {str(path)!r} is not OTLP/JSON: {str(exc).splitlines()[0]}") from exc
        yield whole
        return
    batch: list[str] = []
    size = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            batch.append(line.decode("utf-8", errors="replace"))
            size += len(line)
            if size >= MAX_REQUEST_BYTES:
                yield pa.table({"json": batch})
                batch, size = [], 0
    if batch:
        yield pa.table({"json": batch})


def _take_apart(con: duckdb.DuckDBPyConnection, first_doc: int) -> None:
    """Append the spans and resources of the requests in ``_docs`` to ``_raw``/``span_resources``."""
    # The usual request has one resource and one scope: read its resource attributes and its
    # spans with one path each. Others are taken apart level by level.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _doc AS
        SELECT {first_doc} + row_number() OVER () AS doc_id, json,
               json_array_length(json, '$.resourceSpans') AS n_rs,
               json_array_length(json, '$.resourceSpans[0].scopeSpans') AS n_ss
        FROM _docs
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _parts AS
        SELECT doc_id * 1000000 AS resource_id,
               json_extract(json, '$.resourceSpans[0].resource.attributes[*]') AS res_attrs,
               json_extract_string(json, '$.resourceSpans[0].scopeSpans[0].scope.name') AS scope_name,
               json_extract(json, '$.resourceSpans[0].scopeSpans[0].spans[*]') AS spans
        FROM _doc WHERE n_rs = 1 AND n_ss <= 1
    """)
    con.execute("""
        INSERT INTO _parts
        SELECT resource_id, res_attrs, json_extract_string(ss, '$.scope.name'), json_extract(ss, '$.spans[*]')
        FROM (SELECT resource_id, res_attrs, unnest(scopes) AS ss FROM (
            SELECT doc_id * 1000000 + i AS resource_id, json_extract(rs, '$.resource.attributes[*]') AS res_attrs,
                   json_extract(rs, '$.scopeSpans[*]') AS scopes
            FROM (SELECT doc_id, unnest(l) AS rs, generate_subscripts(l, 1) AS i
                  FROM (SELECT doc_id, json_extract(json, '$.resourceSpans[*]') AS l FROM _doc WHERE NOT (n_rs = 1 AND n_ss <= 1)))))
    """)
    con.execute("INSERT INTO span_resources SELECT resource_id, any_value(otlp_attrs(res_attrs)) FROM _parts GROUP BY resource_id")
    con.execute("INSERT INTO _raw SELECT resource_id, scope_name, unnest(spans) FROM _parts")
    con.execute("DROP TABLE _parts")
    con.execute("DROP TABLE _doc")


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
        # A scratch database on disk: its tables can leave memory, so the limit holds.
        scratch = tempfile.mkdtemp(prefix="dqkit-spans-")
        con = duckdb.connect(str(Path(scratch) / "spans.duckdb"), config={
            "memory_limit": memory_limit, "preserve_insertion_order": False, "temp_directory": scratch})
        weakref.finalize(con, shutil.rmtree, scratch, True)
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error:
        pass  # inside Jupyter DuckDB may refuse to touch its progress bar; it is only cosmetic
    con.execute(_MACROS)
    con.execute("CREATE OR REPLACE TABLE _raw (resource_id BIGINT, scope_name VARCHAR, span JSON)")
    con.execute("CREATE OR REPLACE TABLE span_resources (resource_id BIGINT, attrs MAP(VARCHAR, VARCHAR))")
    next_doc = 0
    for f in files:
        for docs in _document_batches(f, con):
            con.register("_docs", docs)
            try:
                _take_apart(con, next_doc)
            except duckdb.OutOfMemoryException as exc:
                raise DqkitError(f"not enough memory to load the spans (limit {memory_limit}); pass a larger memory_limit") from exc
            except duckdb.Error as exc:
                raise InputError(f"{f}: not OTLP/JSON: {str(exc).splitlines()[0]}") from exc
            finally:
                con.unregister("_docs")
            next_doc += docs.num_rows
    unusable = con.sql(
        "SELECT count(*) FROM _raw WHERE otlp_id(json_extract_string(span, '$.traceId'), 16) IS NULL "
        "OR otlp_id(json_extract_string(span, '$.spanId'), 8) IS NULL").fetchall()[0][0]
    # A span exported twice (same trace and span id) is kept once; GROUP BY can spill to disk.
    con.execute("""
        CREATE OR REPLACE TABLE spans AS
        SELECT trace_id, span_id, any_value(parent_span_id) AS parent_span_id, any_value(name) AS name,
               any_value(kind) AS kind, any_value(start_ns) AS start_ns, any_value(end_ns) AS end_ns,
               any_value(status_code) AS status_code, any_value(status_message) AS status_message,
               any_value(attrs) AS attrs, any_value(scope_name) AS scope_name, any_value(resource_id) AS resource_id,
               any_value(events) AS events, any_value(links) AS links
        FROM (
            SELECT otlp_id(q[1], 16) AS trace_id, otlp_id(q[2], 8) AS span_id, otlp_id(q[3], 8) AS parent_span_id,
                   q[4] AS name, otlp_kind(q[5]) AS kind,
                   try_cast(q[6] AS BIGINT) AS start_ns, try_cast(q[7] AS BIGINT) AS end_ns, otlp_status(q[8]) AS status_code,
                   q[9] AS status_message,
                   otlp_attrs(json_extract(span, '$.attributes[*]')) AS attrs,
                   scope_name, resource_id,
                   json_extract(span, '$.events[*]') AS events, json_extract(span, '$.links[*]') AS links
            FROM (SELECT *, json_extract_string(span, ['$.traceId', '$.spanId', '$.parentSpanId', '$.name', '$.kind',
                          '$.startTimeUnixNano', '$.endTimeUnixNano', '$.status.code', '$.status.message']) AS q
                  FROM _raw))
        WHERE trace_id IS NOT NULL AND span_id IS NOT NULL
        GROUP BY trace_id, span_id
    """)
    con.execute("DROP TABLE _raw")
    con.execute("""
        CREATE OR REPLACE TABLE span_events AS
        SELECT trace_id, span_id, name AS span_name, json_extract_string(e, '$.name') AS name,
               try_cast(json_extract_string(e, '$.timeUnixNano') AS BIGINT) AS time_ns,
               otlp_attrs(json_extract(e, '$.attributes[*]')) AS attrs
        FROM (SELECT trace_id, span_id, name, unnest(events) AS e FROM spans WHERE len(events) > 0)
    """)
    con.execute("""
        CREATE OR REPLACE TABLE span_links AS
        SELECT trace_id, span_id, name,
               otlp_id(json_extract_string(l, '$.traceId'), 16) AS link_trace_id,
               otlp_id(json_extract_string(l, '$.spanId'), 8) AS link_span_id,
               otlp_attrs(json_extract(l, '$.attributes[*]')) AS attrs
        FROM (SELECT trace_id, span_id, name, unnest(links) AS l FROM spans WHERE len(links) > 0)
    """)
    con.execute("ALTER TABLE spans DROP COLUMN events")
    con.execute("ALTER TABLE spans DROP COLUMN links")
    return SpanData(con, unusable)
