"""One way to write a moment as text: ISO-8601 in UTC with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_z(dt: datetime) -> str:
    """``dt`` in UTC as ISO-8601 with a ``Z``, e.g. ``2026-11-20T10:00:00Z``.

    Microseconds are kept when there are any (``2026-11-20T10:00:00.250000Z``). A naive
    ``datetime`` is taken to be UTC already (dqkit never makes local times).
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
