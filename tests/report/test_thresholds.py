"""Thresholds live in one dataclass; evaluate() alone decides a breach."""

import pytest

from dqkit.errors import ConfigError
from dqkit.report import Thresholds, evaluate

DAY = {"unexplained_loss": 0, "dead_lettered": 12, "rejected_share": 0.051, "lag_p95_s": 440.0, "hours_without_data": 0}


def test_defaults_and_overrides_from_strings():
    th = Thresholds.of(max_lag_p95_s="1800", max_dead_lettered="25", max_rejected_share=None)
    assert th == Thresholds(max_lag_p95_s=1800.0, max_dead_lettered=25)
    assert isinstance(th.max_dead_lettered, int) and th.max_rejected_share == Thresholds().max_rejected_share


@pytest.mark.parametrize("values,message", [({"colour": 1}, "unknown threshold 'colour'"),
                                            ({"max_dead_lettered": "many"}, "expected an integer"),
                                            ({"max_lag_p95_s": "soon"}, "expected a number"),
                                            ({"max_rejected_share": "-0.1"}, "must not be negative")])
def test_bad_values_are_refused_with_the_name(values, message):
    with pytest.raises(ConfigError, match=message):
        Thresholds.of(**values)


def test_each_threshold_breaches_only_above_its_limit():
    checks = {c.name: c for c in evaluate(DAY)}
    assert list(checks) == ["max_unexplained_loss", "max_dead_lettered", "max_rejected_share", "max_lag_p95_s",
                            "max_hours_without_data"]
    assert [n for n, c in checks.items() if c.breached] == ["max_dead_lettered", "max_rejected_share"]
    assert not any(c.breached for c in evaluate(DAY, Thresholds(max_dead_lettered=12, max_rejected_share=0.051)))
    assert checks["max_dead_lettered"].to_dict() == {"name": "max_dead_lettered", "label": "Events dead-lettered after failed inserts",
                                                     "unit": "events", "value": 12, "limit": 0, "breached": True}


def test_an_unmeasurable_value_breaches_nothing():
    assert not any(c.breached for c in evaluate({**DAY, "dead_lettered": 0, "rejected_share": 0.0, "lag_p95_s": None}))


def test_hours_without_data_breach():
    (c,) = [c for c in evaluate({**DAY, "hours_without_data": 3}) if c.name == "max_hours_without_data"]
    assert c.breached and c.unit == "hours" and c.value == 3
