"""When the daily report fails the day: the thresholds, their defaults, and the checks.

The CLI's ``--param``, the report notebook's parameters and :func:`dqkit.report.daily_report` all
read :class:`Thresholds`; :func:`evaluate` is the only place a breach is decided.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from dqkit.errors import ConfigError


@dataclass(frozen=True)
class Thresholds:
    """The limits a day must stay within. A value above its limit breaches it."""

    max_unexplained_loss: int = 0
    """Events lost without explanation (silently lost, never loaded, or not adding up) allowed."""
    max_dead_lettered: int = 0
    """Events dead-lettered after failed inserts allowed: they are missing from the warehouse
    (and from DAU) until someone reloads them."""
    max_rejected_share: float = 0.05
    """Largest share of the day's received events rejected as invalid."""
    max_lag_p95_s: float = 3600.0
    """Largest p95 of event-to-warehouse lag for the day, in seconds."""
    max_hours_without_data: int = 0
    """Hours that usually have traffic (on the baseline day) allowed to have no events at all: an
    empty day or a gap is missing data, never a healthy day."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ConfigError(f"{f.name}={getattr(self, f.name)!r}: thresholds must not be negative")

    @classmethod
    def of(cls, **values) -> Thresholds:
        """Thresholds from keyword values; ``None`` or an absent key keeps the default, and
        strings (``--param max_lag_p95_s=1800``) are converted to the field's type."""
        known = {f.name: f for f in fields(cls)}
        typed = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown threshold {key!r}; known: {', '.join(known)}")
            if value is None:
                continue
            kind = int if known[key].type in ("int", int) else float
            try:
                typed[key] = kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'}") from None
        return cls(**typed)

    def to_dict(self) -> dict:
        """Every threshold by name."""
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One threshold applied to the day's value."""

    name: str
    """The threshold's field name in :class:`Thresholds`."""
    label: str
    """What is measured, for people."""
    unit: str
    """``events``, ``share`` or ``seconds``: how to read value and limit."""
    value: float | None
    """The day's value; None when it cannot be measured (no events loaded that day)."""
    limit: int | float

    @property
    def breached(self) -> bool:
        """The value is known and above the limit."""
        return self.value is not None and self.value > self.limit

    def to_dict(self) -> dict:
        """The check as JSON: name, label, unit, value, limit and whether it breached."""
        return {"name": self.name, "label": self.label, "unit": self.unit, "value": self.value, "limit": self.limit,
                "breached": self.breached}


# (threshold, measure it limits, label, unit)
CHECKS = (
    ("max_unexplained_loss", "unexplained_loss", "Events lost without explanation", "events"),
    ("max_dead_lettered", "dead_lettered", "Events dead-lettered after failed inserts", "events"),
    ("max_rejected_share", "rejected_share", "Received events rejected as invalid", "share"),
    ("max_lag_p95_s", "lag_p95_s", "Event-to-warehouse lag, 95th percentile", "seconds"),
    ("max_hours_without_data", "hours_without_data", "Hours with traffic on the baseline and no events", "hours"),
)


def evaluate(measures: dict, thresholds: Thresholds | None = None) -> list[Check]:
    """Every check of ``thresholds`` against the day's ``measures`` (keys as in :data:`CHECKS`)."""
    th = thresholds or Thresholds()
    return [Check(name, label, unit, measures.get(measure), getattr(th, name)) for name, measure, label, unit in CHECKS]
