"""The span writer: spans rendered from small hand-made frames, read back as OTLP/JSON."""

import json

import polars as pl
import pytest

from dqkit import names as n
from dqkit.errors import MissingColumnsError
from dqkit.pipeline.span_writer import (
    DELIVERY_SPAN_IDS,
    ENRICH_COLUMNS,
    INGEST_COLUMNS,
    SpanIds,
    render_enrich_spans,
    render_ingest_spans,
    render_load_spans,
)

T = 1_795_168_800_000_000_000  # 2026-11-20T10:00:00Z in ns


def _spans(arrays) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for arr in arrays:
        for text in arr.to_pylist():
            sp = json.loads(text[1:])  # each span is led by a comma
            out.setdefault(sp["name"], []).append(sp)
    return out


def _attrs(sp: dict) -> dict:
    def val(v):
        (k, x), = v.items()
        return int(x) if k == "intValue" else x
    return {a["key"]: val(a["value"]) for a in sp["attributes"]}


@pytest.fixture(scope="module")
def ids():
    made = SpanIds()
    yield made
    made.close()


def _batches(ids: SpanIds) -> pl.DataFrame:
    keys = ["k1", "k2"]
    d = ids.delivery_ids(keys).with_columns(
        batch_id=pl.Series(["b-1", "b-2"]), format=pl.lit("native"),
        received_at=pl.Series([None, T // 1000]).cast(pl.Datetime("us", "UTC")),
        platform=pl.lit("ios"), app_version=pl.lit("5.2.0"), sdk_version=pl.lit("3.1.4"),
        received=pl.Series([5, 2]), invalid=pl.Series([1, 0]), duplicate=pl.Series([2, 0]), published=pl.Series([2, 0]),
        sample_errors=pl.Series(["e9: bad_timestamp", None]), queue_partitions=pl.Series([2, 0]),
        t_enter=pl.lit(T), t_validated=pl.lit(T + 10), t_deduped=pl.lit(T + 20), t_published=pl.lit(T + 30),
        t_consumed=pl.lit(T + 40), t_profiled=pl.lit(T + 50), t_geo=pl.lit(T + 60), t_enriched=pl.lit(T + 70),
        event_types=pl.Series(["like,view", None]), profile_hits=pl.Series([1, 0]), profile_misses=pl.Series([1, 0]),
        profile_missing=pl.Series([1, 0]), profile_errors=pl.Series([0, 0]), geo_resolved=pl.Series([2, 0]),
        geo_errors=pl.Series([0, 0]),
        geo_country=pl.Series(["US", None]), sessions_new=pl.Series([1, 0]),
    )
    return d.with_columns(ctx_trace=pl.col("trace_id"), ctx_parent=pl.col("sid_publish"))


def test_ingest_spans_carry_the_design_attributes_and_one_trace_per_batch(ids):
    d = _batches(ids)
    got = _spans(render_ingest_spans(d, "embedded", "analytics.events"))
    assert set(got) == set(n.INGEST_SIDE_SPANS) and all(len(v) == 2 for v in got.values())
    ingest = {_attrs(sp)[n.BATCH_ID]: sp for sp in got[n.INGEST]}
    a = _attrs(ingest["b-1"])
    assert a == {n.BATCH_ID: "b-1", n.BATCH_EVENT_COUNT: 5, n.CLIENT_PLATFORM: "ios", n.CLIENT_APP_VERSION: "5.2.0",
                 n.CLIENT_SDK_VERSION: "3.1.4", n.INGESTION_ACCEPTED: 2, n.INGESTION_REJECTED: 3,
                 n.INGESTION_REJECTED_INVALID: 1, n.INGESTION_REJECTED_DUPLICATE: 2, n.INPUT_FORMAT: "native",
                 n.CLOCK_INFERRED: True}
    assert _attrs(ingest["b-2"])[n.CLOCK_INFERRED] is False
    row = d.row(0, named=True)
    assert (ingest["b-1"]["traceId"], ingest["b-1"]["spanId"]) == (row["trace_id"], row["sid_ingest"])
    assert (ingest["b-1"]["startTimeUnixNano"], ingest["b-1"]["endTimeUnixNano"]) == (str(T), str(T + 30))
    validate = next(sp for sp in got[n.VALIDATE] if sp["traceId"] == row["trace_id"])
    assert validate["parentSpanId"] == row["sid_ingest"]
    assert _attrs(validate) == {n.VALID_COUNT: 4, n.INVALID_COUNT: 1}
    (ev,) = validate["events"]
    assert ev["name"] == n.VALIDATION_FAILURES and _attrs(ev) == {n.FAILURES_INVALID_COUNT: 1,
                                                                  n.FAILURES_SAMPLE_ERRORS: "e9: bad_timestamp"}
    assert not any("events" in sp for sp in got[n.VALIDATE] if sp["traceId"] != row["trace_id"])
    dedup = _attrs(next(sp for sp in got[n.DEDUP] if sp["traceId"] == row["trace_id"]))
    assert dedup == {n.DEDUP_INPUT: 4, n.DEDUP_REMOVED: 2, n.DEDUP_OUTPUT: 2}
    publish = next(sp for sp in got[n.PUBLISH] if sp["traceId"] == row["trace_id"])
    assert publish["kind"] == 4 and _attrs(publish)[n.QUEUE_PARTITIONS] == 2 and _attrs(publish)[n.QUEUE_PUBLISHED] == 2
    assert _attrs(publish)[n.MESSAGING_OPERATION] == "publish"


def test_enrich_spans_continue_the_messages_trace_for_batches_that_published(ids):
    d = _batches(ids)
    got = _spans(render_enrich_spans(d, "analytics.events"))
    assert set(got) == set(n.ENRICH_SPANS) and all(len(v) == 1 for v in got.values()), "b-2 published nothing"
    row = d.row(0, named=True)
    (enrich,) = got[n.ENRICH]
    assert (enrich["traceId"], enrich["parentSpanId"], enrich["kind"]) == (row["ctx_trace"], row["ctx_parent"], 5)
    assert _attrs(enrich) == {n.EVENT_TYPE: "like,view", n.EVENT_COUNT: 2, n.MESSAGING_DESTINATION: "analytics.events",
                              n.MESSAGING_OPERATION: "process"}
    assert _attrs(got[n.ENRICH_PROFILE][0]) == {n.PROFILE_CACHE_HIT: 1, n.PROFILE_CACHE_MISS: 1, n.PROFILE_MISSING: 1,
                                                n.PROFILE_ERRORS: 0}
    assert _attrs(got[n.ENRICH_GEO][0]) == {n.GEO_RESOLVED: 2, n.GEO_UNRESOLVED: 0, n.GEO_LOOKUP_ERRORS: 0, n.GEO_COUNTRY: "US"}
    assert _attrs(got[n.ENRICH_SESSION][0]) == {n.SESSION_IS_NEW: 1, n.SESSION_EVENT_COUNT: 2}
    assert got[n.ENRICH_SESSION][0]["parentSpanId"] == row["sid_enrich"]


def test_load_spans_link_to_their_batches_and_keep_values_out_of_error_messages(ids):
    load = ids.load_ids(["L1"]).with_columns(t_load=pl.lit(T), t_part_end=pl.lit(T + 5), t_load_end=pl.lit(T + 25),
                                              rows=pl.lit(3), loaded=pl.lit(2), dead_lettered=pl.lit(1),
                                              partitions=pl.lit(2), batches=pl.lit(2))
    ins = pl.DataFrame({"table": ["events_like", "events_view"], "rows": [1, 2], "success": [False, True],
                        "attempts": [3, 1], "duration_ms": [0.5, 1.5], "t_start": [T + 5, T + 10], "t_end": [T + 10, T + 25],
                        "error": ["Conversion Error: Could not convert string 'u_42' to INT32", None]})
    ins = ins.with_columns(load_trace=pl.lit(load["load_trace"][0]), load_sid=pl.lit(load["load_sid"][0]),
                           insert_sid=ids.insert_span_ids(["L1:like", "L1:view"]))
    links = pl.DataFrame({"insert_sid": [ins["insert_sid"][0], ins["insert_sid"][1], ins["insert_sid"][1]],
                          "ctx_trace": ["a" * 32, "a" * 32, "b" * 32], "sid_enrich": ["1" * 16, "1" * 16, "2" * 16],
                          "batch_id": ["b-1", "b-1", "b-2"], "rows": [1, 1, 1]})
    got = _spans(render_load_spans(load, ins, links))
    (ld,) = got[n.LOAD]
    assert _attrs(ld) == {n.BATCH_EVENT_COUNT: 3, n.TOTAL_LOADED: 2, n.DEAD_LETTERED: 1, n.BATCH_COUNT: 2}
    assert sorted(lk["traceId"] for lk in ld["links"]) == ["a" * 32, "b" * 32]
    assert _attrs(got[n.PARTITION][0]) == {n.PARTITIONS_COUNT: 2}
    failed = next(sp for sp in got[n.INSERT] if _attrs(sp)[n.TABLE_NAME] == "events_like")
    assert _attrs(failed) == {n.TABLE_NAME: "events_like", n.INSERT_ROW_COUNT: 1, n.INSERT_SUCCESS: False,
                              n.INSERT_DURATION_MS: 0.5, n.INSERT_ATTEMPTS: 3, n.DB_SYSTEM: "duckdb"}
    assert failed["status"] == {"code": 2, "message": "Conversion Error: Could not convert string '…' to INT32"}
    ok = next(sp for sp in got[n.INSERT] if _attrs(sp)[n.TABLE_NAME] == "events_view")
    assert "status" not in ok and sorted((_attrs(lk) for lk in ok["links"]), key=str) == [
        {n.BATCH_ID: "b-1", n.INSERT_ROW_COUNT: 1}, {n.BATCH_ID: "b-2", n.INSERT_ROW_COUNT: 1}]


def test_a_frame_without_the_columns_a_renderer_reads_is_refused_by_name(ids):
    d = _batches(ids)
    with pytest.raises(MissingColumnsError, match="render_ingest_spans: the per-batch frame lacks columns "
                                                  "t_validated, queue_partitions"):
        render_ingest_spans(d.drop("queue_partitions", "t_validated"), "embedded", "t")
    with pytest.raises(MissingColumnsError, match="lacks columns geo_country$"):
        render_enrich_spans(d.drop("geo_country"), "t")
    assert set(INGEST_COLUMNS) | set(ENRICH_COLUMNS) <= set(d.columns)


def test_ids_are_deterministic_and_distinct(ids):
    other = SpanIds()
    a, b = ids.delivery_ids(["k1", "k2"]), other.delivery_ids(["k1", "k2"])
    other.close()
    assert a.equals(b), "a replay of the same input gets the same ids"
    row = a.row(0, named=True)
    span_ids = [row[f"sid_{s}"] for s in DELIVERY_SPAN_IDS]
    assert len(row["trace_id"]) == 32 and all(len(x) == 16 for x in span_ids) and len(set(span_ids)) == len(span_ids)
    assert a["trace_id"].n_unique() == 2
