"""Opening DuckDB warehouse files, with one clear answer when another process holds the file."""

from __future__ import annotations

from pathlib import Path

import duckdb

from dqkit.errors import InputError, WarehouseBusyError, WarehouseError


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection in UTC; DuckDB lets one process write a file at a time, so a held lock
    becomes :class:`WarehouseBusyError` with what to do about it.

    Raises:
        InputError: ``path`` is a directory.
        WarehouseBusyError: another process holds the file for writing.
        WarehouseError: the file is not a DuckDB database (truncated, or another kind of
            file) or cannot be opened for another reason.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"warehouse {str(p)!r} is a directory; pass the .duckdb file inside it")
    try:
        con = duckdb.connect(str(p), read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise WarehouseBusyError(
                f"warehouse {str(p)!r} is busy: another process (a replay) is writing it. Retry when it finishes, "
                "or copy the file and open the copy"
            ) from exc
        # DuckDB's words for a file cut short and for a file of another kind (including an empty one).
        if "Could not read enough bytes" in text or "not a valid DuckDB database" in text:
            raise WarehouseError(
                f"warehouse {str(p)!r} is not a DuckDB database (truncated or another kind of file); "
                "pass the .duckdb file a pipeline wrote"
            ) from exc
        raise WarehouseError(f"cannot open warehouse {str(p)!r}: {exc}") from exc
    except duckdb.Error as exc:  # e.g. a database written by a newer DuckDB
        raise WarehouseError(f"cannot open warehouse {str(p)!r}: {exc}") from exc
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute("SET enable_progress_bar = false")  # a checkpoint would draw one over the CLI's own
    except duckdb.Error:
        pass  # inside Jupyter DuckDB may refuse to touch its progress bar
    return con


def connect_read_only(path: str | Path) -> duckdb.DuckDBPyConnection:
    """An existing warehouse, opened for reading."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"warehouse {str(path)!r} does not exist; pass the DuckDB file a replay wrote")
    return connect(p, read_only=True)
