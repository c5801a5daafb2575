from datetime import UTC, datetime, timedelta, timezone

import pytest

from dqkit.timefmt import iso_z, parse_iso


def test_every_moment_is_written_in_utc_with_a_z():
    assert iso_z(datetime(2026, 11, 20, 10, 0, tzinfo=UTC)) == "2026-11-20T10:00:00Z"
    # A time in another zone is converted, not relabelled.
    assert iso_z(datetime(2026, 11, 20, 11, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-20T10:00:00Z"
    assert iso_z(datetime(2026, 11, 20, 10, 0, 0, 250_000, tzinfo=UTC)) == "2026-11-20T10:00:00.250000Z"
    assert iso_z(datetime(2026, 11, 20, 10, 0)) == "2026-11-20T10:00:00Z"  # naive: taken as UTC


def test_one_parser_reads_what_people_and_dqkit_write():
    utc = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    for text in ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00+00:00", "2026-11-20T11:00:00+01:00",
                 " 2026-11-20T10:00:00Z ", "2026-11-20T10:00:00", "2026-11-20 10:00"):
        t = parse_iso(text)
        assert t == utc and t.tzinfo is not None, text
    assert parse_iso(iso_z(datetime(2026, 11, 20, 10, 0, 0, 250_000, tzinfo=UTC))).microsecond == 250_000
    for bad in ("yesterday", "2026-13-01T00:00:00Z", ""):
        with pytest.raises(ValueError):
            parse_iso(bad)


@pytest.mark.parametrize("command", ["reconcile", "diagnose", "report"])
def test_a_bad_as_of_is_a_one_line_usage_error_on_every_command(tmp_path, command):
    from click.testing import CliRunner

    from dqkit.cli import main

    args = [command, "--as-of", "last tuesday", "-w", str(tmp_path / "wh.duckdb"), "-s", str(tmp_path / "tel")]
    if command != "reconcile":
        args += ["--day", "2026-11-20"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "'last tuesday' is not ISO-8601, e.g. 2026-11-28T07:00:00Z" in r.output
    assert "Traceback" not in r.output
