import json
import re
import subprocess
import sys

from tests.conftest import batch, event, write_lines


def dqkit(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dqkit.cli", *args], capture_output=True, text=True, **kw)


def test_help_reads_well():
    out = dqkit("--help")
    assert out.returncode == 0 and "replay" in out.stdout and "demo" in out.stdout
    rep = dqkit("replay", "--help")
    assert "--warehouse" in rep.stdout and "OTEL_EXPORTER_OTLP_" in rep.stdout


def test_bad_path_is_one_line_error(tmp_path):
    out = dqkit("replay", str(tmp_path / "missing.ndjson"), "-w", str(tmp_path / "w.duckdb"), "-t", str(tmp_path / "t"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_replay_json_summary(tmp_path):
    sample = write_lines(tmp_path / "s.ndjson", [batch("b-1", [event("e1"), event("e2", ts="bad")])])
    out = dqkit("replay", str(sample), "-w", str(tmp_path / "w.duckdb"), "-t", str(tmp_path / "t"), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ledger"] == {"received": 2, "loaded": 1, "invalid": 1, "duplicate": 0, "dead_lettered": 0,
                             "in_flight": 0, "unaccounted": 0}


def test_demo_runs_and_reruns_idempotently(tmp_path):
    out = dqkit("demo", "--out", str(tmp_path / "demo"), "--events", "3000", "--users", "200")
    assert out.returncode == 0, out.stderr
    assert re.search(r"unaccounted\s+0\n", out.stdout), out.stdout
    again = dqkit("demo", "--out", str(tmp_path / "demo"), "--events", "3000", "--users", "200")
    assert "skipped" in again.stdout and re.search(r"received\s+0\n", again.stdout), again.stdout
