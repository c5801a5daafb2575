"""User-profile enrichment from a profiles file, with a bounded lookup cache.

The store stands for a profile service: the first lookup of a user is a cache miss (a fetch),
later ones within the cache's reach are hits. A user with no profile is counted and kept —
their events load with empty profile columns, never dropped.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dqkit.errors import InputError

PROFILE_COLUMNS = ("user_id", "country", "segment", "signup_date")


def read_profiles(path: str | Path) -> pl.DataFrame:
    """Read ``user_id, country, segment, signup_date`` from CSV or Parquet."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--profiles {str(p)!r} does not exist; pass a CSV or Parquet file with columns {', '.join(PROFILE_COLUMNS)}")
    try:
        df = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p, infer_schema_length=0)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"--profiles {str(p)!r} could not be read: {exc}") from exc
    missing = [c for c in PROFILE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"--profiles {str(p)!r} lacks columns {missing}; it needs {', '.join(PROFILE_COLUMNS)}")
    return df.select(
        pl.col("user_id").cast(pl.String),
        pl.col("country").cast(pl.String).alias("user_country"),
        pl.col("segment").cast(pl.String).alias("user_segment"),
        pl.col("signup_date").cast(pl.String).str.slice(0, 10).str.to_date(strict=False).alias("signup_date"),
    ).unique("user_id", keep="last")


class ProfileStore:
    """Profiles with a least-recently-seen cache of ``capacity`` users."""

    def __init__(self, profiles: pl.DataFrame | None, capacity: int = 200_000) -> None:
        self.profiles = profiles if profiles is not None else pl.DataFrame(
            schema={"user_id": pl.String, "user_country": pl.String, "user_segment": pl.String, "signup_date": pl.Date}
        )
        self.capacity = capacity
        self._cache = pl.DataFrame(schema={"user_id": pl.String, "last_used": pl.Int64})
        self._tick = 0

    def enrich(self, events: pl.DataFrame) -> pl.DataFrame:
        """Add profile columns and ``profile_cache_hit``/``profile_missing`` flags."""
        self._tick += 1
        first_in_chunk = pl.col("user_id").is_first_distinct()
        ordered = events.sort("line_no", "event_index")
        out = (
            ordered.join(self._cache.select("user_id", cached=pl.lit(True)), on="user_id", how="left")
            .with_columns(profile_cache_hit=pl.col("cached").fill_null(False) | ~first_in_chunk)
            .drop("cached")
            .join(self.profiles, on="user_id", how="left")
            .with_columns(
                profile_missing=pl.col("user_segment").is_null() & pl.col("user_country").is_null(),
                profile_error=pl.lit(False),
                account_age_days=(pl.col("event_ts").dt.date() - pl.col("signup_date")).dt.total_days().cast(pl.Int32),
            )
            .drop("signup_date")
        )
        used = ordered.select(pl.col("user_id").unique()).with_columns(last_used=pl.lit(self._tick, pl.Int64))
        self._cache = (
            pl.concat([self._cache.join(used, on="user_id", how="anti"), used])
            .sort("last_used", descending=True)
            .head(self.capacity)
        )
        return out
