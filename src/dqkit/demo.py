"""Demo data for the notebooks and the report: a generated sample replayed into a warehouse,
optionally with a named incident, in a folder dqkit owns.

    made = demo.build(demo.cache_dir("03_dau_drop_investigation"), incident="validate_drop")
    made.warehouse, made.telemetry

A folder is only ever emptied of what :func:`build` wrote into it: it carries a marker file, and
a folder without one that already holds something is refused rather than cleared.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dqkit.errors import ConfigError

MARKER = ".dqkit-demo"
_WRITTEN = ("sample", "warehouse.duckdb", "warehouse.duckdb.wal", "telemetry", "faults.json")

START = datetime(2026, 11, 20, tzinfo=UTC)
"""First day of every demo; the last of an eight-day demo is 2026-11-27."""

INCIDENTS = {
    "none": "a clean week",
    "validate_drop": "an SDK release on android sends malformed timestamps from 08:00 to 14:00 on the last day",
    "insert_failure": "inserts into events_view fail from 15:00 to 19:00 on the last day; the rows are dead-lettered",
    "silent_loss": "after loading, android rows loaded 14:00-17:00 on the last day vanish behind the pipeline's back",
}
"""The incidents :func:`build` can stage, and what each does; join names with ``+`` to stage several."""


@dataclass(frozen=True)
class Demo:
    """Where a demo's files are, and what its replay did."""

    out_dir: Path
    sample: Path
    profiles: Path
    warehouse: Path
    telemetry: Path
    last_day: str
    """The demo's last day (YYYY-MM-DD): the day its incident happens."""
    replay: object
    """The :class:`dqkit.pipeline.run.ReplayResult` of the replay."""


def repo_root() -> Path | None:
    """The dqkit checkout this module runs from, or None when dqkit is installed as a package."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "dqkit"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def cache_dir(name: str, env: dict | None = None) -> Path:
    """A folder for generated files named ``name``, never relative to the working directory.

    ``$DQKIT_CACHE_DIR/name`` when set; in a checkout the repository's ignored ``.cache/notebooks/``;
    otherwise ``$XDG_CACHE_HOME/dqkit`` (``~/.cache/dqkit``).
    """
    env = os.environ if env is None else env
    if env.get("DQKIT_CACHE_DIR"):
        return Path(env["DQKIT_CACHE_DIR"]).expanduser().resolve() / name
    root = repo_root()
    if root is not None:
        return root / ".cache" / "notebooks" / name
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dqkit" / name


def _claim(out: Path) -> None:
    """Make ``out`` ours: refuse a folder holding files dqkit did not write, and remove what a
    previous build wrote (only that)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir={str(out)!r} is a file; give a folder for the demo")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(f"out_dir={str(out)!r} already holds files dqkit did not write; give an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in _WRITTEN:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (out / MARKER).write_text("Written by dqkit.demo.build; the next build replaces sample/, telemetry/ and the warehouse here.\n")


def _day(days: int, hour: int) -> str:
    return (START + timedelta(days=days - 1, hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(out_dir: str | Path, *, incident: str = "none", seed: int = 3, events: int = 80_000, users: int = 5_000,
          days: int = 8, sample: str | Path = "", profiles: str | Path = "", faults: Sequence[str] = ()) -> Demo:
    """Generate a sample (or take ``sample``), replay it into ``out_dir`` and stage ``incident``.

    Args:
        out_dir: a new or empty folder, or one a previous build wrote (its files are replaced).
        incident: one of :data:`INCIDENTS`, on the last of ``days``.
        seed: the generator's seed (same seed, same sample).
        events: approximate number of events to generate.
        users: number of users.
        days: days of traffic from :data:`START`; eight give the last day a baseline a week before.
        sample: replay this sample instead of generating one.
        profiles: the user profiles that go with ``sample``.
        faults: further pipeline fault specs for the replay (``dqkit replay --fault``).
    """
    from dqkit.events.generator import SampleSpec, generate
    from dqkit.events.scenarios import parse_scenario
    from dqkit.pipeline.faults import parse_fault
    from dqkit.pipeline.run import ReplayConfig, replay

    staged = set(incident.split("+"))
    if not staged <= set(INCIDENTS):
        raise ConfigError(f"incident={incident!r}: use one of {', '.join(INCIDENTS)}, or several joined with '+'")
    out = Path(out_dir).expanduser().resolve()
    _claim(out)
    scenarios = ()
    if "validate_drop" in staged:
        scenarios = (parse_scenario(f"sdk_bad_timestamps:platform=android,start={_day(days, 8)},duration=6h"),)
    fault_specs = list(faults)
    if "insert_failure" in staged:
        fault_specs.append(f"insert_failure:table=events_view,start={_day(days, 15)},duration=4h")
    if sample:
        sample_path, profiles_path = Path(sample), Path(profiles) if profiles else None
    else:
        made = generate(out / "sample", SampleSpec(events=events, users=users, days=days, seed=seed, scenarios=scenarios))
        sample_path, profiles_path = made.events_path, made.profiles_path
    config = ReplayConfig(faults=tuple(parse_fault(f) for f in fault_specs), truth_path=out / "faults.json")
    result = replay(sample_path, out / "warehouse.duckdb", out / "telemetry", profiles=profiles_path, config=config)
    if "silent_loss" in staged:
        _lose_rows(out / "warehouse.duckdb", _day(days, 14), _day(days, 17))
    return Demo(out, sample_path, profiles_path, out / "warehouse.duckdb", out / "telemetry", _day(days, 0)[:10], result)


def _lose_rows(warehouse: Path, start: str, end: str) -> None:
    # Rows vanish after the insert spans counted them: a loss only reconciliation can see.
    from dqkit.db import connect

    con = connect(warehouse)
    try:
        con.execute("DELETE FROM events_view WHERE platform = 'android' AND loaded_at >= ?::TIMESTAMPTZ AND loaded_at < ?::TIMESTAMPTZ",
                    [start, end])
    finally:
        con.close()
