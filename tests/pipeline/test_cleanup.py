"""A clean-up job that deletes loaded rows: the rows go, the pipeline's records stay, and the
truth entry it returns matches what the warehouse lost."""

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from dqkit.errors import InputError, WarehouseBusyError
from dqkit.events.generator import SampleSpec, generate
from dqkit.pipeline.cleanup import delete_rows

QUIET = dict(events=4_000, users=300, days=2, seed=9, retry_rate=0.0, invalid_rate=0.0, offline_rate=0.0)
T0, T1 = datetime(2026, 11, 20, 10, tzinfo=UTC), datetime(2026, 11, 20, 16, tzinfo=UTC)
RECORDS = ("SELECT (SELECT count(*) FROM deliveries), (SELECT sum(loaded) FROM deliveries), "
           "(SELECT count(*) FROM load_audit), (SELECT sum(row_count) FROM load_audit), (SELECT count(*) FROM rejected_events)")


@pytest.fixture
def loaded(tmp_path, run_sample):
    s = generate(tmp_path / "gen", SampleSpec(**QUIET))
    return run_sample(s.events_path, profiles=s.profiles_path)


def _user_days(run) -> set:
    return set(run.sql("SELECT DISTINCT user_id, strftime(event_ts, '%Y-%m-%d') FROM events"))


@pytest.mark.parametrize("kw,where", [
    ({"platform": "ios"}, "platform = 'ios'"),
    ({"table": "events_view"}, "event_type = 'view'"),
    ({}, "true"),
])
def test_delete_rows_removes_the_window_and_states_its_truth(loaded, kw, where):
    window = f"event_ts >= '{T0.isoformat()}' AND event_ts < '{T1.isoformat()}'"
    before, days_before = loaded.sql(f"SELECT count(*), count(DISTINCT user_id) FROM events WHERE {window} AND {where}")[0], _user_days(loaded)
    total, records = loaded.sql("SELECT count(*) FROM events")[0][0], loaded.sql(RECORDS)
    truth = delete_rows(loaded.warehouse, T0, T1, **kw)

    assert (truth["stage"], truth["kind"], truth["cause"]) == ("warehouse", "drop", "deleted after load")
    assert truth["window"] == {"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T16:00:00Z"}
    assert truth["segment"] == {**({"platform": "ios"} if "platform" in kw else {}), **({"event_type": "view"} if "table" in kw else {})}
    assert (truth["events"], truth["users"]) == before and before[0] > 0
    assert loaded.sql(f"SELECT count(*) FROM events WHERE {window} AND {where}")[0][0] == 0
    assert loaded.sql("SELECT count(*) FROM events")[0][0] == total - truth["events"]
    # Users wholly lost: their user-day had no other loaded row left.
    lost = days_before - _user_days(loaded)
    assert truth["users_lost"] == len(lost) == sum(truth["users_lost_by_day"].values())
    assert set(truth["users_lost_by_day"]) <= {"2026-11-20"}
    if "table" in kw:  # other tables keep their rows in the window
        assert loaded.sql(f"SELECT count(*) FROM events WHERE {window} AND event_type <> 'view'")[0][0] > 0
    # The pipeline's own records are untouched: they still say every row loaded.
    assert loaded.sql(RECORDS) == records and records[0][1] == total


def test_reconciliation_sees_the_deleted_rows(loaded):
    from dqkit.investigate.reconcile import reconcile

    truth = delete_rows(loaded.warehouse, T0, T1, platform="android")
    rec = reconcile(loaded.warehouse, loaded.telemetry)
    assert rec.totals["silent_loss"] == truth["events"] > 0


def test_nothing_in_the_window_deletes_nothing(loaded):
    truth = delete_rows(loaded.warehouse, datetime(2030, 1, 1), datetime(2030, 1, 2))
    assert (truth["events"], truth["users"], truth["users_lost"], truth["users_lost_by_day"]) == (0, 0, 0, {})
    assert truth["window"]["start"] == "2030-01-01T00:00:00Z"


def test_bad_requests_are_refused(tmp_path, loaded):
    with pytest.raises(InputError, match="does not exist"):
        delete_rows(tmp_path / "nope.duckdb", T0, T1)
    assert not (tmp_path / "nope.duckdb").exists()
    with pytest.raises(InputError, match="no table 'events_purchase'.*events_view"):
        delete_rows(loaded.warehouse, T0, T1, table="events_purchase")
    with pytest.raises(InputError, match="must be after start"):
        delete_rows(loaded.warehouse, T1, T0)


def test_a_warehouse_another_process_holds_is_refused(loaded):
    hold = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(loaded.warehouse)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseBusyError, match="busy"):
            delete_rows(loaded.warehouse, T0, T1)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    before = loaded.sql("SELECT count(*) FROM events")[0][0]
    assert delete_rows(loaded.warehouse, T0, T1)["events"] == before - loaded.sql("SELECT count(*) FROM events")[0][0] > 0
