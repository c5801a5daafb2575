"""A small, fast sample generator: one or more days of a product's client traffic.

Users in several countries on ios/android/web open sessions on a diurnal cycle; their SDKs
send client batches a little after the events happen; a share of batches is retried (resent
later with the same event ids), a few events are malformed, and some users have no profile.
Client IPs come from the geo-IP table's ranges for the user's country, so enrichment resolves
them. Everything is vectorized (NumPy/Polars) and deterministic for a seed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from dqkit.pipeline.geoip import default_geoip_dir

COUNTRIES = (("US", 0.32), ("IN", 0.14), ("BR", 0.1), ("GB", 0.09), ("DE", 0.09), ("FR", 0.07),
             ("JP", 0.07), ("CA", 0.05), ("AU", 0.04), ("NL", 0.03))
PLATFORMS = {"ios": (0.45, ("5.1.0", "5.2.0"), "3.1.4"), "android": (0.40, ("8.3.1", "8.4.0"), "2.9.0"),
             "web": (0.15, ("2026.11.1",), "1.12.0")}
EVENT_TYPES = (("view", 0.5), ("tap", 0.2), ("scroll", 0.15), ("like", 0.08), ("share", 0.04), ("comment", 0.03))
# Share of a day's sessions starting in each UTC hour (a two-peak diurnal curve).
_HOURLY = np.array([2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 5, 5.5, 5.5, 5.5, 6, 6, 5.5, 5.5, 6, 6.5, 7, 7.5, 7, 6, 4.5, 3])


@dataclass(frozen=True)
class SampleSpec:
    """What to generate."""

    start: datetime = datetime(2026, 11, 20, tzinfo=UTC)
    days: int = 1
    users: int = 2_000
    events: int = 50_000
    """Approximate number of distinct events (before retries and noise)."""
    seed: int = 7
    retry_rate: float = 0.01
    """Share of batches resent later by the client."""
    invalid_rate: float = 0.002
    """Share of events made malformed (missing field, bad timestamp, bad type)."""
    missing_profile_rate: float = 0.02


@dataclass(frozen=True)
class Sample:
    events_path: Path
    profiles_path: Path
    batches: int
    events: int


def _ips(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    v4 = pl.read_parquet(default_geoip_dir() / "ipv4.parquet")
    out = np.empty(len(countries), dtype=object)
    for cc in np.unique(countries):
        ranges = v4.filter(pl.col("country") == cc)
        idx = np.flatnonzero(countries == cc)
        pick = rng.integers(0, ranges.height, len(idx))
        start = ranges.get_column("start").to_numpy().astype(np.int64)[pick]
        size = ranges.get_column("end").to_numpy().astype(np.int64)[pick] - start + 1
        addr = start + (rng.random(len(idx)) * size).astype(np.int64)
        out[idx] = [f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}" for a in addr.tolist()]
    return out


def generate(out_dir: str | Path, spec: SampleSpec | None = None) -> Sample:
    """Write ``events.ndjson.gz`` and ``profiles.parquet`` under ``out_dir``."""
    spec = spec or SampleSpec()
    rng = np.random.default_rng(spec.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Users.
    cc, cw = zip(*COUNTRIES)
    country = rng.choice(cc, spec.users, p=np.array(cw) / sum(cw))
    pnames = list(PLATFORMS)
    platform = rng.choice(pnames, spec.users, p=[PLATFORMS[p][0] for p in pnames])
    app_version = np.array([rng.choice(PLATFORMS[p][1]) for p in platform])
    sdk_version = np.array([PLATFORMS[p][2] for p in platform])
    activity = rng.lognormal(0, 0.8, spec.users)
    user_id = np.array([f"u_{i:07d}" for i in range(spec.users)])
    ip = _ips(rng, country)
    signup = spec.start.date().toordinal() - rng.integers(1, 1500, spec.users)
    users = pl.DataFrame({"user_id": user_id, "country": country, "segment": rng.choice(["free", "plus", "pro"], spec.users, p=[0.8, 0.15, 0.05]),
                          "signup_date": [datetime.fromordinal(int(d)).date() for d in signup]})
    has_profile = rng.random(spec.users) >= spec.missing_profile_rate
    users.filter(pl.Series(has_profile)).write_parquet(out / "profiles.parquet")

    # Sessions: who, when, how many events.
    mean_len = 8.0
    n_sessions = max(1, int(spec.events / mean_len))
    who = rng.choice(spec.users, n_sessions, p=activity / activity.sum())
    day = rng.integers(0, spec.days, n_sessions)
    hour = rng.choice(24, n_sessions, p=_HOURLY / _HOURLY.sum())
    t0 = (np.datetime64(spec.start.replace(tzinfo=None), "ms") + (day * 86_400_000 + hour * 3_600_000
          + rng.integers(0, 3_600_000, n_sessions)).astype("timedelta64[ms]"))
    length = rng.geometric(1 / mean_len, n_sessions)
    sess = np.repeat(np.arange(n_sessions), length)
    step = rng.exponential(25_000, len(sess)).astype(np.int64)
    first = np.r_[True, sess[1:] != sess[:-1]]
    step[first] = 0
    offs = np.cumsum(step) - np.repeat(np.cumsum(step)[np.flatnonzero(first)], length)
    ts = t0[sess] + offs.astype("timedelta64[ms]")
    u = who[sess]
    et, ew = zip(*EVENT_TYPES)
    etype = rng.choice(np.array(et, dtype=object), len(sess), p=ew)
    etype[first] = "session_start"
    n = len(sess)
    ev = pl.DataFrame({
        "session": sess, "user": u, "event_id": [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (n, 2)).tolist()],
        "event_type": etype, "user_id": user_id[u], "ts": ts, "client_ip": ip[u],
        "item": rng.integers(0, 5000, n),
    })
    # Client batches: up to 20 consecutive events of a session, sent after the last one.
    ev = ev.with_columns(batch_in_session=pl.int_range(pl.len()).over("session") // 20)
    ev = ev.with_columns(batch=pl.struct("session", "batch_in_session").rank("dense").cast(pl.Int64) - 1)
    delay = pl.Series("delay", rng.exponential(2_000, n).astype(np.int64)).cast(pl.Duration("ms"))
    ev = ev.with_columns(delay).with_columns(sent=pl.col("ts").max().over("batch") + pl.col("delay").first().over("batch"))

    # Noise: a few malformed events.
    bad = rng.random(n) < spec.invalid_rate
    kind = rng.integers(0, 3, n)
    ts_text = ev.get_column("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    ev = ev.with_columns(
        timestamp=pl.when(pl.Series(bad & (kind == 0))).then(pl.lit("not-a-time")).otherwise(ts_text),
        user_id=pl.when(pl.Series(bad & (kind == 1))).then(pl.lit(None)).otherwise(pl.col("user_id")),
        event_type=pl.when(pl.Series(bad & (kind == 2))).then(pl.lit("View Item!")).otherwise(pl.col("event_type")),
        properties=pl.struct(item_id=pl.format("p_{}", pl.col("item"))),
    )
    event_json = pl.struct("event_id", "event_type", "user_id", "timestamp", "client_ip", "properties").struct.json_encode()
    batches = ev.group_by("batch").agg(
        events=event_json.str.join(","), user=pl.col("user").first(), sent=pl.col("sent").first(), count=pl.len(),
    ).sort("batch")  # group order is arbitrary; the seed must fix every byte
    nb = batches.height
    bu = batches.get_column("user").to_numpy()
    batches = batches.with_columns(
        platform=pl.Series(platform[bu]), app_version=pl.Series(app_version[bu]),
        sdk_version=pl.Series(sdk_version[bu]), batch_id=pl.format("b-{}", pl.col("batch").cast(pl.String).str.zfill(8)),
        received_at=pl.col("sent") + pl.Series(rng.exponential(300, nb).astype(np.int64)).cast(pl.Duration("ms")),
    )
    retried = batches.filter(pl.Series(rng.random(nb) < spec.retry_rate))
    retried = retried.with_columns(
        received_at=pl.col("received_at") + pl.Series(rng.integers(30_000, 600_000, retried.height)).cast(pl.Duration("ms"))
    )
    allb = pl.concat([batches, retried]).sort("received_at", "batch_id")
    header = pl.struct(
        "batch_id", received_at=pl.col("received_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
        client=pl.struct("platform", "app_version", "sdk_version"),
    ).struct.json_encode()
    lines = allb.select(pl.format('{},"events":[{}]}}', header.str.strip_suffix("}"), pl.col("events")))
    path = out / "events.ndjson.gz"
    body = ("\n".join(lines.to_series().to_list()) + "\n").encode()
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=3, mtime=0) as f:
        f.write(body)  # no name or time in the header: same seed, same bytes
    return Sample(path, out / "profiles.parquet", allb.height, int(allb.get_column("count").sum()))
