"""What the 07:00 reader sees: formatted numbers, human windows and segments, sentences."""

import pytest

from dqkit.report import render


@pytest.mark.parametrize("seconds,text", [(42, "42 s"), (60, "1 min"), (440.2, "7 min 20 s"), (3600, "1 h"), (3900, "1 h 05 min"),
                                          (20000, "5 h 33 min"), (None, "—")])
def test_durations(seconds, text):
    assert render.duration(seconds) == text


def test_numbers_and_shares():
    assert render.count(1234567) == "1,234,567" and render.signed(-113) == "−113" and render.signed(0) == "0"
    assert render.pct(0.2049) == "20.5%" and render.pct(0.0004) == "0.04%" and render.signed_pct(-9.41) == "−9.4%"
    assert render.check_value("share", 0.0016) == "0.16%" and render.check_value("seconds", 3600) == "1 h"


def test_windows_and_segments():
    assert render.window({"start": "2026-11-27T08:00:00Z", "end": "2026-11-27T14:00:00Z"}) == "08:00–14:00 UTC"
    assert render.window({"start": "2026-11-27T20:00:00Z", "end": "2026-11-28T00:00:00Z"}) == "20:00–24:00 UTC"
    assert render.window({"start": "2026-11-27T00:00:00Z", "end": "2026-11-28T00:00:00Z"}) == "the whole day"
    assert render.window({"start": "2026-11-27T22:00:00Z", "end": "2026-11-28T03:00:00Z"}) == "27 Nov 22:00 – 28 Nov 03:00 UTC"
    assert render.segment({"platform": "android", "app_version": "8.4.0", "sdk_version": "2.9.0"}) == "android · app 8.4.0 · SDK 2.9.0"
    assert render.segment({}) == "all traffic"


def test_findings_read_as_sentences():
    f = {"stage": "validate", "kind": "drop", "events": 1721, "users": 154, "segment": {"platform": "android"},
         "window": {"start": "2026-11-27T08:00:00Z", "end": "2026-11-27T14:00:00Z"}, "dau_impact_pct": -11.4,
         "confidence": 0.99, "evidence": "..."}
    assert render.finding_sentence(f) == "1,721 events rejected as invalid at validation — 154 users had nothing else loaded."
    table = render.findings_table({"findings": [f], "differences": []})
    assert "08:00–14:00 UTC" in table.html and "−11.4%" in table.html and "99%" in table.html
    assert "<td" in table.html and "white-space:nowrap" in table.html, "windows never wrap mid-way"
    assert str(table).startswith("1. 1,721 events rejected")
