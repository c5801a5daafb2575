"""A non-editable install works away from the checkout: the wheel carries the geo-IP tables and
the notebooks, and an installed dqkit finds them inside its package.

Builds the wheel from a copy of the checkout (nothing is written into the repository), installs
it into a fresh virtual environment whose dependencies come from this one, and runs it from a
folder outside the repository with no PYTHONPATH, so only the installed copy can answer."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREE = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "data", "notebooks")


def _run(args, **kw):
    out = subprocess.run(args, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{args} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("wheel", reason="building a wheel without network needs the 'wheel' package (the test extra)")
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "tree"
    for name in TREE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(src, tree / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(base / "dist"), str(tree)], env=env)
    (wheel,) = (base / "dist").glob("dqkit-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    py = venv / "bin" / "python"
    # A venv made from inside a venv sees the base interpreter's packages, not this
    # environment's: hand it this environment's site-packages, after its own.
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "dqkit-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], env=env)
    return venv, site, env


def test_wheel_ships_geoip_tables_and_notebooks(installed):
    venv, site, env = installed
    probe = ("import json, dqkit, dqkit.report as r, dqkit.paths as g; "
             "nb = getattr(r, 'notebooks_dir', None) or __import__('dqkit.report.run', fromlist=['x']).notebooks_dir; "
             "print(json.dumps([dqkit.__file__, str(nb()), str(g.geoip_dir())]))")
    where = json.loads(_run([str(venv / "bin" / "python"), "-c", probe], env=env, cwd=venv.parent).stdout)
    package = site / "dqkit"
    assert Path(where[0]).parent == package, where
    notebooks, geo = Path(where[1]), Path(where[2])
    assert notebooks == package / "notebooks" and geo == package / "data" / "geoip", where
    assert (notebooks / "quality_report.ipynb").is_file()
    assert {p.name for p in notebooks.glob("*.ipynb")} == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    for table in ("ipv4.parquet", "ipv6.parquet"):
        assert (geo / table).read_bytes() == (ROOT / "data" / "geoip" / table).read_bytes()
    assert (geo / "README.md").is_file()  # the data's licence travels with it


def test_installed_demo_runs_outside_the_checkout(installed, tmp_path):
    venv, _, env = installed
    out = _run([str(venv / "bin" / "dqkit"), "demo", "--out", str(tmp_path / "demo"), "--events", "2000", "--users", "100"],
               env=env, cwd=tmp_path)
    assert re.search(r"unaccounted\s+0\n", out.stdout), out.stdout
    assert (tmp_path / "demo" / "warehouse.duckdb").is_file() and (tmp_path / "demo" / "telemetry" / "traces.jsonl").is_file()
