"""Reading the warehouse while a replay writes it gives a consistent result or a clear
"busy" error — never a corrupted file."""

import subprocess
import sys
import time

import pytest

from dqkit.errors import InputError, WarehouseBusyError
from dqkit.investigate.reconcile import reconcile

_NOT_YET = ("does not exist", "no traces", "not found")  # the replay has not created its files yet


@pytest.mark.slow  # polls a replay running in another process for up to two minutes
def test_reading_while_a_replay_writes(tmp_path):
    from dqkit.events.generator import SampleSpec, generate

    s = generate(tmp_path / "gen", SampleSpec(events=40_000, users=1_000, seed=6))
    wh, tel = tmp_path / "wh.duckdb", tmp_path / "tel"
    proc = subprocess.Popen([sys.executable, "-m", "dqkit.cli", "replay", str(s.events_path), "-w", str(wh), "-t", str(tel),
                             "--chunk-lines", "300", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes = {"busy": 0, "not yet": 0, "read": 0}
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            r = reconcile(wh, tel)
            assert r.totals["unexplained"] == 0
            outcomes["read"] += 1
        except WarehouseBusyError as exc:
            msg = str(exc)
            assert msg.startswith(f"warehouse {str(wh)!r} is busy: another process (a replay) is writing it"), msg
            assert "Retry when it finishes" in msg, msg
            outcomes["busy"] += 1
        except InputError as exc:
            # Only "not created yet" is expected; any other input error (say, a half-written
            # span file read as not OTLP/JSON) is a failure.
            assert any(s in str(exc) for s in _NOT_YET), f"unexpected input error while a replay writes: {exc}"
            assert not wh.exists() or not (tel / "traces.jsonl").exists(), f"files exist, yet: {exc}"
            outcomes["not yet"] += 1
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert outcomes["busy"] > 0, outcomes
    final = reconcile(wh, tel)
    assert final.totals["unexplained"] == 0 and final.totals["received"] == s.events
    assert final.findings() == []
