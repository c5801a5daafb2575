"""Opening a warehouse for reading, with a clear answer when a replay is writing it."""

from __future__ import annotations

from pathlib import Path

import duckdb

from dqkit.errors import InputError, WarehouseBusyError, WarehouseError


def connect_read_only(warehouse: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to ``warehouse``; DuckDB lets one process write a file at a time."""
    path = Path(warehouse)
    if not path.is_file():
        raise InputError(f"warehouse {str(path)!r} does not exist; pass the DuckDB file a replay wrote")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusyError(
                f"warehouse {str(path)!r} is busy: a replay is writing it. Retry when it finishes, "
                "or copy the file and open the copy"
            ) from exc
        raise WarehouseError(f"cannot open warehouse {str(path)!r}: {exc}") from exc
    con.execute("SET TimeZone = 'UTC'")
    return con
