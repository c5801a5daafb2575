"""The papermill-run report on a week of data: an HTML page with the status, DAU and findings;
findings.json with the same figures; documented exit codes; --json; a quiet stderr; parameters
refused before a kernel starts; the README's papermill command working from the repository root.
(Notebook runs that need no week: ``tests/report/test_notebook_runs.py``.)"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dqkit import demo
from dqkit.errors import ConfigError
from dqkit.report import EXIT_OK, Thresholds, run_report

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = Path(sys.executable).with_name("papermill")


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    """Eight days; on the last, inserts into events_view fail for four hours (rows dead-lettered)."""
    return demo.build(tmp_path_factory.mktemp("week"), incident="insert_failure", events=20_000, users=800, seed=5)


def _dead_lettered(warehouse: Path, day: str) -> int:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM rejected_events WHERE stage = 'warehouse.insert' "
                           "AND CAST(received_at AS DATE) = ?", [day]).fetchall()[0][0]
    finally:
        con.close()


def test_a_healthy_day_html_and_findings(tmp_path, week):
    code, doc = run_report("2026-11-26", week.warehouse, week.telemetry, tmp_path / "ok", {"max_lag_p95_s": "7200"})
    assert code == EXIT_OK and doc["status"] == "healthy" and doc["breaches"] == []
    html = (tmp_path / "ok" / "quality_report-2026-11-26.html").read_text()
    assert html.count("data:image/png") >= 4, "charts are embedded, readable offline"
    assert "HEALTHY" in html and "<script src=\"http" not in html
    assert f"{doc['dau']['warehouse']:,}" in html and "DAU on Thu 26 Nov" in html, "the page shows DAU"
    assert "dau_baseline" not in html, "the nbval summary stays out of the page"
    saved = json.loads((tmp_path / "ok" / "findings.json").read_text())
    assert saved == doc and saved["measures"]["received"] > 0
    assert [c["name"] for c in saved["checks"]] == list(Thresholds().to_dict())


def test_dead_letters_breach_and_json_on_stdout_with_a_quiet_stderr(tmp_path, week):
    out = tmp_path / "bad"
    proc = subprocess.run([sys.executable, "-m", "dqkit.cli", "report", "--day", week.last_day, "-w", str(week.warehouse),
                           "-s", str(week.telemetry), "--out", str(out), "--json", "--progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == json.loads((out / "findings.json").read_text())
    assert doc["status"] == "breached" and [b["name"] for b in doc["breaches"]] == ["max_dead_lettered"]
    dead = _dead_lettered(week.warehouse, week.last_day)
    assert doc["breaches"][0]["value"] == doc["measures"]["dead_lettered"] == dead > 0 and doc["breaches"][0]["limit"] == 0
    assert {"dau", "decomposition", "findings", "verdict", "baseline_day"} <= set(doc)
    assert doc["findings"][0]["stage"] == "warehouse.insert" and doc["findings"][0]["window"]["start"].startswith(week.last_day)
    assert "without encryption" not in proc.stderr and "WARNING" not in proc.stderr, "cron must not mail kernel noise"
    assert re.search(r"\d+/\d+ \[", proc.stderr) and "cell" in proc.stderr, "progress: cells executed"
    assert "THRESHOLD BREACHED" in proc.stderr and f"{dead:,} events (limit 0 events)" in proc.stderr
    html = (out / f"quality_report-{week.last_day}.html").read_text()
    assert "BREACHED" in html and "dead-lettered after inserts failed" in html and "–19:00 UTC" in html


@pytest.mark.parametrize("params,message", [({"colour": "red"}, "unknown parameter"), ({"max_lag_p95_s": "soon"}, "expected a number"),
                                            ({"max_rejected_share": "-1"}, "negative")])
def test_bad_parameters_are_refused_before_a_kernel_starts(tmp_path, week, params, message):
    with pytest.raises(ConfigError, match=message):
        run_report("2026-11-27", week.warehouse, week.telemetry, tmp_path / "r", params)
    assert not (tmp_path / "r").exists()


def test_the_readmes_papermill_command_runs_from_the_repository_root(tmp_path, week):
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"^papermill notebooks/quality_report\.ipynb .*$", readme, re.M)
    assert line, "README shows the papermill command on a line of its own"
    args = [str(tmp_path / "out.ipynb") if a == "out.ipynb" else str(week.warehouse) if a == "wh.duckdb"
            else str(week.telemetry) if a == "telemetry" else a for a in shlex.split(line.group(0))]
    findings = demo.cache_dir("quality_report") / "findings.json"
    findings.unlink(missing_ok=True)
    proc = subprocess.run([str(PAPERMILL), *args[1:]], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(findings.read_text())
    assert doc["day"] == re.search(r"-p day (\S+)", line.group(0)).group(1) and doc["status"] in ("healthy", "breached")
