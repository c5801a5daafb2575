"""The ``NAME[:key=value,...]`` grammar shared by replay faults and generator scenarios."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from dqkit.errors import ConfigError
from dqkit.timefmt import parse_iso

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")


def parse_duration(text: str, what: str) -> timedelta:
    """``90s``, ``30m``, ``4h`` or ``2d`` as a ``timedelta``; ``what`` names the setting in the error."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"{what}={text!r} is not a duration; use e.g. 90s, 30m, 4h or 2d")
    return timedelta(seconds=float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


def parse_time(text: str, what: str) -> datetime:
    """An ISO-8601 time (UTC when it names no zone); ``what`` names the setting in the error."""
    try:
        return parse_iso(text)
    except ValueError:
        raise ConfigError(f"{what}={text!r} must be an ISO-8601 time, e.g. 2026-11-20T10:00:00Z") from None


def split_spec(spec: str, option: str, names, keys: set[str]) -> tuple[str, dict[str, str]]:
    """``NAME[:k=v,...]`` into the name and its keys, refusing unknown names, keys and shapes."""
    name, _, rest = spec.strip().partition(":")
    if name not in names:
        raise ConfigError(f"{option} {spec!r}: unknown name {name!r}; choose one of {', '.join(names)}")
    kv: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not value:
            raise ConfigError(f"{option} {spec!r}: {part!r} must look like key=value")
        if key not in keys:
            raise ConfigError(f"{option} {spec!r}: unknown key {key!r}; keys are {', '.join(sorted(keys))}")
        kv[key] = value
    return name, kv


def window(kv: dict[str, str], where: str) -> tuple[datetime | None, datetime | None]:
    """``start``/``end`` or ``start``/``duration`` from parsed keys."""
    start = parse_time(kv["start"], where + "start") if "start" in kv else None
    end = parse_time(kv["end"], where + "end") if "end" in kv else None
    if "duration" in kv:
        if start is None or end is not None:
            raise ConfigError(where + "duration needs start and excludes end")
        end = start + parse_duration(kv["duration"], where + "duration")
    if start and end and end <= start:
        raise ConfigError(where + "end must be after start")
    return start, end


def rate(kv: dict[str, str], where: str) -> float:
    """The spec's ``rate`` (default 1), checked to lie between 0 and 1."""
    try:
        r = float(kv.get("rate", "1"))
    except ValueError:
        raise ConfigError(where + f"rate={kv['rate']!r} must be a number between 0 and 1") from None
    if not 0.0 <= r <= 1.0:
        raise ConfigError(where + f"rate={r} must be between 0 and 1")
    return r
