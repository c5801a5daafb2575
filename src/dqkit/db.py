"""Opening DuckDB warehouse files, with one clear answer when another process holds the file."""

from __future__ import annotations

from pathlib import Path

import duckdb

from dqkit.errors import InputError, WarehouseBusyError, WarehouseError


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection in UTC; DuckDB lets one process write a file at a time, so a held lock
    becomes :class:`WarehouseBusyError` with what to do about it."""
    p = Path(path)
    try:
        con = duckdb.connect(str(p), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusyError(
                f"warehouse {str(p)!r} is busy: another process (a replay) is writing it. Retry when it finishes, "
                "or copy the file and open the copy"
            ) from exc
        raise WarehouseError(f"cannot open warehouse {str(p)!r}: {exc}") from exc
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute("SET enable_progress_bar = false")  # a checkpoint would draw one over the CLI's own
    except duckdb.Error:
        pass  # inside Jupyter DuckDB may refuse to touch its progress bar
    return con


def connect_read_only(path: str | Path) -> duckdb.DuckDBPyConnection:
    """An existing warehouse, opened for reading."""
    if not Path(path).is_file():
        raise InputError(f"warehouse {str(path)!r} does not exist; pass the DuckDB file a replay wrote")
    return connect(path, read_only=True)
