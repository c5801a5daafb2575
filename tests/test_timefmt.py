from datetime import UTC, datetime, timedelta, timezone

from dqkit.timefmt import iso_z


def test_every_moment_is_written_in_utc_with_a_z():
    assert iso_z(datetime(2026, 11, 20, 10, 0, tzinfo=UTC)) == "2026-11-20T10:00:00Z"
    # A time in another zone is converted, not relabelled.
    assert iso_z(datetime(2026, 11, 20, 11, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-20T10:00:00Z"
    assert iso_z(datetime(2026, 11, 20, 10, 0, 0, 250_000, tzinfo=UTC)) == "2026-11-20T10:00:00.250000Z"
    assert iso_z(datetime(2026, 11, 20, 10, 0)) == "2026-11-20T10:00:00Z"  # naive: taken as UTC
