"""Segment-spec batches as real SDKs send them (tests/cases/sdk/): RudderStack's Node and Go SDKs
and Segment's Go SDK each put timestamps and context somewhere else."""

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from dqkit.events.readers import iter_sample
from dqkit.pipeline.geoip import open_geoip
from tests.conftest import assert_balanced

CASES = Path(__file__).parents[1] / "cases" / "sdk"


def _read(name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    chunks = list(iter_sample(CASES / name))
    return pl.concat([c.deliveries for c in chunks]), pl.concat([c.events for c in chunks]).sort("event_index")


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_rudderstack_node_events_take_their_time_from_original_timestamp():
    d, e = _read("rudder-sdk-node.ndjson")
    # No receivedAt in what the SDK sent: the batch arrived when it was sent.
    assert d["received_at"].to_list() == [_t("2026-11-20T10:00:09.870Z")]
    assert e["event_type"].to_list() == ["identify", "item_purchased", "item_viewed"]
    assert e["event_ts"].to_list() == [_t("2026-11-20T10:00:00.120Z"), _t("2026-11-20T10:00:00.480Z"),
                                       _t("2026-11-20T10:00:01.002Z")]
    assert e["timestamp_type"].to_list() == ["VARCHAR"] * 3
    assert set(e["sdk_version"]) == {"2.1.3"}


def test_original_timestamp_is_corrected_by_sent_at_and_received_at():
    _, e = _read("rudder-sdk-node-received.ndjson")
    # receivedAt - (sentAt - originalTimestamp) = 10:00:05.300 - (08:00:05.000 - 08:00:00.000)
    assert e["event_ts"].to_list() == [_t("2026-11-20T10:00:00.300Z")]
    assert e["timestamp"].to_list() == ["2026-11-20T08:00:00.000Z"]  # the sent text is kept


def test_rudderstack_go_sent_at_inside_messages_is_the_arrival():
    d, e = _read("rudder-sdk-go.ndjson")
    assert d["received_at"].to_list() == [_t("2026-11-20T11:30:02.250Z")]
    assert d["sdk_version"].to_list() == ["4.2.3"]
    assert e["event_ts"].to_list() == [_t("2026-11-20T11:30:00Z"), _t("2026-11-20T11:30:01.500Z")]


def test_segment_go_batch_context_reaches_every_message_and_the_message_wins():
    d, e = _read("analytics-go.ndjson")
    assert d.select("received_at", "sdk_version").row(0) == (_t("2026-11-20T12:00:03Z"), "3.4.0")
    # The first message has no context of its own; the second sets ip and library itself.
    assert e.select("client_ip", "sdk_version").rows() == [("8.8.8.8", "3.4.0"), ("2001:db8::7", "3.3.0")]


def test_every_sdk_payload_loads_and_balances(tmp_path, run_sample):
    lines = b"".join((CASES / n).read_bytes() for n in sorted(p.name for p in CASES.glob("*.ndjson")))
    sample = tmp_path / "sdks.ndjson"
    sample.write_bytes(lines)
    run = run_sample(sample)
    assert run.sql("SELECT reason, count(*) FROM rejected_events GROUP BY 1") == []
    assert run.result.ledger.loaded == 8
    rows = dict(run.sql("SELECT event_id, sdk_version || ' ' || coalesce(geo_country, '-') FROM events"))
    country = open_geoip().lookup(pl.Series(["8.8.8.8"]))["geo_country"][0]
    assert country
    assert rows["c0a1e5d2-3f4b-4c6d-8e9f-0a1b2c3d4e51"] == f"3.4.0 {country}"  # the batch's ip
    assert rows["c0a1e5d2-3f4b-4c6d-8e9f-0a1b2c3d4e52"] == "3.3.0 -"  # its own (documentation) ip
    assert rows["9b0f3c55-1d1e-4b41-8d7c-5e1f0a6b2c11"] == "2.1.3 -"
    assert run.sql("SELECT event_ts FROM events WHERE event_id = '9b0f3c55-1d1e-4b41-8d7c-5e1f0a6b2c11'") == [
        (_t("2026-11-20T10:00:00.300Z"),)]
    assert_balanced(run)
