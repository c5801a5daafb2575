"""Reading the warehouse while a replay writes it gives a consistent result or a clear
"busy" error — never a corrupted file."""

import subprocess
import sys
import time

from dqkit.errors import InputError, WarehouseBusyError
from dqkit.investigate.reconcile import reconcile


def test_reading_while_a_replay_writes(tmp_path):
    from dqkit.events.generator import SampleSpec, generate

    s = generate(tmp_path / "gen", SampleSpec(events=40_000, users=1_000, seed=6))
    wh, tel = tmp_path / "wh.duckdb", tmp_path / "tel"
    proc = subprocess.Popen([sys.executable, "-m", "dqkit.cli", "replay", str(s.events_path), "-w", str(wh), "-t", str(tel),
                             "--chunk-lines", "300", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes = {"busy": 0, "missing": 0, "read": 0}
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            r = reconcile(wh, tel)
            assert r.totals["unexplained"] == 0
            outcomes["read"] += 1
        except WarehouseBusyError as exc:
            assert "busy" in str(exc) and "retry" in str(exc).lower()
            outcomes["busy"] += 1
        except InputError:
            outcomes["missing"] += 1  # not created yet, or no spans written yet
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert outcomes["busy"] > 0, outcomes
    final = reconcile(wh, tel)
    assert final.totals["unexplained"] == 0 and final.totals["received"] == s.events
    assert final.findings() == []
