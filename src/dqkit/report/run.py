"""The scheduled quality report: run ``quality_report.ipynb`` with papermill, keep the executed
notebook, write a standalone HTML report; the notebook writes ``findings.json`` through
:meth:`DailyReport.save`. The exit code tells a scheduler whether to alert.

Exit codes of ``dqkit report``: 0 healthy, 3 a threshold was breached, 1 the notebook failed
(the executed notebook with the error is kept), 2 bad arguments or parameters (nothing ran).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import fields
from datetime import date, timedelta
from pathlib import Path

from dqkit.errors import ConfigError, DqkitError
from dqkit.report.thresholds import Thresholds

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BREACH = 0, 1, 2, 3
NOTEBOOK = "quality_report.ipynb"
OMIT_TAG = "omit-from-report"
"""Cells tagged so stay in the executed notebook (nbval checks them) but not on the HTML page."""
_PATHS = ("day", "warehouse", "spans", "findings_path", "out_dir", "source", "as_of")


def notebooks_dir() -> Path:
    """The folder holding the report notebook (a dqkit checkout's ``notebooks/``)."""
    from dqkit.demo import repo_root

    root = repo_root()
    if root is not None and (root / "notebooks" / NOTEBOOK).is_file():
        return root / "notebooks"
    installed = Path(__file__).resolve().parents[1] / "notebooks"  # shipped in the wheel
    if (installed / NOTEBOOK).is_file():
        return installed
    raise DqkitError(f"cannot find notebooks/{NOTEBOOK}; run from a dqkit checkout (pip install -e .)")


def validate_params(params: dict) -> dict:
    """Check report parameters before a kernel starts; returns them typed (thresholds as numbers)."""
    known = set(_PATHS) | {f.name for f in fields(Thresholds)}
    out = {}
    for key, value in params.items():
        if key not in known:
            raise ConfigError(f"--param {key}: unknown parameter; known: {', '.join(sorted(known))}")
        out[key] = str(value) if key in _PATHS else value
    th = Thresholds.of(**{k: v for k, v in out.items() if k not in _PATHS})
    out.update({k: getattr(th, k) for k in out if k not in _PATHS})
    if "day" in out:
        try:
            date.fromisoformat(out["day"])
        except ValueError:
            raise ConfigError(f"day={out['day']!r} must look like 2026-11-20") from None
    if out.get("warehouse") and not Path(out["warehouse"]).is_file():
        raise ConfigError(f"warehouse={out['warehouse']!r} does not exist")
    if out.get("spans") and not Path(out["spans"]).exists():
        raise ConfigError(f"spans={out['spans']!r} does not exist")
    return out


_PAGE_CSS = """<style>
/* The report is read, not run: normal word wrapping, a readable measure, no code prompts. */
body { max-width: 1100px; margin: 0 auto !important; padding: 0 24px 48px; }
.jp-RenderedText pre, .jp-OutputArea-output pre { white-space: pre-wrap; word-break: normal; overflow-wrap: break-word; }
.jp-RenderedHTMLCommon h1 { font-size: 26px; } .jp-RenderedHTMLCommon h2 { font-size: 20px; margin-top: 28px; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
</style>
"""


def to_html(executed: Path, html: Path, title: str = "dqkit daily report") -> None:
    """A standalone HTML page of the executed notebook (charts are embedded PNGs), without code."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata["title"] = title
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={OMIT_TAG}), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    # The page is static text and PNGs: drop the template's CDN scripts so it reads offline.
    body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", body)
    body = body.replace("</head>", _PAGE_CSS + "</head>", 1)
    html.write_text(body, encoding="utf-8")


def kernel_config(socket_dir: str):
    """Kernel settings for unattended runs: the kernel talks to papermill over Unix sockets in a
    private folder, not unencrypted TCP on loopback (ipykernel warns about that on stderr,
    which cron would mail every morning)."""
    from traitlets.config import Config

    c = Config()
    c.KernelManager.transport = "ipc"
    c.KernelManager.ip = str(Path(socket_dir) / "kernel")
    # On a busy machine a kernel can take longer than the default 5 s to exit after the last
    # cell; past that it is interrupted and logs "KeyboardInterrupt caught in kernel" on stderr.
    c.KernelManager.shutdown_wait_time = 30.0
    return c


def execute(notebook: Path, executed: Path, parameters: dict, cwd: Path, progress: bool = False) -> None:
    """Run ``notebook`` with papermill into ``executed``; progress (cells done) on stderr if asked.

    Raises :class:`papermill.PapermillExecutionError` when a cell fails (``executed`` keeps the error).
    """
    import papermill as pm

    bar = {"file": sys.stderr, "desc": "dqkit report", "unit": "cell", "mininterval": 1.0} if progress else False
    with tempfile.TemporaryDirectory(prefix="dqkit-kernel-") as sockets:
        pm.execute_notebook(str(notebook), str(executed), parameters=parameters, progress_bar=bar, kernel_name="python3",
                            cwd=str(cwd), config=kernel_config(sockets))


def run_report(day: str, warehouse: str | Path, spans: str | Path, out_dir: str | Path, params: dict | None = None,
               progress: bool = False, source: str | Path | None = None, as_of: str | None = None) -> tuple[int, dict]:
    """Execute the report notebook for ``day`` into ``out_dir``; returns (exit code, findings document).

    Args:
        day: the day to report on (YYYY-MM-DD, UTC).
        warehouse: the DuckDB warehouse; empty for a demo replay under ``out_dir/demo``.
        spans: the span export (a ``traces.jsonl`` or telemetry folder); empty with ``warehouse``.
        out_dir: folder for the executed notebook, the HTML page and ``findings.json``.
        params: threshold overrides (:class:`Thresholds` field names), as strings or numbers.
        progress: show a progress bar (cells executed) on stderr.
        source: what the warehouse's tables mean (``dqkit``, ``reference`` or a mapping file); detected when None.
        as_of: the moment the report describes (ISO-8601); default: the latest load in the data.
    """
    import papermill as pm

    out = Path(out_dir).resolve()
    given = {"day": day, **({"warehouse": str(Path(warehouse).resolve()), "spans": str(Path(spans).resolve())} if warehouse else {})}
    if as_of:
        given["as_of"] = str(as_of)
    if source:
        given["source"] = str(Path(source).resolve()) if Path(str(source)).is_file() else str(source)
    p = validate_params({**given, **(params or {})})
    out.mkdir(parents=True, exist_ok=True)
    findings = out / "findings.json"
    findings.unlink(missing_ok=True)  # a failed run must not leave yesterday's verdict behind
    p["findings_path"], p["out_dir"] = str(findings), str(out)
    executed = out / f"quality_report-{p['day']}.ipynb"
    try:
        execute(notebooks_dir() / NOTEBOOK, executed, p, out, progress)
    except pm.PapermillExecutionError:
        return EXIT_FAILED, {}
    to_html(executed, out / f"quality_report-{p['day']}.html", title=f"dqkit daily report {p['day']}")
    doc = json.loads(findings.read_text())
    return (EXIT_OK if doc["healthy"] else EXIT_BREACH), doc


def yesterday() -> str:
    """Yesterday's date (local calendar), the default day of a morning report."""
    return (date.today() - timedelta(days=1)).isoformat()
