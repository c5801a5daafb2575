"""Frame factories for stage tests: small chunks built by hand, shaped as the reader makes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")


def deliveries(*keys: str, platform: str = "ios", at: datetime = T0, counts: dict[str, int] | None = None) -> pl.DataFrame:
    """One delivery per key (batch id ``b-<key>``), received at ``at`` plus a second per key."""
    return pl.DataFrame({
        "delivery_key": list(keys), "batch_id": [f"b-{k}" for k in keys], "line_no": list(range(len(keys))),
        "received_at": [at + timedelta(seconds=n) for n in range(len(keys))],
        "received_at_raw": [(at + timedelta(seconds=n)).isoformat() for n in range(len(keys))],
        "platform": [platform] * len(keys), "app_version": ["5.2.0"] * len(keys), "sdk_version": ["3.1.4"] * len(keys),
        "format": ["native"] * len(keys), "event_count": [(counts or {}).get(k, 0) for k in keys],
    }).with_columns(pl.col("received_at").cast(TS))


def raw_events(rows: list[dict], delivered: pl.DataFrame) -> pl.DataFrame:
    """Raw events as the reader yields them: each row names its ``delivery_key`` and may
    override ``event_id, event_type, user_id, event_ts, client_ip``; ``event_ts=None`` is an
    unparseable timestamp."""
    by_key = {r["delivery_key"]: r for r in delivered.iter_rows(named=True)}
    out, index = [], {}
    for r in rows:
        d = by_key[r["delivery_key"]]
        n = index[d["delivery_key"]] = index.get(d["delivery_key"], -1) + 1
        ts = r.get("event_ts", d["received_at"] - timedelta(seconds=1))
        out.append({
            "delivery_key": d["delivery_key"], "batch_id": d["batch_id"], "line_no": d["line_no"], "event_index": n,
            "received_at": d["received_at"], "platform": d["platform"], "app_version": d["app_version"],
            "sdk_version": d["sdk_version"], "line_error": None, "event_json_type": "OBJECT",
            "event_id": r.get("event_id"), "event_id_type": "VARCHAR", "event_type": r.get("event_type", "view"),
            "event_type_type": "VARCHAR", "user_id": r.get("user_id", "u_1"), "user_id_type": "VARCHAR",
            "timestamp": ts.isoformat() if ts else "garbage", "timestamp_type": "VARCHAR", "event_ts": ts,
            "client_ip": r.get("client_ip", "8.8.8.8"), "properties": '{"item_id":"p_1"}', "segment_type": None,
            "raw": '{"event_id":"%s"}' % r.get("event_id"),
        })
    return pl.DataFrame(out, schema_overrides={"event_index": pl.Int32, "received_at": TS, "event_ts": TS,
                                               "line_error": pl.String, "segment_type": pl.String})


def with_counts(delivered: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """``delivered`` with each delivery's ``event_count`` taken from ``events``."""
    n = events.group_by("delivery_key").agg(c=pl.len().cast(pl.Int64))
    return delivered.drop("event_count").join(n, on="delivery_key", how="left").with_columns(
        event_count=pl.col("c").fill_null(0)).drop("c")
