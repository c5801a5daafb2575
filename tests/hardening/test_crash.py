"""SIGKILL a replay at many points, resume it, and the warehouse equals one clean run:
nothing lost, nothing doubled, and the spans still balance against it."""

import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from dqkit.pipeline.run import ReplayConfig, replay
from tests.conftest import Run, assert_balanced


def _cmd(sample, wh, tel):
    return [sys.executable, "-m", "dqkit.cli", "replay", str(sample.events_path), "-w", str(wh), "-t", str(tel),
            "--profiles", str(sample.profiles_path), "--chunk-lines", "40", "--json"]


def _state(wh):
    con = duckdb.connect(str(wh), read_only=True)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            "events": q("SELECT event_id, batch_id, trace_id, event_type, session_id, session_event_number FROM events ORDER BY ALL"),
            "rejected": q("SELECT event_id, batch_id, trace_id, stage, reason FROM rejected_events ORDER BY ALL"),
            "deliveries": q("SELECT delivery_key, trace_id, received, invalid, duplicate, loaded, dead_lettered FROM deliveries ORDER BY ALL"),
            "loaded_rows": q("SELECT sum(row_count) FROM load_audit WHERE success"),
        }
    finally:
        con.close()


def _committed(wh):
    if not wh.exists():
        return 0
    try:
        con = duckdb.connect(str(wh), read_only=True)
    except duckdb.Error:
        return -1
    try:
        return con.execute("SELECT count(*) FROM deliveries").fetchall()[0][0]
    except duckdb.CatalogException:  # killed while creating the tables
        return 0
    finally:
        con.close()


@pytest.mark.slow  # kills a replay at timed points: 30-60 s; the fast resume test is in tests/pipeline/test_replay.py
def test_sigkill_at_many_points_then_resume_equals_one_clean_run(tmp_path):
    from dqkit.events.generator import SampleSpec, generate

    sample = generate(tmp_path / "gen", SampleSpec(events=12_000, users=400, seed=8))
    replay(sample.events_path, tmp_path / "clean.duckdb", tmp_path / "clean-tel", profiles=sample.profiles_path,
           config=ReplayConfig(chunk_lines=40))
    clean = _state(tmp_path / "clean.duckdb")
    total = len(clean["deliveries"])

    wh, tel = tmp_path / "wh.duckdb", tmp_path / "tel"
    progress = []
    delay = 1.2
    # Kill later each time (start-up alone takes a second or more on a busy machine), until the
    # replay has been cut at several points or has finished.
    while len({p for p in progress if 0 < p < total}) < 4 and len(progress) < 30:
        proc = subprocess.Popen(_cmd(sample, wh, tel), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        progress.append(_committed(wh))
        if progress[-1] == total:
            break
        delay += 0.3
    partial = {p for p in progress if 0 < p < total}
    assert len(partial) >= 3, f"expected kills at several points of the replay, got progress {progress} of {total}"

    final = subprocess.run(_cmd(sample, wh, tel), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _state(wh) == clean
    assert not list(tel.glob("traces.jsonl.*"))  # no marker of an uncommitted chunk is left
    _, from_wh = assert_balanced(Run(None, wh, tel))
    assert from_wh["received"].sum() == sum(d[2] for d in clean["deliveries"])
