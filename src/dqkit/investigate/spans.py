"""Load OTLP/JSON span exports (one export request per line) into DuckDB tables.

Tables: ``spans`` (ids lower-cased hex, times as HUGEINT nanoseconds, attributes as a
``MAP(VARCHAR, VARCHAR)``) and ``span_links``. The work happens in DuckDB's JSON reader, so a
large export is never turned into Python objects span by span.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from dqkit.errors import InputError

_ATTRS = """map_from_entries(list_transform(coalesce(json_extract({src}, '$.attributes[*]'), []), lambda a: struct_pack(
    k := json_extract_string(a, '$.key'),
    v := coalesce(json_extract_string(a, '$.value.stringValue'), json_extract_string(a, '$.value.intValue'),
                  json_extract_string(a, '$.value.boolValue'), json_extract_string(a, '$.value.doubleValue')))))"""


def load_spans(paths: str | Path | Sequence[str | Path], con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """Read span files into ``spans`` and ``span_links`` tables of ``con`` (a new in-memory
    connection by default) and return it."""
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    files = [f / "traces.jsonl" if f.is_dir() else f for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"span export(s) not found: {missing}; pass traces.jsonl files or the telemetry folder")
    con = con or duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    listing = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _raw_spans AS
        SELECT unnest(json_extract(json, '$.resourceSpans[*].scopeSpans[*].spans[*]')) AS span
        FROM read_ndjson_objects({listing}, maximum_object_size = 1073741824)
    """)
    con.execute(f"""
        CREATE OR REPLACE TABLE spans AS
        SELECT DISTINCT ON (trace_id, span_id) * FROM (
            SELECT lower(json_extract_string(span, '$.traceId')) AS trace_id,
                   lower(json_extract_string(span, '$.spanId')) AS span_id,
                   nullif(lower(json_extract_string(span, '$.parentSpanId')), '') AS parent_span_id,
                   json_extract_string(span, '$.name') AS name,
                   json_extract_string(span, '$.kind') AS kind,
                   json_extract_string(span, '$.startTimeUnixNano')::HUGEINT AS start_ns,
                   json_extract_string(span, '$.endTimeUnixNano')::HUGEINT AS end_ns,
                   coalesce(json_extract_string(span, '$.status.code'), '0') AS status_code,
                   {_ATTRS.format(src='span')} AS attrs,
                   span
            FROM _raw_spans)
    """)
    con.execute(f"""
        CREATE OR REPLACE TABLE span_links AS
        SELECT trace_id, span_id, name,
               lower(json_extract_string(link, '$.traceId')) AS link_trace_id,
               lower(json_extract_string(link, '$.spanId')) AS link_span_id,
               {_ATTRS.format(src='link')} AS attrs
        FROM (SELECT trace_id, span_id, name, unnest(json_extract(span, '$.links[*]')) AS link FROM spans)
    """)
    con.execute("DROP TABLE _raw_spans")
    return con
