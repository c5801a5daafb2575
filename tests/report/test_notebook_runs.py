"""Running the notebooks outside the daily report's week: a report that fails keeps its evidence,
the CLI refuses a bad day, notebooks write only inside the checkout, papermill's parameters
reach the replay notebook, and nbval catches a changed result."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm

from dqkit import demo
from dqkit.report import EXIT_FAILED, run_report

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def test_the_cli_refuses_a_bad_day_with_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dqkit.cli", "report", "--day", "nope", "--out", str(tmp_path / "c")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "2026-11-20" in out.stderr and not (tmp_path / "c").exists()


def test_a_failed_run_keeps_the_executed_notebook_with_the_error(tmp_path):
    broken = tmp_path / "broken.duckdb"
    broken.write_text("not a database")
    tel = tmp_path / "tel"
    tel.mkdir()
    (tel / "traces.jsonl").write_text("")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "findings.json").write_text('{"healthy": true}')
    code, _ = run_report("2026-11-27", broken, tel, tmp_path / "out")
    assert code == EXIT_FAILED
    assert not (tmp_path / "out" / "findings.json").exists(), "no stale verdict survives a failed run"
    nb = nbformat.read(str(tmp_path / "out" / "quality_report-2026-11-27.ipynb"), as_version=4)
    assert any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_committed_notebooks_write_only_inside_the_checkout():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(str(path), as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert "../" not in code and "rmtree" not in code and "shutil" not in code, path.name
        assert re.search(r'^out_dir = ""', params, re.M), f"{path.name}: out_dir defaults to the checkout's .cache/"
        assert "def " not in code and "class " not in code, f"{path.name} stays thin"
    assert demo.cache_dir("01_replay_sample").is_relative_to(ROOT / ".cache")


def test_papermill_runs_the_replay_notebook_with_small_parameters(tmp_path):
    out = tmp_path / "01.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / "01_replay_sample.ipynb"), str(out), kernel_name="python3", progress_bar=False,
                        parameters={"events": 2000, "users": 150, "out_dir": str(tmp_path / "run"), "faults": []},
                        cwd=str(NOTEBOOKS))
    text = "".join(o.get("text", "") for c in nbformat.read(str(out), 4).cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "unaccounted            0" in text and "dead_lettered          0" in text
    assert (tmp_path / "run" / "warehouse.duckdb").is_file()


def test_nbval_fails_when_a_summary_value_changes(tmp_path):
    nb = nbformat.read(str(NOTEBOOKS / "01_replay_sample.ipynb"), as_version=4)
    last = nb.cells[-1]
    last.outputs[0]["text"] = last.outputs[0]["text"].replace("unaccounted            0", "unaccounted            1")
    path = tmp_path / "changed.ipynb"
    nbformat.write(nb, str(path))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval", "-p", "no:cacheprovider", str(path),
                          "-o", "addopts=", "--rootdir", str(tmp_path)], capture_output=True, text=True, cwd=str(NOTEBOOKS))
    assert out.returncode != 0 and "unaccounted" in out.stdout
