"""Data scenarios the generator injects into a sample, each with its ground truth.

Grammar (repeat ``--scenario``): ``NAME[:key=value,...]`` with keys ``start``, ``end`` or
``duration``, ``rate`` (0..1), segment keys ``platform``, ``app_version``, ``sdk_version``,
``country``, and ``magnitude`` (its meaning per scenario below).

| name | what happens | stage, kind | magnitude |
|---|---|---|---|
| sdk_bad_timestamps | a segment's events carry malformed timestamps | validate, drop | - |
| retry_storm | a segment's batches are resent many times | dedup, inflated | copies (default 5) |
| event_id_collision | an SDK reuses the previous event's id: real events are deduplicated away | dedup, drop | - |
| id_reuse | an SDK version (``sdk_version`` required) gives events ids of earlier, different events of other batches | dedup, drop | - |
| clock_skew | a segment's device clocks are off | validate, drop (beyond 24 h) / client, degraded | hours (default 30) |
| bot_burst | bots without profiles, from one or two /24s on one client, fire short sessions for a few hours (default 3 h) | client, inflated | bots (default 50) |
| late_delivery | a segment's batches arrive hours late | client, delay | hours (default 8) |
| real_drop | real users of a segment stop coming (healthy pipeline) | none, real_change | - |
| real_growth | new users sign up and use the product (healthy pipeline) | none, real_change | extra users as a share of those active (default 0.2) |

Each scenario's truth names its ``cause`` in words; a ``real_change`` says its ``direction``
(``up`` or ``down``), and every drop says ``users_lost``: user-days whose every event it removed.
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
    "real_growth": ("none", "real_change", 0.2),
    "id_reuse": ("dedup", "drop", None),
}
CAUSES = {
    "sdk_bad_timestamps": "SDK sends malformed timestamps",
    "retry_storm": "clients resend the same batches",
    "event_id_collision": "SDK repeats the previous event's id",
    "id_reuse": "SDK reuses ids of earlier events across batches",
    "clock_skew": "device clocks are off",
    "bot_burst": "bot traffic",
    "late_delivery": "clients deliver batches hours late",
    "real_drop": "users stopped coming",
    "real_growth": "new users signed up",
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

    @property
    def cause(self) -> str:
        """The incident's root cause in words (e.g. ``bot traffic``), for the truth entry."""
        return CAUSES[self.name]


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
    if name == "real_growth" and not 0 < magnitude <= 10:
        raise ConfigError(where + f"magnitude={magnitude:g} must be a share of extra users above 0 (0.2 is 20% more), at most 10")
    if name == "id_reuse" and "sdk_version" not in kv:
        raise ConfigError(where + "id_reuse needs the SDK that reuses ids, e.g. sdk_version=3.1.4")
    segment = {k: kv[k] for k in SEGMENT_KEYS if k in kv}
    return Scenario(name, start, end, rate(kv, where), segment, magnitude, spec.strip())
