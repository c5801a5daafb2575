"""The scheduled quality report: run ``quality_report.ipynb`` with papermill, keep the executed
notebook, write a standalone HTML report and ``findings.json``, and exit non-zero when a
threshold is breached so a scheduler can alert.

Exit codes of ``dqkit report``: 0 healthy, 3 a threshold was breached, 1 the notebook failed
(the executed notebook with the error is kept), 2 bad arguments or parameters (nothing ran).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

from dqkit.errors import ConfigError, DqkitError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BREACH = 0, 1, 2, 3
NOTEBOOK = "quality_report.ipynb"


@dataclass(frozen=True)
class Thresholds:
    """When the report fails the day."""

    max_unexplained_loss: int = 0
    """Events lost without explanation (silent loss + never loaded) allowed."""
    max_lag_p95_s: float = 3600.0
    """Largest acceptable p95 of event-to-warehouse lag, in seconds, for the day."""
    max_rejected_share: float = 0.05
    """Largest acceptable share of received events rejected as invalid."""


def notebooks_dir() -> Path:
    """The folder of the report notebook (source checkout or installed package)."""
    here = Path(__file__).resolve()
    for base in (here.parents[2] / "notebooks", here.parent / "notebooks"):
        if (base / NOTEBOOK).is_file():
            return base
    raise DqkitError(f"cannot find notebooks/{NOTEBOOK}; run from a dqkit checkout (pip install -e .)")


def quality_summary(warehouse: str | Path, spans, day: date | str, thresholds: Thresholds | None = None) -> dict:
    """Everything the report states, as one JSON-ready dict: reconcile totals, lag, rejected
    share, the diagnosis and which thresholds broke."""
    from dqkit.investigate.diagnose import diagnose
    from dqkit.investigate.lag import event_lag
    from dqkit.investigate.reconcile import reconcile
    from dqkit.investigate.spans import SpanData, load_spans

    th = thresholds or Thresholds()
    d = day if isinstance(day, date) else date.fromisoformat(str(day))
    sd = spans if isinstance(spans, SpanData) else load_spans(spans)
    rec = reconcile(warehouse, sd)
    lag = event_lag(warehouse, every="day")
    row = lag.filter(lag["day"].dt.date() == d)
    p95 = float(row["p95_s"][0]) if row.height else None
    day_batches = rec.batches.filter(rec.batches["received_at"].dt.date() == d)
    received = int(day_batches["received"].sum())
    rejected_share = (int(day_batches["invalid"].sum()) / received) if received else 0.0
    unexplained = int(day_batches["silent_loss"].sum() + day_batches["never_loaded"].sum() + day_batches["unexplained"].abs().sum())
    diag = diagnose(warehouse, sd, d).to_dict()
    breaches = []
    if unexplained > th.max_unexplained_loss:
        breaches.append(f"unexplained loss: {unexplained} events (limit {th.max_unexplained_loss})")
    if p95 is not None and p95 > th.max_lag_p95_s:
        breaches.append(f"lag p95 {p95:,.0f}s (limit {th.max_lag_p95_s:,.0f}s)")
    if rejected_share > th.max_rejected_share:
        breaches.append(f"rejected share {rejected_share:.2%} (limit {th.max_rejected_share:.2%})")
    return {
        "day": d.isoformat(), "thresholds": asdict(th), "breaches": breaches, "healthy": not breaches,
        "received": received, "rejected_share": round(rejected_share, 4), "lag_p95_s": None if p95 is None else round(p95, 1),
        "unexplained_loss": unexplained, "reconcile": {k: v for k, v in rec.totals.items()},
        "verdict": diag["verdict"], "dau": diag["dau"], "findings": diag["findings"],
    }


_PARAM_TYPES = {"day": str, "warehouse": str, "spans": str, "findings_path": str, "out_dir": str, "max_unexplained_loss": int,
                "max_lag_p95_s": float, "max_rejected_share": float}


def validate_params(params: dict) -> dict:
    """Check report parameters before a kernel starts; returns them typed."""
    out = {}
    for key, value in params.items():
        if key not in _PARAM_TYPES:
            raise ConfigError(f"--param {key}: unknown parameter; known: {', '.join(sorted(_PARAM_TYPES))}")
        try:
            out[key] = _PARAM_TYPES[key](value)
        except (TypeError, ValueError):
            raise ConfigError(f"--param {key}={value!r}: expected a {_PARAM_TYPES[key].__name__}") from None
    if "day" in out:
        try:
            date.fromisoformat(out["day"])
        except ValueError:
            raise ConfigError(f"day={out['day']!r} must look like 2026-11-20") from None
    for key in ("warehouse",):
        if key in out and not Path(out[key]).is_file():
            raise ConfigError(f"{key}={out[key]!r} does not exist")
    if "spans" in out and not Path(out["spans"]).exists():
        raise ConfigError(f"spans={out['spans']!r} does not exist")
    if out.get("max_rejected_share", 0) < 0 or out.get("max_lag_p95_s", 0) < 0:
        raise ConfigError("thresholds must not be negative")
    return out


def to_html(executed: Path, html: Path) -> None:
    """A standalone HTML page of the executed notebook (charts are embedded PNGs), without code."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    # The page is static text and PNGs: drop the template's CDN scripts so it reads offline.
    body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", body)
    html.write_text(body, encoding="utf-8")


def run_report(day: str, warehouse: str | Path, spans: str | Path, out_dir: str | Path, params: dict | None = None) -> tuple[int, dict]:
    """Execute the report notebook for ``day``; returns (exit code, findings)."""
    import papermill as pm

    out = Path(out_dir).resolve()
    given = {"day": day, **({"warehouse": str(Path(warehouse).resolve()), "spans": str(Path(spans).resolve())} if warehouse else {})}
    p = validate_params({**given, **(params or {})})
    out.mkdir(parents=True, exist_ok=True)
    findings = out / "findings.json"
    p["findings_path"] = str(findings)
    p.setdefault("out_dir", str(out / "demo"))
    executed = out / f"quality_report-{p['day']}.ipynb"
    try:
        pm.execute_notebook(str(notebooks_dir() / NOTEBOOK), str(executed), parameters=p, progress_bar=False,
                            kernel_name="python3", cwd=str(out))
    except pm.PapermillExecutionError:
        return EXIT_FAILED, {}
    to_html(executed, out / f"quality_report-{p['day']}.html")
    doc = json.loads(findings.read_text())
    return (EXIT_OK if doc["healthy"] else EXIT_BREACH), doc


def yesterday() -> str:
    """Yesterday's date, ``YYYY-MM-DD``."""
    return (date.today() - timedelta(days=1)).isoformat()
