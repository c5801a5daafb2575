"""A written sample read back as one row per event (with its batch's header), straight from the NDJSON."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import polars as pl


def read_events(path: Path) -> pl.DataFrame:
    """``line`` (0-based, file order), ``batch_id``, ``received_at``, the client's ``platform``,
    ``app_version`` and ``sdk_version``, and each event's fields (``properties`` as JSON text)."""
    with gzip.open(path, "rb") as f:
        df = pl.read_ndjson(io.BytesIO(f.read()), infer_schema_length=None)
    df = df.with_row_index("line").with_columns(pl.col("events").list.eval(pl.element().struct.with_fields(
        properties=pl.element().struct.field("properties").struct.json_encode())))
    return df.explode("events").unnest("client").with_columns(pl.col("events").struct.unnest()).drop("events")


def day(col: str = "timestamp") -> pl.Expr:
    return pl.col(col).str.slice(0, 10)
