"""Crashes and shutdown of the live processes: nothing acknowledged is lost, nothing is doubled.

The check is per request: every event of every acknowledged request is in the warehouse exactly
once, and rows plus rejects account for everything the queue received (the ledgers balance from
spans and from the warehouse)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.conftest import Run, assert_balanced
from tests.live.conftest import Serve, consumer, native, post_all

EVENTS = 5


def acked_ids(results: list[tuple[str, int]]) -> set[str]:
    return {f"{bid}-{i}" for bid, code in results if code == 200 for i in range(EVENTS)}


def check(run: Run, must_have: set[str]) -> None:
    dupes = run.sql("SELECT event_id, count(*) FROM events GROUP BY ALL HAVING count(*) > 1")
    assert dupes == [], f"events loaded twice: {dupes}"
    loaded = {r[0] for r in run.sql("SELECT event_id FROM events")}
    assert must_have <= loaded, f"acknowledged events missing: {sorted(must_have - loaded)[:5]}"
    assert_balanced(run)


def test_sigterm_drains_the_queue(tmp_path):
    srv = Serve(tmp_path)
    results = post_all(srv.url, [native(f"b{n}", EVENTS, user=f"u{n % 3}") for n in range(30)])
    assert all(code == 200 for _, code in results)
    assert srv.stop() == 0
    run = Run(None, srv.warehouse, srv.telemetry)
    assert run.sql("SELECT count(*) FROM events") == [(30 * EVENTS,)]
    check(run, acked_ids(results))
    assert (srv.telemetry / "metrics.jsonl").stat().st_size > 0, "the consumer flushed its metrics on the way out"


def test_consumer_killed_between_warehouse_and_offset_commit(tmp_path):
    srv = Serve(tmp_path, consumers=0)
    first = post_all(srv.url, [native(f"a{n}", EVENTS) for n in range(20)])
    # This consumer dies (SIGKILL) right after its first warehouse commit, before the offsets.
    a = consumer(tmp_path, "embedded", "consume-a.log", DQKIT_CONSUMER_CRASH_AFTER_COMMITS="1")
    assert a.wait(timeout=60) == -signal.SIGKILL
    second = post_all(srv.url, [native(f"b{n}", EVENTS) for n in range(20)])
    b = consumer(tmp_path, "embedded", "consume-b.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until b has loaded everything
        time.sleep(0.3)
        if (srv.warehouse.parent / "wh.duckdb.queue" / "committed").exists():
            size = sum(p.stat().st_size for p in (srv.warehouse.parent / "wh.duckdb.queue").glob("segment-*"))
            if int((srv.warehouse.parent / "wh.duckdb.queue" / "committed").read_text()) >= size:
                break
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=60) == 0
    assert srv.stop() == 0
    run = Run(None, srv.warehouse, srv.telemetry)
    # The redelivered chunk was recognised and skipped, not loaded again.
    assert run.sql("SELECT sum(skipped_deliveries) FROM runs") == [(20,)]
    assert run.sql("SELECT count(*) FROM events") == [(40 * EVENTS,)]
    check(run, acked_ids(first + second))


@pytest.mark.slow  # ~15 s: two endpoint processes and a retry of every unacknowledged request
def test_server_killed_mid_request(tmp_path):
    srv = Serve(tmp_path)
    bodies = [native(f"k{n}", EVENTS, user=f"u{n % 7}") for n in range(600)]
    results: list[tuple[str, int]] = []
    poster = threading.Thread(target=post_all, args=(srv.url, bodies, 6, results))
    poster.start()
    deadline = time.monotonic() + 30
    while len(results) < 100 and time.monotonic() < deadline:  # let requests flow
        time.sleep(0.01)
    srv.kill()  # kill -9, with requests in flight
    poster.join()
    acked = [r for r in results if r[1] == 200]
    assert 0 < len(acked) < len(bodies) and any(code == 0 for _, code in results), "the kill came mid-stream"
    # Clients retry what was not acknowledged (some of it may have been queued before the kill).
    again = Serve(tmp_path)
    retried = post_all(again.url, [b for b in bodies if b["batch_id"] not in {bid for bid, _ in acked}])
    assert all(code == 200 for _, code in retried)
    assert again.stop() == 0
    run = Run(None, again.warehouse, again.telemetry)
    check(run, acked_ids(results + retried))
    assert run.sql("SELECT count(*) FROM events") == [(len(bodies) * EVENTS,)]


@pytest.mark.slow  # ~13 s
def test_consumer_killed_at_any_moment_is_restarted_and_nothing_is_lost(tmp_path):
    import httpx2

    srv = Serve(tmp_path)
    results: list[tuple[str, int]] = []
    poster = threading.Thread(target=post_all, args=(srv.url, [native(f"r{n}", EVENTS, user=f"u{n % 4}") for n in range(300)],
                                                      4, results))
    poster.start()
    (pid,) = httpx2.get(srv.url + "/health").json()["consumer_pids"]
    deadline = time.monotonic() + 30
    while len(results) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # wherever it is: polling, in the stages, committing
    poster.join()
    deadline = time.monotonic() + 30
    while httpx2.get(srv.url + "/health").json()["consumer_restarts"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx2.get(srv.url + "/health").json()["consumer_restarts"] == 1
    assert srv.stop() == 0
    run = Run(None, srv.warehouse, srv.telemetry)
    assert all(code == 200 for _, code in results)
    assert run.sql("SELECT count(*) FROM events") == [(300 * EVENTS,)]
    check(run, acked_ids(results))
