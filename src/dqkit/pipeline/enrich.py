"""Enrichment: user profiles, geo-IP and sessions added to consumed events, as one step.

Nothing is dropped here: an event whose user has no profile, whose address does not resolve
or that an injected outage hits loads with those columns empty, and is counted per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from dqkit.pipeline.faults import FaultPlan
from dqkit.pipeline.geoip import CachedGeoIP
from dqkit.pipeline.profiles import ProfileStore
from dqkit.pipeline.sessions import SessionStitcher

STEPS = ("enrich.user_profile", "enrich.geo_ip", "enrich.session")
"""The sub-steps, in order, by the names their spans and timings use."""


@dataclass(frozen=True)
class EnrichResult:
    """What enrichment made of one chunk's consumed events."""

    events: pl.DataFrame
    """The events with profile, geo-IP and session columns."""
    session_changes: pl.DataFrame
    """Session state rows that changed (persisted with the chunk)."""
    per_delivery: pl.DataFrame
    """``delivery_key`` and :attr:`COUNTS`, one row per delivery that had events consumed."""
    seconds: dict[str, float]
    """Measured seconds of each of :data:`STEPS`."""

    COUNTS: ClassVar[tuple[str, ...]] = ("profile_hits", "profile_misses", "profile_missing", "profile_errors",
                                         "geo_resolved", "geo_errors", "sessions_new")
    """Per-delivery counts; ``per_delivery`` also has ``event_types`` and ``geo_country``."""


class Enricher:
    """Profiles, geo-IP and session stitching for consumed events, with faults injected."""

    def __init__(self, profiles: ProfileStore, geo: CachedGeoIP, sessions: SessionStitcher,
                 faults: FaultPlan | None = None) -> None:
        """Enrich from these stores; ``faults`` may blank profile or geo columns (outages)."""
        self.profiles = profiles
        self.geo = geo
        self.sessions = sessions
        self.faults = faults or FaultPlan()

    def run(self, events: pl.DataFrame) -> EnrichResult:
        """Enrich ``events`` (consumed, with ``delivery_key`` and ``t_consumed``)."""
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        out = self.profiles.enrich(events)
        out = self.faults.degrade(out, "profile_outage", ["user_country", "user_segment", "account_age_days"],
                                  flag="profile_error")
        seconds["enrich.user_profile"] = time.perf_counter() - t
        t = time.perf_counter()
        geo = self.geo.lookup(out.get_column("client_ip"))
        out = out.join(geo, on="client_ip", how="left")
        out = self.faults.degrade(out, "geoip_outage", ["geo_country", "geo_region", "geo_city"])
        seconds["enrich.geo_ip"] = time.perf_counter() - t
        t = time.perf_counter()
        stitched = self.sessions.stitch(out)
        seconds["enrich.session"] = time.perf_counter() - t
        return EnrichResult(stitched.events, stitched.changes, per_delivery(stitched.events), seconds)


def per_delivery(events: pl.DataFrame) -> pl.DataFrame:
    """Per-delivery enrichment counts (:attr:`EnrichResult.COUNTS`), the batch's event types
    and its country: one client per batch, so country-level, and safe in telemetry."""
    return events.group_by("delivery_key").agg(
        profile_hits=pl.col("profile_cache_hit").sum().cast(pl.Int64),
        profile_misses=(~pl.col("profile_cache_hit")).sum().cast(pl.Int64),
        profile_missing=(pl.col("profile_missing") & ~pl.col("profile_error")).sum().cast(pl.Int64),
        profile_errors=pl.col("profile_error").sum().cast(pl.Int64),
        geo_resolved=pl.col("geo_country").is_not_null().sum().cast(pl.Int64),
        geo_errors=pl.col("geo_error").fill_null(False).sum().cast(pl.Int64),
        sessions_new=pl.col("session_is_new").sum().cast(pl.Int64),
        event_types=pl.col("event_type").unique().sort().str.join(","),
        geo_country=pl.col("geo_country").drop_nulls().mode().sort().first(),
    )
