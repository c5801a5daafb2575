"""Users who were not in the sample's population: genuine new sign-ups and bots.

Both add rows shaped like the generator's session frame (one row per event, with the user's
columns joined on). They differ in what an analyst would check: new users have profiles signed
up that day, spread over countries, networks and platforms like everyone else, with ordinary
sessions; bots have no profiles, come from one or two /24 networks on one client build, and
fire short runs of the same few events within a few hours.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from dqkit.errors import ConfigError
from dqkit.events.shapes import session_events
from dqkit.paths import geoip_dir

BOT_EVENTS_PER_BOT = 40
BOT_SESSION_LEN = 8
BOT_HOSTS_PER_NET = 6
BOT_DEFAULT_HOURS = 3
"""A bot burst without an end lasts this long (from ``start``, or 14:00 UTC of the first day)."""


def _np_ms(t: datetime) -> np.datetime64:
    return np.datetime64(t.astimezone(UTC).replace(tzinfo=None), "ms")


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (n, 2)).tolist()]


def _frame(session, user, ts, etype, item, users: pl.DataFrame, start: datetime, rng) -> pl.DataFrame:
    """Event rows with the user's columns joined on (``users`` has one row per ``user``)."""
    day = ((ts - _np_ms(start)) // np.timedelta64(86_400_000, "ms")).astype(np.int64)
    ev = pl.DataFrame({"session": np.asarray(session, np.int64), "user": np.asarray(user, np.int64), "day": day, "ts": ts,
                       "event_id": _ids(rng, len(ts)), "event_type": etype, "item": np.asarray(item, np.int64)})
    return ev.join(users, on="user", how="left", maintain_order="left")


def growth(ev: pl.DataFrame, reach: pl.Expr, segment: dict, share: float, window: tuple[datetime, datetime],
           start: datetime, rng: np.random.Generator, first_session: int, first_user: int, *,
           countries, platforms: dict, versions: dict, sdks: dict, event_types, ips) -> tuple[pl.DataFrame, pl.DataFrame]:
    """New users joining within ``window``: ``share`` × the users active there (in ``segment``).

    Each new user gets as many sessions as an active user has there on average (Poisson
    around it, at least one), starting at times drawn from the ordinary sessions' starts in the
    window (so the diurnal curve is the product's own), with the generator's session shape and
    event mix, on the newest app version of their platform (a fresh install), and a profile
    whose ``signup_date`` is the day of their first session.

    Returns:
        The new events (the generator's session columns) and the new profiles.
    """
    first_ts = ev.filter(reach).sort("ts").group_by("session", maintain_order=True).agg(pl.col("user").first(), pl.col("ts").first())
    active = first_ts["user"].n_unique()
    n_users = round(share * active)
    if n_users == 0:
        return ev.clear(), pl.DataFrame(schema={"user_id": pl.String, "country": pl.String, "segment": pl.String,
                                                "signup_date": pl.Date})
    per_user = first_ts.height / active
    cc, cw = zip(*countries)
    country = np.full(n_users, segment["country"], dtype=object) if "country" in segment else \
        rng.choice(np.array(cc, dtype=object), n_users, p=np.array(cw) / sum(cw))
    if "platform" in segment:
        platform = np.full(n_users, segment["platform"], dtype=object)
    elif "app_version" in segment:
        platform = np.full(n_users, next((p for p, v in versions.items() if segment["app_version"] in v), "web"), dtype=object)
    else:
        platform = rng.choice(np.array(list(platforms), dtype=object), n_users, p=list(platforms.values()))
    app = np.array([segment.get("app_version", versions[p][1]) for p in platform], dtype=object)
    user = first_user + np.arange(n_users)
    users = pl.DataFrame({
        "user": user.astype(np.int64), "user_id": [f"u_{i:07d}" for i in user], "country": country, "platform": platform,
        "activity": 1.0, "upgrade_day": 0, "client_ip": ips(rng, country), "app_version": app,
        "sdk_version": [segment.get("sdk_version", sdks.get(a, "1.0.0")) for a in app],
    }).with_columns(pl.col("upgrade_day").cast(pl.Int64))

    # Sessions: start times resampled from the window's own sessions, a little jittered.
    n_sess = 1 + rng.poisson(max(per_user - 1.0, 0.0), n_users)
    owner = np.repeat(user, n_sess)
    base = first_ts["ts"].to_numpy()[rng.integers(0, first_ts.height, len(owner))]
    jitter = base + rng.integers(-1_200_000, 1_200_000, len(owner)).astype("timedelta64[ms]")
    lo, hi = _np_ms(window[0]), _np_ms(window[1])
    t0 = np.where((jitter >= lo) & (jitter < hi), jitter, base)
    sess, offs, etype = session_events(rng, len(owner), event_types)
    ts = t0[sess] + offs.astype("timedelta64[ms]")
    out = _frame(first_session + sess, owner[sess], ts, etype, rng.integers(0, 5000, len(sess)), users, start, rng)

    signup = out.group_by("user_id").agg(pl.col("ts").min().dt.date().alias("signup_date"))
    profiles = users.select("user_id", "country").join(signup, on="user_id").sort("user_id").with_columns(
        segment=pl.Series(rng.choice(["free", "plus", "pro"], n_users, p=[0.8, 0.15, 0.05]))
    ).select("user_id", "country", "segment", "signup_date")
    return out, profiles


def bot_window(sc_start: datetime | None, sc_end: datetime | None, sample_start: datetime) -> tuple[datetime, datetime]:
    """A bot burst's window: as given, else a few hours from ``start`` (or the first afternoon)."""
    start = sc_start or sample_start.replace(hour=14, minute=0, second=0, microsecond=0)
    return start, sc_end or start + timedelta(hours=BOT_DEFAULT_HOURS)


def _networks(rng: np.random.Generator, country: str, count: int) -> list[int]:
    """``count`` adjacent /24 networks (as their first address) inside one geo-IP range of ``country``."""
    v4 = pl.read_parquet(geoip_dir() / "ipv4.parquet").filter(
        (pl.col("country") == country) & (pl.col("end").cast(pl.Int64) - pl.col("start").cast(pl.Int64) >= 4096))
    if v4.is_empty():
        raise ConfigError(f"--scenario bot_burst: country={country!r} has no geo-IP range to put bots' networks in; "
                          "use a two-letter country code such as US or DE")
    row = v4.row(int(rng.integers(0, v4.height)), named=True)
    lo, hi = (int(row["start"]) + 255) >> 8, (int(row["end"]) + 1 >> 8) - count
    net = int(rng.integers(lo, hi + 1))
    return [(net + k) << 8 for k in range(count)]


def bots(n_bots: int, window: tuple[datetime, datetime], segment: dict, start: datetime, rng: np.random.Generator,
         first_session: int, first_user: int) -> tuple[pl.DataFrame, list[str]]:
    """``n_bots`` bots in ``window``: each with a fixed address among a few in one or two /24s
    of ``segment['country']`` (two past 16 bots), on ``segment``'s platform and app version, doing
    :data:`BOT_EVENTS_PER_BOT` events in short sessions (events a second or two apart, sessions
    half an hour apart: :data:`BOT_SESSION_LEN` events each when the window holds five), views
    and taps of the same three items.

    Returns:
        The events (the generator's session columns) and the networks as ``a.b.c.0/24``.
    """
    nets = _networks(rng, segment["country"], 1 if n_bots <= 16 else 2)
    user = first_user + np.arange(n_bots)
    # A handful of addresses per network (a data centre's hosts, a proxy's exits), shared by the bots.
    pool = (np.array(nets)[:, None] + np.array([rng.choice(np.arange(2, 255), BOT_HOSTS_PER_NET, replace=False)
                                                for _ in nets])).ravel()
    addr = pool[rng.integers(0, len(pool), n_bots)]
    users = pl.DataFrame({
        "user": user.astype(np.int64), "user_id": [f"u_{i:07d}" for i in user], "country": segment["country"],
        "platform": segment["platform"], "activity": 1.0, "upgrade_day": 0,
        "client_ip": [f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}" for a in addr.tolist()],
        "app_version": segment["app_version"], "sdk_version": segment["sdk_version"],
    }).with_columns(pl.col("upgrade_day").cast(pl.Int64))
    # A bot's sessions are over half an hour apart (or a sessionizer would join them): as many
    # as the window holds, up to BOT_EVENTS_PER_BOT / BOT_SESSION_LEN, sharing the bot's events.
    span_ms = int((window[1] - window[0]).total_seconds() * 1000)
    gap, room = 32 * 60_000, 2 * 60_000
    per_bot = int(min(BOT_EVENTS_PER_BOT // BOT_SESSION_LEN, max(1, (span_ms - room) // gap + 1)))
    sizes = np.full(per_bot, BOT_EVENTS_PER_BOT // per_bot)
    sizes[: BOT_EVENTS_PER_BOT % per_bot] += 1
    slack = max(1, span_ms - (per_bot - 1) * gap - room)
    t0 = (_np_ms(window[0]) + (np.sort(rng.integers(0, slack, (n_bots, per_bot)), axis=1)
                               + np.arange(per_bot) * gap).ravel().astype("timedelta64[ms]"))
    length = np.tile(sizes, n_bots)
    sess = np.repeat(np.arange(n_bots * per_bot), length)
    step = (700 + rng.exponential(1_200, len(sess))).astype(np.int64)
    first = np.r_[True, sess[1:] != sess[:-1]]
    step[first] = 0
    offs = np.cumsum(step) - np.repeat(np.cumsum(step)[np.flatnonzero(first)], length)
    etype = rng.choice(np.array(["view", "tap"], dtype=object), len(sess), p=[0.7, 0.3])
    etype[first] = "session_start"
    owner = np.repeat(user, per_bot)[sess]
    items = rng.integers(0, 5000, (n_bots, 3))[owner - first_user, rng.integers(0, 3, len(sess))]
    ts = t0[sess] + offs.astype("timedelta64[ms]")
    out = _frame(first_session + sess, owner, ts, etype, items, users, start, rng)
    return out, [f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.0/24" for n in nets]
