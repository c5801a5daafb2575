import gzip
import json

import polars as pl
import pytest

from dqkit.events.readers import iter_sample
from tests.conftest import batch, event, write_lines


def _all(path, **kw):
    chunks = list(iter_sample(path, **kw))
    return pl.concat([c.deliveries for c in chunks]), pl.concat([c.events for c in chunks]), chunks


def test_native_batch_fields(tmp_path):
    p = write_lines(tmp_path / "s.ndjson", [batch("b-1", [event("e1", ip="203.0.113.7"), event("e2", etype="tap")])])
    d, e, _ = _all(p)
    assert d.select("batch_id", "platform", "app_version", "sdk_version", "event_count").row(0) == ("b-1", "ios", "5.2.0", "3.1.4", 2)
    assert str(d["received_at"][0]) == "2026-11-20 10:00:05+00:00"
    assert e["event_id"].to_list() == ["e1", "e2"]
    assert e["event_type"].to_list() == ["view", "tap"]
    assert e["client_ip"][0] == "203.0.113.7"
    assert json.loads(e["properties"][0]) == {"item_id": "p_1"}


def test_gzip_and_chunking_are_bounded(tmp_path):
    p = tmp_path / "s.ndjson.gz"
    with gzip.open(p, "wt") as f:
        for n in range(25):
            f.write(json.dumps(batch(f"b-{n}", [event(f"e{n}")])) + "\n")
    _, e, chunks = _all(p, chunk_lines=10)
    assert [c.deliveries.height for c in chunks] == [10, 10, 5]
    assert e.height == 25


def test_a_chunk_parsed_in_several_queries_reads_the_same(tmp_path, monkeypatch):
    from dqkit.events.readers import Parser

    lines = [json.dumps(batch(f"b-{n}", [event(f"e{n}-{k}") for k in range(n % 4)])) for n in range(40)]
    lines[7] = "not json"
    lines[13] = '{"events": [1, null, {"event_id": 5}]}'
    lines[21] = "[]"
    p = write_lines(tmp_path / "s.ndjson", lines)

    def frames():
        d, e, _ = _all(p)
        return d.sort("line_no"), e.sort("line_no", "event_index")

    whole = frames()
    monkeypatch.setattr(Parser, "piece_lines", 3)
    pieces = frames()
    for a, b in zip(whole, pieces):
        assert a.equals(b)
    assert whole[0].filter(pl.col("format") == "unreadable").height == 2
    assert whole[1].height == sum(n % 4 for n in range(40) if n not in (7, 13, 21)) + 3 + 2


def test_segment_batch_mapping(tmp_path):
    seg = {
        "batch": [
            {"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "user-9",
             "timestamp": "2026-11-20T10:00:00.000Z", "receivedAt": "2026-11-20T10:00:03.000Z",
             "context": {"ip": "81.2.69.142", "os": {"name": "iOS"}, "app": {"version": "7.1"},
                         "library": {"name": "analytics-ios", "version": "4.1.8"}},
             "properties": {"total": 12.5}},
            {"type": "screen", "messageId": "m-2", "anonymousId": "anon-3", "timestamp": "2026-11-20T10:00:01Z",
             "context": {"os": {"name": "iOS"}}},
            {"type": "mystery", "messageId": "m-3", "userId": "u", "timestamp": "2026-11-20T10:00:01Z"},
        ],
        "sentAt": "2026-11-20T10:00:02.000Z",
    }
    p = write_lines(tmp_path / "seg.ndjson", [seg])
    d, e, _ = _all(p)
    assert d["format"][0] == "segment" and d["event_count"][0] == 3
    assert str(d["received_at"][0]) == "2026-11-20 10:00:03+00:00"  # receivedAt wins over sentAt
    first = e.row(0, named=True)
    assert (first["event_id"], first["event_type"], first["user_id"], first["client_ip"]) == ("m-1", "order_completed", "user-9", "81.2.69.142")
    assert (first["platform"], first["app_version"], first["sdk_version"]) == ("ios", "7.1", "4.1.8")
    assert json.loads(first["properties"]) == {"total": 12.5}
    second = e.row(1, named=True)
    assert (second["event_type"], second["user_id"]) == ("screen", "anon-3")
    assert e.row(2, named=True)["segment_type"] == "mystery"


def test_flat_parquet_rows_regroup_into_batches(tmp_path):
    p = tmp_path / "flat.parquet"
    pl.DataFrame({
        "event_id": ["a", "b", "c"], "event_type": ["view", "view", "tap"], "user_id": ["u1", "u1", "u2"],
        "timestamp": ["2026-11-20T10:00:00Z"] * 3, "client_ip": ["8.8.8.8", None, "::1"],
        "batch_id": ["x", "x", "y"], "received_at": ["2026-11-20T10:00:09Z"] * 3, "platform": ["web", "web", "android"],
    }).write_parquet(p)
    d, e, _ = _all(p)
    assert sorted(zip(d["batch_id"], d["event_count"])) == [("x", 2), ("y", 1)]
    assert sorted(e["event_id"]) == ["a", "b", "c"]
    assert set(e.filter(pl.col("batch_id") == "y")["platform"]) == {"android"}


def test_identical_lines_get_distinct_delivery_keys(tmp_path):
    b = batch("b-1", [event("e1")])
    d, _, _ = _all(write_lines(tmp_path / "s.ndjson", [b, b]))
    assert d["delivery_key"].n_unique() == 2


def test_delivery_keys_follow_one_rule_whatever_the_chunking():
    """The key of a line is its digest; its n-th copy's is the digest of ``digest#n``. Keys are
    stored in warehouses, so they must not depend on how the input was cut into chunks."""
    import hashlib
    import random

    from dqkit.events.readers import _DeliveryKeys

    rng = random.Random(7)
    lines = [f'{{"batch_id":"b-{rng.randrange(2000)}"}}'.encode() for _ in range(12_000)]
    seen: dict[bytes, int] = {}
    expected = []
    for line in lines:
        digest = hashlib.blake2b(line, digest_size=16).hexdigest()
        n = seen.get(line, 0)
        seen[line] = n + 1
        expected.append(digest if n == 0 else hashlib.blake2b(f"{digest}#{n}".encode(), digest_size=16).hexdigest())
    for sizes in ([len(lines)], [1, 2, 3, 500, 7], [997]):
        keys, got, i = _DeliveryKeys(), [], 0
        while i < len(lines):
            k = sizes[len(got) % len(sizes)]
            got += keys.keys(lines[i:i + k])
            i += k
        assert got == expected
    assert len(set(expected)) == len(expected)


def test_generator_is_deterministic_for_a_seed(tmp_path):
    from dqkit.events.generator import SampleSpec, generate

    a = generate(tmp_path / "a", SampleSpec(events=2_000, users=100, seed=11))
    b = generate(tmp_path / "b", SampleSpec(events=2_000, users=100, seed=11))
    c = generate(tmp_path / "c", SampleSpec(events=2_000, users=100, seed=12))
    assert a.events_path.read_bytes() == b.events_path.read_bytes()
    assert a.events_path.read_bytes() != c.events_path.read_bytes()


def test_read_ahead_keeps_order_raises_in_order_and_stops_when_abandoned():
    import gc
    import threading

    from dqkit.readahead import ReadAhead

    closed = []
    started = threading.Event()

    def chunks(fail_after):
        started.set()
        try:
            for n in range(5):
                if n == fail_after:
                    raise ValueError(f"bad input at chunk {n}")
                yield n
        finally:
            closed.append(True)

    got = []
    with pytest.raises(ValueError, match="chunk 3"):
        for c in ReadAhead(chunks(3)):
            got.append(c)
    assert got == [0, 1, 2]
    assert closed == [True]

    it = ReadAhead(chunks(99))
    assert started.wait(5)  # reading begins before anyone asks for a chunk
    assert next(it) == 0
    it.close()  # the consumer gives up early: the reader thread ends and closes its source
    assert closed == [True, True]
    assert next(it, None) is None

    with ReadAhead(chunks(99)) as it:
        assert next(it) == 0
    assert closed == [True, True, True]

    it = ReadAhead(chunks(99))
    thread = it._thread
    del it  # dropped without closing: the reader must not wait forever for a consumer
    gc.collect()
    thread.join(5)
    assert not thread.is_alive() and closed == [True] * 4

    assert list(ReadAhead(chunks(99))) == [0, 1, 2, 3, 4]


def test_lines_decode_in_one_piece_or_line_by_line_alike():
    from dqkit.events import schema
    from dqkit.events.readers import _decode

    good = ['{"a": "é😀"}'.encode(), b"{}", b"", '{"b": "\u2028"}'.encode()]
    texts, errors = _decode(good, [None] * 4)
    assert texts.to_pylist() == [b.decode() for b in good] and errors == [None] * 4

    bad = [*good, b'{"c": "\xff"}', b'{"d": NaN}', b'{"e": "NaN"}']
    texts, errors = _decode(bad, [None] * 7)
    assert list(texts[:4]) == [b.decode() for b in good]
    assert errors == [None] * 4 + [schema.INVALID_UTF8, schema.MALFORMED_JSON, None]


# -- a file that is not a sample is refused before anything runs --------------------------------

from dqkit.errors import InputError  # noqa: E402


@pytest.mark.parametrize("name,body,why", [
    ("events.csv", b'{"batch_id": "b"}\n', "a .csv file is not NDJSON"),
    ("events.csv.gz", gzip.compress(b"a,b\n1,2\n", mtime=0), "a .csv file is not NDJSON"),
    ("export.txt", b"event_id,event_type,user_id\ne1,view,u1\ne2,tap,u2\n", "look like CSV"),
    ("export.ndjson.gz", gzip.compress(b"event_id\tevent_type\ne1\tview\n", mtime=0), "look like TSV"),
    ("notes.ndjson", b"Dear team,\nhere are the events you asked for\n", "none of its first lines is a JSON object"),
    ("pic.ndjson", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("export.json", b'[\n  {\n    "batch_id": "b-1",\n    "events": []\n  }\n]\n', "pretty-printed"),
    ("batch.json", b'{\n  "batch_id": "b-1",\n  "events": []\n}\n', "pretty-printed"),
])
def test_what_is_not_ndjson_is_refused_with_its_kind(tmp_path, name, body, why):
    p = tmp_path / name
    p.write_bytes(body)
    with pytest.raises(InputError, match="cannot be replayed") as err:
        iter_sample(p)
    assert why in str(err.value) and str(p) in str(err.value) and "one batch or event as a JSON object per line" in str(err.value)


def test_stray_bad_lines_in_real_ndjson_are_still_read(tmp_path):
    p = write_lines(tmp_path / "s.ndjson", ["oops, a,stray,line", "another one", batch("b-1", [event("e1")]), "{broken"])
    _, e, _ = _all(p)
    assert e.sort("line_no")["line_error"].to_list() == ["malformed_json", "malformed_json", None, "malformed_json"]
    p = write_lines(tmp_path / "b.ndjson", ["[", batch("b-1", [event("e1")])])  # a lone bracket, then real lines
    _, e, _ = _all(p)
    assert e.sort("line_no")["line_error"].to_list() == ["malformed_json", None]


def test_parquet_is_recognised_by_its_bytes(tmp_path):
    rows = pl.DataFrame({"event_id": ["e1"], "event_type": ["view"], "user_id": ["u1"], "timestamp": ["2026-11-20T10:00:00Z"]})
    rows.write_parquet(tmp_path / "events.pq")
    _, e, _ = _all(tmp_path / "events.pq")
    assert e["event_id"].to_list() == ["e1"]


def test_empty_sample_reads_as_no_chunks(tmp_path):
    (tmp_path / "e.ndjson").write_bytes(b"")
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(b"\n \n"))
    assert list(iter_sample(tmp_path / "e.ndjson")) == [] and list(iter_sample(tmp_path / "b.ndjson.gz")) == []
