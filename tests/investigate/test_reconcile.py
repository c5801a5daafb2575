"""Reconcile reports exactly the difference that was injected, and nothing else."""

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from dqkit.investigate.reconcile import reconcile
from dqkit.pipeline.run import ReplayConfig
from tests.conftest import batch, event, write_lines

HOUR = "2026-11-20T{:02d}:00:0{}Z"


@pytest.fixture
def replayed(tmp_path, run_sample):
    items = [
        batch(f"b-{h}", [event(f"e{h}-{n}", etype="view" if n % 2 else "tap", user=f"u_{n}",
                               ts=HOUR.format(h, 0)) for n in range(4)] + [event(f"bad{h}", ts="nope")],
              received=HOUR.format(h, 5), platform="android" if h == 9 else "ios")
        for h in range(6, 12)
    ]
    items.append(batch("b-retry", [event("e6-0", user="u_0", ts=HOUR.format(6, 0))], received=HOUR.format(12, 0)))
    return run_sample(write_lines(tmp_path / "s.ndjson", items))


def _only(result, **expected):
    t = result.totals
    for k in ("silent_loss", "never_loaded", "over_count", "dead_lettered", "in_flight", "unexplained"):
        assert t[k] == expected.get(k, 0), f"expected {k}={expected.get(k, 0)}, got {t[k]} ({t})"
    assert [f["class"] for f in result.findings()] == [k for k in ("silent_loss", "never_loaded", "over_count",
                                                                    "dead_lettered", "in_flight") if expected.get(k)]


def test_clean_replay_reconciles_to_zero(replayed):
    r = reconcile(replayed.warehouse, replayed.telemetry)
    _only(r)
    assert (r.totals["received"], r.totals["invalid"], r.totals["duplicate"], r.totals["warehouse_rows"]) == (31, 6, 1, 24)


def test_silent_loss_is_found_with_batch_table_and_segment(replayed):
    con = duckdb.connect(str(replayed.warehouse))
    con.execute("DELETE FROM events_view WHERE batch_id = 'b-9'")
    con.close()
    r = reconcile(replayed.warehouse, replayed.telemetry)
    _only(r, silent_loss=2)
    (f,) = r.findings()
    assert f["batches"] == 1 and f["tables"] == ["events_view"]
    assert f["segments"][0]["platform"] == "android"
    assert f["window"]["start"] == "2026-11-20T09:00:05Z"


def test_over_count_from_rows_loaded_twice(replayed):
    con = duckdb.connect(str(replayed.warehouse))
    con.execute("INSERT INTO events_tap SELECT * FROM events_tap WHERE batch_id = 'b-7'")
    con.close()
    r = reconcile(replayed.warehouse, replayed.telemetry)
    _only(r, over_count=2)
    assert r.findings()[0]["tables"] == ["events_tap"]


def _drop_links(telemetry, batch_id):
    path = telemetry / "traces.jsonl"
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    for doc in docs:
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    if s["name"] == "analytics.warehouse.insert":
                        s["links"] = [lk for lk in s["links"]
                                      if {a["key"]: a["value"] for a in lk["attributes"]}["batch.id"]["stringValue"] != batch_id]
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")


def test_published_but_unloaded_is_never_loaded_or_in_flight_by_age(replayed):
    con = duckdb.connect(str(replayed.warehouse))
    con.execute("DELETE FROM events_view WHERE batch_id = 'b-8'")
    con.execute("DELETE FROM events_tap WHERE batch_id = 'b-8'")
    con.close()
    _drop_links(replayed.telemetry, "b-8")
    _only(reconcile(replayed.warehouse, replayed.telemetry), never_loaded=4)
    soon_after = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    _only(reconcile(replayed.warehouse, replayed.telemetry, as_of=soon_after, flight_window=timedelta(hours=1)),
          in_flight=4)


def test_dead_lettered_inserts(tmp_path, run_sample):
    sample = write_lines(tmp_path / "s.ndjson", [batch("b-1", [event("e1"), event("e2", etype="tap")])])
    run = run_sample(sample, config=ReplayConfig(insert_fault=lambda t, a: "disk full" if t == "events_tap" else None))
    _only(reconcile(run.warehouse, run.telemetry), dead_lettered=1)


def test_rows_without_any_span_are_over_count(replayed):
    con = duckdb.connect(str(replayed.warehouse))
    con.execute("INSERT INTO events_view SELECT * REPLACE ('feedfacefeedfacefeedfacefeedface' AS trace_id, 'b-ghost' AS batch_id) "
                "FROM events_view LIMIT 3")
    con.close()
    r = reconcile(replayed.warehouse, replayed.telemetry)
    _only(r, over_count=3)
    ghost = r.batches.filter(r.batches["batch_id"] == "b-ghost").row(0, named=True)
    assert ghost["platform"] == "untraced" and ghost["received"] == 0


def test_cli_reconcile_json(replayed):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dqkit.cli", "reconcile", "-w", str(replayed.warehouse),
                          "-s", str(replayed.telemetry), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["balanced"] is True and doc["totals"]["warehouse_rows"] == 24 and doc["findings"] == []


def test_rollups_by_hour_segment_country_and_event_type(replayed):
    from dqkit.investigate.ledger import batch_ledger, event_type_ledger, rollup

    sd = replayed.spans()
    led = batch_ledger(sd)
    countries = dict(zip(led["batch_id"], led["country"]))
    assert countries.pop("b-retry") == "unknown", "all duplicates: never enriched, so no country"
    assert set(countries.values()) == {"US"}, "8.8.8.8 resolves to US; the batch's country rides on the geo span"
    by_platform = {r["platform"]: r for r in rollup(led, by=["platform"], every=None).iter_rows(named=True)}
    assert (by_platform["android"]["received"], by_platform["android"]["loaded"]) == (5, 4)
    hourly = rollup(led, every="1h")
    assert hourly.height == 7 and hourly["received"].sum() == 31
    types = rollup(event_type_ledger(sd), by=["event_type", "country"], every=None)
    assert {(r["event_type"], r["loaded"]) for r in types.iter_rows(named=True)} == {("view", 12), ("tap", 12)}
