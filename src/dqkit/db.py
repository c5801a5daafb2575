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
    except duckdb.Error as exc:
        raise _open_error(p, exc) from exc
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute("SET enable_progress_bar = false")  # a checkpoint would draw one over the CLI's own
    except duckdb.Error:
        pass  # inside Jupyter DuckDB may refuse to touch its progress bar
    return con


def _open_error(p: Path, exc: duckdb.Error) -> WarehouseError:
    """What went wrong opening ``p``, in words that say what to do."""
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        return WarehouseBusyError(
            f"warehouse {str(p)!r} is busy: another process (a replay) is writing it. Retry when it finishes, "
            "or copy the file and open the copy")
    # DuckDB's words for a file cut short and for a file of another kind (including an empty one).
    if "Could not read enough bytes" in text or "not a valid DuckDB database" in text:
        return WarehouseError(f"warehouse {str(p)!r} is not a DuckDB database (truncated or another kind of file); "
                              "pass the .duckdb file a pipeline wrote")
    return WarehouseError(f"cannot open warehouse {str(p)!r}: {text.splitlines()[0] if text else exc!r}")


def attach_read_only(con: duckdb.DuckDBPyConnection, path: str | Path, alias: str) -> None:
    """Attach an existing warehouse to ``con`` as ``alias``, read-only, with the same clear errors as :func:`connect`."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"warehouse {str(p)!r} is a directory; pass the .duckdb file inside it")
    if not p.exists():
        raise InputError(f"warehouse {str(p)!r} does not exist; pass the DuckDB file the pipeline wrote")
    try:
        con.execute(f"ATTACH '{str(p).replace(chr(39), chr(39) * 2)}' AS {alias} (READ_ONLY)")
    except duckdb.Error as exc:
        raise _open_error(p, exc) from exc


def connect_read_only(path: str | Path) -> duckdb.DuckDBPyConnection:
    """An existing warehouse, opened for reading."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"warehouse {str(path)!r} does not exist; pass the DuckDB file a replay wrote")
    return connect(p, read_only=True)
