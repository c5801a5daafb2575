"""A fast sample generator: days of a product's client traffic, with optional incidents.

Users in several countries on ios/android/web open sessions on a diurnal and weekly cycle;
new app versions roll out over the days; SDKs send client batches shortly after the events;
some clients are offline for hours, some batches are retried, a few events are malformed and
some users have no profile. Client IPs come from the geo-IP table's ranges for the user's
country. Data scenarios (:mod:`dqkit.events.scenarios`) inject incidents.

``truth.json`` states, computed from the bytes written (not estimated): for each scenario its
stage, kind, segment, window and the events and users it affected; the ordinary noise; and the
exact counts a correct pipeline must report (invalid, duplicate, loadable). Everything is
vectorized (NumPy/Polars) and the same seed gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from dqkit.errors import ConfigError
from dqkit.events import newcomers
from dqkit.events.id_reuse import reuse_ids
from dqkit.events.scenarios import Scenario
from dqkit.events.shapes import session_events
from dqkit.paths import geoip_dir
from dqkit.timefmt import iso_z

COUNTRIES = (("US", 0.32), ("IN", 0.14), ("BR", 0.1), ("GB", 0.09), ("DE", 0.09), ("FR", 0.07),
             ("JP", 0.07), ("CA", 0.05), ("AU", 0.04), ("NL", 0.03))
PLATFORMS = {"ios": 0.45, "android": 0.40, "web": 0.15}
# (old, new) app versions per platform and the SDK each ships; new versions roll out over the days.
VERSIONS = {"ios": ("5.1.0", "5.2.0"), "android": ("8.3.1", "8.4.0"), "web": ("2026.11.1", "2026.11.1")}
SDKS = {"5.1.0": "3.1.3", "5.2.0": "3.1.4", "8.3.1": "2.8.5", "8.4.0": "2.9.0", "2026.11.1": "1.12.0"}
EVENT_TYPES = (("view", 0.5), ("tap", 0.2), ("scroll", 0.15), ("like", 0.08), ("share", 0.04), ("comment", 0.03))
# Share of a day's sessions starting in each UTC hour (a two-peak diurnal curve).
_HOURLY = np.array([2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 5, 5.5, 5.5, 5.5, 6, 6, 5.5, 5.5, 6, 6.5, 7, 7.5, 7, 6, 4.5, 3])
_WEEKEND = 0.75  # weekend days see this share of a weekday's sessions
_TS = "%Y-%m-%dT%H:%M:%S%.3fZ"
EVENTS_PER_USER_DAY = 8
"""Gives a DAU of about 55% of the users on weekdays and 15% fewer at the weekend."""
_MAX_FUTURE_H = 24  # dqkit.events.schema.ValidationLimits.max_future_s


@dataclass(frozen=True)
class SampleSpec:
    """What to generate."""

    start: datetime = datetime(2026, 11, 20, tzinfo=UTC)
    days: int = 1
    users: int = 2_000
    events: int | None = None
    """Approximate number of distinct real events (before retries, bots and noise); by default
    :data:`EVENTS_PER_USER_DAY` per user and day, so that about half the users come on a
    weekday, whatever the size of the product."""
    seed: int = 7
    retry_rate: float = 0.01
    """Share of batches resent later by the client (ordinary retries)."""
    invalid_rate: float = 0.002
    """Share of events made malformed (missing field, bad timestamp, bad type)."""
    missing_profile_rate: float = 0.02
    offline_rate: float = 0.005
    """Share of batches from clients that were offline for 1-12 hours."""
    scenarios: tuple[Scenario, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Sample:
    """A generated sample: where its files are and how big it is."""

    events_path: Path
    profiles_path: Path
    truth_path: Path
    batches: int
    events: int


def _ips(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    v4 = pl.read_parquet(geoip_dir() / "ipv4.parquet")
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


def _ms(t: datetime | None) -> pl.Expr | None:
    return None if t is None else pl.lit(t.astimezone(UTC).replace(tzinfo=None)).cast(pl.Datetime("ms"))


def _reach(sc: Scenario, time_col: str) -> pl.Expr:
    """Rows within a scenario's window and segment."""
    cond = pl.lit(True)
    if sc.start is not None:
        cond = cond & (pl.col(time_col) >= _ms(sc.start))
    if sc.end is not None:
        cond = cond & (pl.col(time_col) < _ms(sc.end))
    for k, v in sc.segment.items():
        cond = cond & (pl.col(k) == v)
    return cond


def _pick(rng: np.random.Generator, n: int, rate: float) -> pl.Series:
    return pl.Series(rng.random(n) < rate)


def _sessions(spec: SampleSpec, rng, users: pl.DataFrame) -> pl.DataFrame:
    mean_len = 8.0
    n_sessions = max(1, int(spec.events / mean_len))
    activity = users["activity"].to_numpy()
    who = rng.choice(users.height, n_sessions, p=activity / activity.sum())
    weights = np.array([_WEEKEND if (spec.start + timedelta(days=d)).weekday() >= 5 else 1.0 for d in range(spec.days)])
    day = rng.choice(spec.days, n_sessions, p=weights / weights.sum())
    hour = rng.choice(24, n_sessions, p=_HOURLY / _HOURLY.sum())
    t0 = (np.datetime64(spec.start.replace(tzinfo=None), "ms") + (day * 86_400_000 + hour * 3_600_000
          + rng.integers(0, 3_600_000, n_sessions)).astype("timedelta64[ms]"))
    sess, offs, etype = session_events(rng, n_sessions, EVENT_TYPES, mean_len)
    n = len(sess)
    ev = pl.DataFrame({
        "session": sess, "user": who[sess], "day": day[sess], "ts": t0[sess] + offs.astype("timedelta64[ms]"),
        "event_id": [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (n, 2)).tolist()],
        "event_type": etype, "item": rng.integers(0, 5000, n),
    })
    ev = ev.join(users.with_row_index("user").with_columns(pl.col("user").cast(pl.Int64)), on="user", how="left")
    new = pl.col("day") >= pl.col("upgrade_day")
    app = pl.when(new).then(pl.col("platform").replace_strict({p: v[1] for p, v in VERSIONS.items()})) \
        .otherwise(pl.col("platform").replace_strict({p: v[0] for p, v in VERSIONS.items()}))
    return ev.with_columns(app_version=app).with_columns(sdk_version=pl.col("app_version").replace_strict(SDKS))


def _resolve(spec: SampleSpec, scenarios) -> list[Scenario]:
    """Scenarios with what they leave to the sample filled in: a bot burst's few-hour window and
    its exact client and country; a growth's window (the whole sample unless given)."""
    seen: set[str] = set()
    out = []
    day_end = spec.start + timedelta(days=spec.days)
    for sc in scenarios:
        if sc.spec in seen:
            raise ConfigError(f"--scenario {sc.spec!r} is given twice; give it once (or change its window or segment)")
        seen.add(sc.spec)
        if sc.name == "bot_burst":
            seg = dict(sc.segment)
            if "platform" not in seg:
                seg["platform"] = next((p for p, v in VERSIONS.items() if seg.get("app_version") in v), "web")
            seg.setdefault("app_version", VERSIONS.get(seg["platform"], VERSIONS["web"])[1])
            seg.setdefault("sdk_version", SDKS.get(seg["app_version"], "1.0.0"))
            seg.setdefault("country", "US")
            start, end = newcomers.bot_window(sc.start, sc.end, spec.start)
            sc = replace(sc, start=start, end=end, segment={k: seg[k] for k in ("platform", "app_version", "sdk_version", "country")})
        elif sc.name == "real_growth":
            sc = replace(sc, start=sc.start or spec.start, end=sc.end or day_end)
        out.append(sc)
    return out


def generate(out_dir: str | Path, spec: SampleSpec | None = None, profiles_csv: bool = False) -> Sample:
    """Write ``events.ndjson.gz``, ``profiles.parquet`` (and ``.csv`` on request) and ``truth.json``."""
    spec = spec or SampleSpec()
    if spec.events is None:
        spec = replace(spec, events=EVENTS_PER_USER_DAY * spec.users * spec.days)
    scen = _resolve(spec, spec.scenarios)
    rng = np.random.default_rng(spec.seed)
    # Scenarios draw from their own stream: the base traffic is the same with or without them.
    srng = np.random.default_rng([spec.seed, 1])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Users.
    cc, cw = zip(*COUNTRIES)
    country = rng.choice(cc, spec.users, p=np.array(cw) / sum(cw))
    platform = rng.choice(list(PLATFORMS), spec.users, p=list(PLATFORMS.values()))
    signup = spec.start.date().toordinal() - rng.integers(1, 1500, spec.users)
    users = pl.DataFrame({
        "user_id": [f"u_{i:07d}" for i in range(spec.users)], "country": country, "platform": platform,
        "activity": rng.lognormal(0, 0.8, spec.users), "upgrade_day": rng.integers(0, spec.days + 3, spec.users),
        "client_ip": _ips(rng, country),
    })
    profiles = pl.DataFrame({
        "user_id": users["user_id"], "country": country,
        "segment": rng.choice(["free", "plus", "pro"], spec.users, p=[0.8, 0.15, 0.05]),
        "signup_date": [datetime.fromordinal(int(d)).date() for d in signup],
    }).filter(pl.Series(rng.random(spec.users) >= spec.missing_profile_rate))

    ev = _sessions(spec, rng, users).with_columns(tag=pl.lit(None, pl.String))
    truth: dict[str, dict] = {}
    lost: dict[str, pl.DataFrame] = {}  # per drop scenario: the (user_id, ts) of each event it removed
    added: dict[str, pl.DataFrame] = {}  # per scenario that adds users: their ids

    # Scenarios on who uses the product: a real drop removes sessions, new users and bots add them.
    next_user = spec.users
    for sc in scen:
        if sc.name == "real_drop":
            seg_users = ev.filter(_reach(sc, "ts")).select("user").unique().sort("user")
            quitting = seg_users.filter(_pick(srng, seg_users.height, sc.rate))["user"]
            # A quitting user's sessions that start inside the window do not happen.
            gone = pl.col("user").is_in(quitting.implode()) & _reach(sc, "ts").first().over("session", order_by="ts")
            removed = ev.filter(gone)
            truth[sc.spec] = {"direction": "down", "events": removed.height, "users": removed["user_id"].n_unique()}
            lost[sc.spec] = removed.select("user_id", "ts")
            ev = ev.filter(~gone)
        elif sc.name in ("real_growth", "bot_burst"):
            first_session = int(ev["session"].max()) + 1
            if sc.name == "real_growth":
                new, new_profiles = newcomers.growth(
                    ev, _reach(sc, "ts"), sc.segment, sc.magnitude, (sc.start, sc.end), spec.start, srng, first_session,
                    next_user, countries=COUNTRIES, platforms=PLATFORMS, versions=VERSIONS, sdks=SDKS,
                    event_types=EVENT_TYPES, ips=_ips)
                profiles = pl.concat([profiles, new_profiles])
            else:
                new, networks = newcomers.bots(int(sc.magnitude), (sc.start, sc.end), sc.segment, spec.start, srng,
                                               first_session, next_user)
                truth[sc.spec] = {"ip_networks": networks}
            next_user += new["user"].n_unique()
            added[sc.spec] = new.select("user_id").unique()
            ev = pl.concat([ev, new.with_columns(tag=pl.lit(sc.spec)).select(ev.columns)], how="vertical_relaxed")
    profiles.write_parquet(out / "profiles.parquet")
    if profiles_csv:
        profiles.write_csv(out / "profiles.csv")

    # Client batches: up to 20 consecutive events of a session, sent a little after the last one.
    ev = ev.sort("session", "ts").with_columns(batch_in_session=pl.int_range(pl.len()).over("session") // 20)
    new_batch = (pl.col("session") != pl.col("session").shift(1)) | (pl.col("batch_in_session") != pl.col("batch_in_session").shift(1))
    ev = ev.with_columns(batch=new_batch.fill_null(True).cum_sum().cast(pl.Int64) - 1)
    ev = ev.with_columns(event_index=pl.int_range(pl.len()).over("batch"))
    n = ev.height
    ev = ev.with_columns(pl.Series("delay", rng.exponential(2_000, n).astype(np.int64)).cast(pl.Duration("ms")))
    ev = ev.with_columns(sent=pl.col("ts").max().over("batch") + pl.col("delay").first().over("batch"))

    # Event-level noise and scenarios.
    bad = pl.Series(rng.random(n) < spec.invalid_rate)
    kind = pl.Series(rng.integers(0, 3, n))
    ev = ev.with_columns(
        timestamp=pl.col("ts").dt.strftime(_TS), reason=pl.lit(None, pl.String), noise=pl.lit(None, pl.String),
    ).with_columns(
        timestamp=pl.when(bad & (kind == 0)).then(pl.lit("not-a-time")).otherwise(pl.col("timestamp")),
        user_id=pl.when(bad & (kind == 1)).then(pl.lit(None)).otherwise(pl.col("user_id")),
        event_type=pl.when(bad & (kind == 2)).then(pl.lit("View Item!")).otherwise(pl.col("event_type")),
        noise=pl.when(bad).then(pl.lit("invalid")).otherwise(pl.col("noise")),
    )
    for sc in scen:
        hit = _reach(sc, "ts") & _pick(srng, n, sc.rate)
        if sc.name == "sdk_bad_timestamps":
            # What a broken SDK release sends: local time without zone, day first.
            ev = ev.with_columns(timestamp=pl.when(hit).then(pl.col("ts").dt.strftime("%d/%m/%Y %H:%M:%S")).otherwise(pl.col("timestamp")),
                                 tag=pl.when(hit).then(pl.lit(sc.spec)).otherwise(pl.col("tag")))
        elif sc.name == "clock_skew":
            shift = pl.duration(milliseconds=int((sc.magnitude or 30) * 3_600_000))
            ev = ev.with_columns(timestamp=pl.when(hit).then((pl.col("ts") + shift).dt.strftime(_TS)).otherwise(pl.col("timestamp")),
                                 tag=pl.when(hit).then(pl.lit(sc.spec)).otherwise(pl.col("tag")))
        elif sc.name == "event_id_collision":
            # The SDK reuses the id of the batch's previous (untouched) event.
            hit = hit & (pl.col("event_index") > 0)
            ev = ev.with_columns(_hit=hit).with_columns(
                event_id=pl.when(pl.col("_hit"))
                .then(pl.when(~pl.col("_hit")).then(pl.col("event_id")).forward_fill().over("batch"))
                .otherwise(pl.col("event_id")),
                tag=pl.when(pl.col("_hit")).then(pl.lit(sc.spec)).otherwise(pl.col("tag")),
            ).drop("_hit")
        elif sc.name == "id_reuse":
            ev = reuse_ids(ev, hit, sc.segment["sdk_version"], sc.spec, srng)

    # Batches, arrival times, late clients.
    event_json = pl.struct(
        "event_id", "event_type", "user_id", "timestamp", "client_ip", properties=pl.struct(item_id=pl.format("p_{}", pl.col("item")))
    ).struct.json_encode()
    ev = ev.with_columns(event_json=event_json)
    batches = ev.group_by("batch").agg(
        pl.col("sent").first(), pl.col("platform").first(), pl.col("app_version").first(), pl.col("sdk_version").first(),
        pl.col("country").first(),
    ).sort("batch")
    nb = batches.height
    batches = batches.with_columns(
        received_at=pl.col("sent") + pl.Series(rng.exponential(300, nb).astype(np.int64)).cast(pl.Duration("ms")),
        late=pl.lit(None, pl.String),
    )
    offline = _pick(rng, nb, spec.offline_rate)
    batches = batches.with_columns(
        received_at=pl.when(offline).then(pl.col("received_at") + pl.Series(rng.integers(3_600_000, 43_200_000, nb)).cast(pl.Duration("ms")))
        .otherwise(pl.col("received_at")),
        late=pl.when(offline).then(pl.lit("noise")).otherwise(pl.col("late")),
    )
    for sc in scen:
        if sc.name == "late_delivery":
            hit = _reach(sc, "sent") & _pick(srng, nb, sc.rate)
            batches = batches.with_columns(
                received_at=pl.when(hit).then(pl.col("received_at") + pl.duration(milliseconds=int((sc.magnitude or 8) * 3_600_000)))
                .otherwise(pl.col("received_at")),
                late=pl.when(hit).then(pl.lit(sc.spec)).otherwise(pl.col("late")),
            )
    batches = batches.with_columns(copy=pl.lit(0), copy_tag=pl.lit(None, pl.String))

    # Resends: ordinary retries, and retry storms.
    copies = [batches]
    retried = batches.filter(_pick(rng, nb, spec.retry_rate))
    copies.append(retried.with_columns(
        received_at=pl.col("received_at") + pl.Series(rng.integers(30_000, 600_000, retried.height)).cast(pl.Duration("ms")),
        copy=pl.lit(1), copy_tag=pl.lit("noise_retry")))
    for sc in scen:
        if sc.name == "retry_storm":
            storm = batches.filter(_reach(sc, "sent") & _pick(srng, nb, sc.rate))
            for k in range(1, int(sc.magnitude or 5) + 1):
                copies.append(storm.with_columns(
                    received_at=pl.col("received_at") + pl.duration(milliseconds=k * 45_000),
                    copy=pl.lit(100 + k), copy_tag=pl.lit(sc.spec)))
    allb = pl.concat(copies).sort("received_at", "batch", "copy")
    allb = allb.with_columns(batch_id=pl.format("b-{}", pl.col("batch").cast(pl.String).str.zfill(8)), line=pl.int_range(pl.len()))

    # Every event as it will arrive, in arrival order, and what a correct pipeline must do with it.
    arrived = allb.select("batch", "line", "received_at", "copy_tag", "late").join(
        ev.select("batch", "event_index", "event_id", "user_id", "timestamp", "event_type", "ts", "tag", "noise",
                  "platform", "app_version", "sdk_version", "country"), on="batch").sort("line", "event_index")
    arrived = arrived.with_columns(_expected(scen))
    for sc in scen:
        if sc.name == "real_drop":
            continue
        if sc.name == "retry_storm":
            mine = arrived.filter(pl.col("copy_tag") == sc.spec)
        elif sc.name == "late_delivery":
            mine = arrived.filter(pl.col("late") == sc.spec)
        elif sc.spec in added:
            # What the newcomers added to the warehouse: their events that load.
            mine = arrived.filter(pl.col("user_id").is_in(added[sc.spec]["user_id"].implode()) & (pl.col("outcome") == "loaded"))
        elif sc.name == "id_reuse":
            # Every event carrying a reused id (the earlier owner's too, should it arrive later)
            # that a correct dedup removes in every copy: real events that never land.
            reused = ev.filter(pl.col("tag") == sc.spec)["event_id"].unique()
            mine = arrived.filter(pl.col("event_id").is_in(reused.implode())).filter(
                (pl.col("outcome") == "duplicate").all().over("batch", "event_index")).unique(["batch", "event_index"])
        else:
            mine = arrived.filter((pl.col("tag") == sc.spec) & pl.col("copy_tag").is_null())
        if sc.kind == "drop" and sc.name != "id_reuse":
            mine = mine.filter(pl.col("outcome") == ("invalid" if sc.stage == "validate" else "duplicate"))
        elif sc.name == "retry_storm":
            mine = mine.filter(pl.col("outcome") == "duplicate")
        truth[sc.spec] = {**truth.get(sc.spec, {}), "events": mine.height, "users": mine["user_id"].drop_nulls().n_unique()}
        if sc.name == "real_growth":
            truth[sc.spec] = {"direction": "up", **truth[sc.spec]}
        if sc.kind == "drop":
            lost[sc.spec] = mine.select("user_id", "ts")
    # Users a drop took out of a day's DAU: active that day (by true event time), nothing loaded.
    kept = arrived.filter(pl.col("outcome") == "loaded").select("user_id", day=pl.col("ts").dt.date()).unique()
    for key, rows in lost.items():
        days = rows.drop_nulls("user_id").select("user_id", day=pl.col("ts").dt.date()).unique()
        gone = days.join(kept, on=["user_id", "day"], how="anti").group_by("day").len().sort("day")
        truth[key]["users_lost"] = int(gone["len"].sum())
        truth[key]["users_lost_by_day"] = {str(d): int(n) for d, n in gone.iter_rows()}  # type: ignore[attr-defined]

    # Write the lines.
    body = ev.group_by("batch").agg(pl.col("event_json").sort_by("event_index").str.join(","), pl.len().alias("count"))
    allb = allb.join(body, on="batch").sort("line")
    header = pl.struct(
        "batch_id", received_at=pl.col("received_at").dt.strftime(_TS), client=pl.struct("platform", "app_version", "sdk_version"),
    ).struct.json_encode()
    lines = allb.select(pl.concat_str(header.str.strip_suffix("}"), pl.lit(',"events":['), pl.col("event_json"), pl.lit("]}")))
    text = ("\n".join(lines.to_series().to_list()) + "\n").encode()
    path = out / "events.ndjson.gz"
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=3, mtime=0) as f:
        f.write(text)  # no name or time in the header: same seed, same bytes

    doc = _truth_doc(spec, scen, truth, arrived, allb)
    truth_path = out / "truth.json"
    truth_path.write_text(json.dumps(doc, indent=2) + "\n")
    return Sample(path, out / "profiles.parquet", truth_path, allb.height, int(allb["count"].sum()))


def _expected(scen: list[Scenario]) -> pl.Expr:
    """Per arrived event: ``invalid``, ``duplicate`` or ``loaded``, as dqkit's pipeline must decide."""
    invalid = pl.col("noise").is_not_null()
    for sc in scen:
        if sc.name == "sdk_bad_timestamps" or (sc.name == "clock_skew" and sc.kind == "drop"):
            invalid = invalid | (pl.col("tag") == sc.spec).fill_null(False)
    valid = ~invalid
    # Among valid events in arrival order, a repeated id is a duplicate.
    dup = valid & ~pl.when(valid).then(pl.col("event_id")).is_first_distinct()
    return pl.when(invalid).then(pl.lit("invalid")).when(dup).then(pl.lit("duplicate")).otherwise(pl.lit("loaded")).alias("outcome")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else iso_z(t)


def _truth_doc(spec: SampleSpec, scen: list[Scenario], truth: dict, arrived: pl.DataFrame, allb: pl.DataFrame) -> dict:
    out = arrived["outcome"].value_counts()
    counts = dict(zip(out["outcome"], out["count"]))
    day_end = spec.start + timedelta(days=spec.days)
    return {
        "seed": spec.seed,
        "start": _iso(spec.start), "days": spec.days, "users": spec.users,
        "expected": {"batches": allb.height, "received": arrived.height, "invalid": int(counts.get("invalid", 0)),
                     "duplicate": int(counts.get("duplicate", 0)), "loaded": int(counts.get("loaded", 0))},
        "noise": {
            "invalid_events": int(arrived.filter(pl.col("noise").is_not_null()).height),
            "retried_batches": int(allb.filter(pl.col("copy_tag") == "noise_retry").height),
            "offline_batches": int(allb.filter((pl.col("late") == "noise") & (pl.col("copy") == 0)).height),
        },
        "scenarios": [{
            "name": sc.name, "spec": sc.spec, "stage": sc.stage, "kind": sc.kind, "segment": sc.segment,
            "window": {"start": _iso(sc.start or spec.start), "end": _iso(sc.end or day_end)},
            "cause": sc.cause,
            **truth[sc.spec],
        } for sc in scen],
    }
