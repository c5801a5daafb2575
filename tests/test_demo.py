"""The demo helper writes only where it may, and deletes only what it wrote."""

from pathlib import Path

import pytest

from dqkit import demo
from dqkit.errors import ConfigError


def test_cache_dir_is_inside_the_checkout_whatever_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    assert demo.cache_dir("quality_report", env={}) == root / ".cache" / "notebooks" / "quality_report"
    assert demo.cache_dir("x", env={"DQKIT_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c" / "x"
    assert ".cache/" in (root / ".gitignore").read_text().splitlines()


def test_build_refuses_a_folder_it_did_not_write_and_replaces_only_its_own(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds files dqkit did not write"):
        demo.build(mine, events=500, users=50, days=1)
    assert (mine / "keep.txt").read_text() == "mine" and len(list(mine.iterdir())) == 1

    out = tmp_path / "demo"
    first = demo.build(out, events=1_000, users=80, days=1, seed=1)
    (out / "user-notes.txt").write_text("added later")
    again = demo.build(out, events=1_000, users=80, days=1, seed=1)
    assert again.replay.ledger.received == first.replay.ledger.received > 0
    assert again.replay.skipped_deliveries == 0, "a fresh warehouse, not a re-run into the old one"
    assert (out / "user-notes.txt").read_text() == "added later", "only what build wrote is replaced"


def test_incidents_are_named_and_checked(tmp_path):
    with pytest.raises(ConfigError, match="incident='outage'"):
        demo.build(tmp_path / "x", incident="outage")
    made = demo.build(tmp_path / "lost", incident="silent_loss", events=3_000, users=200, days=1, seed=11)
    import dqkit

    assert dqkit.reconcile(made.warehouse, made.telemetry).totals["silent_loss"] > 0
    assert made.last_day == "2026-11-20"
