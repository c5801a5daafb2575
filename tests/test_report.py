"""The papermill-run report: HTML with charts and findings, findings.json, documented exit codes,
parameters refused before a kernel starts, failures that keep the evidence, and nbval that
catches a changed result."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from dqkit.errors import ConfigError
from dqkit.pipeline.faults import parse_fault
from dqkit.pipeline.run import ReplayConfig, replay
from dqkit.report import EXIT_BREACH, EXIT_FAILED, EXIT_OK, run_report

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    from dqkit.events.generator import SampleSpec, generate

    d = tmp_path_factory.mktemp("week")
    s = generate(d / "gen", SampleSpec(events=20_000, users=800, days=8, seed=5))
    faults = (parse_fault("insert_failure:table=events_view,start=2026-11-27T10:00:00Z,duration=3h"),)
    replay(s.events_path, d / "wh.duckdb", d / "tel", profiles=s.profiles_path, config=ReplayConfig(faults=faults))
    return d


def test_report_html_findings_and_exit_codes(tmp_path, week):
    code, doc = run_report("2026-11-20", week / "wh.duckdb", week / "tel", tmp_path / "ok")
    assert code == EXIT_OK and doc["healthy"] and doc["day"] == "2026-11-20"
    html = (tmp_path / "ok" / "quality_report-2026-11-20.html").read_text()
    assert html.count("data:image/png") >= 3, "charts are embedded, readable offline"
    assert "HEALTHY" in html and "<script src=\"http" not in html
    assert json.loads((tmp_path / "ok" / "findings.json").read_text())["received"] == doc["received"] > 0

    code, doc = run_report("2026-11-27", week / "wh.duckdb", week / "tel", tmp_path / "bad", {"max_lag_p95_s": "7200"})
    assert code == EXIT_OK, "dead letters are explained losses, not unexplained ones"
    assert doc["findings"][0]["stage"] == "warehouse.insert"
    html = (tmp_path / "bad" / "quality_report-2026-11-27.html").read_text()
    assert "warehouse.insert drop" in html

    code, doc = run_report("2026-11-27", week / "wh.duckdb", week / "tel", tmp_path / "strict", {"max_rejected_share": "0.0001"})
    assert code == EXIT_BREACH and doc["breaches"] and "rejected share" in doc["breaches"][0]


@pytest.mark.parametrize("params,message", [({"colour": "red"}, "unknown parameter"), ({"max_lag_p95_s": "soon"}, "expected a float"),
                                            ({"max_rejected_share": "-1"}, "negative")])
def test_bad_parameters_are_refused_before_a_kernel_starts(tmp_path, week, params, message):
    with pytest.raises(ConfigError, match=message):
        run_report("2026-11-27", week / "wh.duckdb", week / "tel", tmp_path / "r", params)
    assert not (tmp_path / "r").exists()
    out = subprocess.run([sys.executable, "-m", "dqkit.cli", "report", "--day", "nope", "--out", str(tmp_path / "c")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "2026-11-20" in out.stderr and not (tmp_path / "c").exists()


def test_a_failed_run_keeps_the_executed_notebook_with_the_error(tmp_path):
    broken = tmp_path / "broken.duckdb"
    broken.write_text("not a database")
    tel = tmp_path / "tel"
    tel.mkdir()
    (tel / "traces.jsonl").write_text("")
    code, _ = run_report("2026-11-27", broken, tel, tmp_path / "out")
    assert code == EXIT_FAILED
    nb = nbformat.read(str(tmp_path / "out" / "quality_report-2026-11-27.ipynb"), as_version=4)
    assert any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_papermill_runs_the_replay_notebook_with_small_parameters(tmp_path):
    out = tmp_path / "01.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / "01_replay_sample.ipynb"), str(out), kernel_name="python3", progress_bar=False,
                        parameters={"events": 2000, "users": 150, "out_dir": str(tmp_path / "run"), "faults": []},
                        cwd=str(NOTEBOOKS))
    text = "".join(o.get("text", "") for c in nbformat.read(str(out), 4).cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "unaccounted            0" in text and "dead_lettered          0" in text


def test_nbval_fails_when_a_summary_value_changes(tmp_path):
    nb = nbformat.read(str(NOTEBOOKS / "01_replay_sample.ipynb"), as_version=4)
    last = nb.cells[-1]
    last.outputs[0]["text"] = last.outputs[0]["text"].replace("unaccounted            0", "unaccounted            1")
    path = tmp_path / "changed.ipynb"
    nbformat.write(nb, str(path))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval", "-p", "no:cacheprovider", str(path),
                          "-o", "addopts=", "--rootdir", str(tmp_path)], capture_output=True, text=True, cwd=str(NOTEBOOKS))
    assert out.returncode != 0 and "unaccounted" in out.stdout
