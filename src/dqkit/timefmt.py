"""One way to write a moment as text, ISO-8601 in UTC with a ``Z``, and one way to read it back."""

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


def parse_iso(text: str) -> datetime:
    """An ISO-8601 moment as an aware ``datetime``: ``Z`` or an offset as written, UTC when the
    text names no zone (as :func:`iso_z` writes naive times). Leading and trailing spaces are
    ignored.

    Raises:
        ValueError: ``text`` is not ISO-8601; callers turn it into their own one-line error.
    """
    t = datetime.fromisoformat(text.strip())
    return t if t.tzinfo else t.replace(tzinfo=UTC)
