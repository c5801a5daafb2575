"""Data scenarios the generator injects into a sample, each with its ground truth.

Grammar (repeat ``--scenario``): ``NAME[:key=value,...]`` with keys ``start``, ``end`` or
``duration``, ``rate`` (0..1), segment keys ``platform``, ``app_version``, ``sdk_version``,
``country``, and ``magnitude`` (its meaning per scenario below).

| name | what happens | stage, kind | magnitude |
|---|---|---|---|
| sdk_bad_timestamps | a segment's events carry malformed timestamps | validate, drop | - |
| retry_storm | a segment's batches are resent many times | dedup, inflated | copies (default 5) |
| event_id_collision | an SDK reuses the previous event's id: real events are deduplicated away | dedup, drop | - |
| clock_skew | a segment's device clocks are off | validate, drop (beyond 24 h) / client, degraded | hours (default 30) |
| bot_burst | non-human users flood the product | client, inflated | bots (default 50) |
| late_delivery | a segment's batches arrive hours late | client, delay | hours (default 8) |
| real_drop | real users of a segment stop coming (healthy pipeline) | none, real_change | - |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dqkit.errors import ConfigError
from dqkit.spec import rate, split_spec, window

SCENARIOS = {
    "sdk_bad_timestamps": ("validate", "drop", None),
    "retry_storm": ("dedup", "inflated", 5.0),
    "event_id_collision": ("dedup", "drop", None),
    "clock_skew": ("validate", "drop", 30.0),
    "bot_burst": ("client", "inflated", 50.0),
    "late_delivery": ("client", "delay", 8.0),
    "real_drop": ("none", "real_change", None),
}
SEGMENT_KEYS = ("platform", "app_version", "sdk_version", "country")
_KEYS = {"start", "end", "duration", "rate", "magnitude", *SEGMENT_KEYS}


@dataclass(frozen=True)
class Scenario:
    """One data incident as parsed from its spec (see the module's grammar)."""

    name: str
    start: datetime | None
    end: datetime | None
    rate: float
    segment: dict
    magnitude: float | None
    spec: str

    @property
    def stage(self) -> str:
        """Where the incident happens: ``client`` for a skew small enough to pass validation."""
        if self.name == "clock_skew" and self.magnitude is not None and abs(self.magnitude) <= 24:
            return "client"
        return SCENARIOS[self.name][0]

    @property
    def kind(self) -> str:
        """What it does to events: ``degraded`` for a skew that passes validation."""
        if self.name == "clock_skew" and self.magnitude is not None and abs(self.magnitude) <= 24:
            return "degraded"
        return SCENARIOS[self.name][1]


def parse_scenario(spec: str) -> Scenario:
    """Parse ``NAME[:key=value,...]``; a malformed spec raises :class:`ConfigError` naming the bad part."""
    name, kv = split_spec(spec, "--scenario", list(SCENARIOS), _KEYS)
    where = f"--scenario {spec!r}: "
    start, end = window(kv, where)
    magnitude = SCENARIOS[name][2]
    if "magnitude" in kv:
        try:
            magnitude = float(kv["magnitude"])
        except ValueError:
            raise ConfigError(where + f"magnitude={kv['magnitude']!r} must be a number") from None
        if SCENARIOS[name][2] is None:
            raise ConfigError(where + f"{name} takes no magnitude")
    if name in ("retry_storm", "bot_burst") and magnitude is not None and magnitude < 1:
        raise ConfigError(where + "magnitude must be at least 1")
    segment = {k: kv[k] for k in SEGMENT_KEYS if k in kv}
    return Scenario(name, start, end, rate(kv, where), segment, magnitude, spec.strip())
